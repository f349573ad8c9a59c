/*
 * queue_vfs — the SQLite VFS the queue's writers open the database with.
 *
 * It is the platform's default VFS ("unix") with one difference: the
 * frames a transaction appends to the WAL file are gathered in memory and
 * handed to the kernel in one write per 64 KB, instead of two write(2)
 * calls per page (a frame header, then the page).  A batch of four 1 KB
 * messages is about a dozen pages, so this turns some 25 system calls per
 * commit into one.
 *
 * Gathered frames reach the file before anything could need them there:
 *   - before the WAL is synced, read, truncated, sized or closed;
 *   - before a write that does not continue the gathered run;
 *   - before the commit becomes visible to other connections: SQLite
 *     publishes a commit by rewriting the WAL index header in shared
 *     memory around a memory barrier on the main database file, and
 *     the barrier flushes.
 * Frames still gathered when the connection gives up the WAL write lock
 * were spilled by a transaction that rolled back: they are dropped, never
 * written over what the next writer commits.
 *
 * A commit's frames are written when its commit frame (the last) has
 * been gathered, inside the xWrite call that gathers it: a failure there
 * (a full disk) fails the COMMIT, which SQLite rolls back, and the
 * process goes on -- a NORMAL commit (the scheduler's) is never synced,
 * so this is where it meets the disk.  A flush still failing at the
 * barrier cannot be reported to SQLite (the call returns nothing), so it
 * ends the process: such a commit was never synced, hence never
 * acknowledged, and the master restarts the queue.
 *
 * Not for locking_mode=EXCLUSIVE: without shared memory there is no
 * barrier, and a NORMAL commit would wait in memory for the next sync.
 *
 * A bare file name ("queue.db") stays relative to the current directory
 * instead of being made absolute: the queue process enters its directory
 * as root and cannot always search its parents afterwards.
 *
 * Durability is unchanged: the sync SQLite asks for at each commit
 * (synchronous=FULL) writes the frames first, then syncs.
 */
#ifndef MXGATE_QUEUE_VFS_H
#define MXGATE_QUEUE_VFS_H

/*
 * Whether it pays: contrib/bench/queue-vfs.sh measures the queue process
 * with it and with the stock VFS, side by side (README, "Benchmarks").
 *
 * The stock VFS is used instead -- queue_vfs_name() returns NULL, which
 * sqlite3_open_v2() takes as the default VFS -- when the environment
 * variable QUEUE_VFS_ENV is "stock" (for the benchmark, or to rule the
 * VFS out), or when the SQLite library loaded at run time is older than
 * 3.32.0 (sqlite3_database_file_object()); each is logged once.
 */
#define QUEUE_VFS_ENV "MXGATE_QUEUE_VFS"

/* Registers the VFS (once; not as the default) and returns its name for
 * sqlite3_open_v2(), or NULL (logged) for the stock VFS: by choice, for
 * an old SQLite, or when SQLite has no default VFS. */
const char *queue_vfs_name(void);

#endif
