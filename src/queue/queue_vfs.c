/*
 * queue_vfs — see queue_vfs.h.
 *
 * Every file the VFS opens is a struct vfs_file followed by the default
 * VFS's own file object ("real"); each method passes the call on to
 * it.  Only WAL files gather writes; the main database file of a
 * connection keeps a pointer to its WAL file for the barrier's flush.
 */
#include <sqlite3.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "queue/queue_vfs.h"

#define QUEUE_VFS_NAME "mxgate-queue"

/* sqlite3_database_file_object() came with SQLite 3.32.0; configure.ac
 * asks for that version too, and this is the check for the library
 * actually loaded. */
#define QUEUE_VFS_MIN_SQLITE      3032000
#define QUEUE_VFS_MIN_SQLITE_TEXT "3.32.0"

/* A transaction larger than this (a message of megabytes) is written in
 * runs of this size. */
#define WAL_RUN_MAX (1024 * 1024)

/* The default VFS takes at most 128 KB per write: SQLite itself never
 * writes more than a page and a frame header at once, and the unix VFS
 * masks the length to 17 bits. */
#define WAL_WRITE_MAX (64 * 1024)

/* SQLite writes each WAL frame as its header, then its page; bytes 4-7
 * of the header are the database size after a commit, 0 in the frames
 * that do not end one (SQLite's wal.c, "WAL Frame Format"). */
#define WAL_FRAME_HDR 24

struct vfs_file {
	sqlite3_file     base;          /* pMethods: vfs_io */
	sqlite3_file    *real;          /* the default VFS's file, after us */
	bool             is_wal;
	struct vfs_file *wal;           /* main database: its open WAL file */
	struct vfs_file *db;            /* WAL file: its main database */
	unsigned char   *run;           /* WAL file: gathered frames */
	size_t           run_len, run_cap;
	sqlite3_int64    run_off;       /* file offset of run[0] */
	bool             commit_page;   /* the next write is the page of a
	                                 * commit frame */
};

static sqlite3_vfs *default_vfs;
static const sqlite3_io_methods vfs_io;

#define REAL(f)  (((struct vfs_file *)(f))->real)
#define RIO(f)   (REAL(f)->pMethods)

/* Write the gathered run to the file. */
static int
wal_flush(struct vfs_file *f)
{
	size_t done = 0;
	int rc = SQLITE_OK;

	while (done < f->run_len && rc == SQLITE_OK) {
		size_t n = f->run_len - done;

		if (n > WAL_WRITE_MAX)
			n = WAL_WRITE_MAX;
		rc = f->real->pMethods->xWrite(f->real, f->run + done, (int)n,
		    f->run_off + (sqlite3_int64)done);
		done += n;
	}
	/* On failure the run is dropped all the same: SQLite has been told
	 * of an I/O error and treats the transaction as not written. */
	f->run_len = 0;
	return rc;
}

static int
wal_gather(struct vfs_file *f, const void *data, int amt, sqlite3_int64 off)
{
	size_t need;
	int rc;

	if (f->run_len > 0 && off != f->run_off + (sqlite3_int64)f->run_len &&
	    (rc = wal_flush(f)) != SQLITE_OK)
		return rc;
	need = f->run_len + (size_t)amt;
	if (need > f->run_cap) {
		size_t cap = f->run_cap ? f->run_cap : 64 * 1024;
		unsigned char *run;

		while (cap < need)
			cap *= 2;
		if ((run = realloc(f->run, cap)) == NULL) {
			/* No memory to gather in: write through. */
			if ((rc = wal_flush(f)) != SQLITE_OK)
				return rc;
			return f->real->pMethods->xWrite(f->real, data, amt, off);
		}
		f->run = run;
		f->run_cap = cap;
	}
	if (f->run_len == 0)
		f->run_off = off;
	memcpy(f->run + f->run_len, data, (size_t)amt);
	f->run_len += (size_t)amt;
	return f->run_len >= WAL_RUN_MAX ? wal_flush(f) : SQLITE_OK;
}

/* ---- io methods ---- */

static int
vfs_close(sqlite3_file *file)
{
	struct vfs_file *f = (struct vfs_file *)file;
	int flushed = SQLITE_OK, rc;

	if (f->is_wal) {
		flushed = wal_flush(f);
		if (f->db != NULL && f->db->wal == f)
			f->db->wal = NULL;
		free(f->run);
		f->run = NULL;
	} else if (f->wal != NULL)
		f->wal->db = NULL;
	rc = RIO(f)->xClose(f->real);
	return rc != SQLITE_OK ? rc : flushed;
}

static int
vfs_read(sqlite3_file *file, void *buf, int amt, sqlite3_int64 off)
{
	struct vfs_file *f = (struct vfs_file *)file;
	int rc;

	if (f->is_wal && (rc = wal_flush(f)) != SQLITE_OK)
		return rc;
	return RIO(f)->xRead(f->real, buf, amt, off);
}

static bool
is_commit_frame_header(const void *buf, int amt)
{
	const unsigned char *p = buf;

	return amt == WAL_FRAME_HDR && (p[4] | p[5] | p[6] | p[7]) != 0;
}

/*
 * A commit's frames are written as soon as its commit frame is gathered,
 * while SQLite can still be told that they could not be (a full disk:
 * SQLITE_FULL fails the COMMIT, the transaction is rolled back, the
 * process goes on).  Written only at the barrier, a failure could only
 * end the process.
 */
static int
vfs_write(sqlite3_file *file, const void *buf, int amt, sqlite3_int64 off)
{
	struct vfs_file *f = (struct vfs_file *)file;
	bool commit_page;
	int rc;

	if (!f->is_wal)
		return RIO(f)->xWrite(f->real, buf, amt, off);
	commit_page = f->commit_page;
	f->commit_page = is_commit_frame_header(buf, amt);
	if ((rc = wal_gather(f, buf, amt, off)) != SQLITE_OK)
		return rc;
	return commit_page ? wal_flush(f) : SQLITE_OK;
}

static int
vfs_truncate(sqlite3_file *file, sqlite3_int64 size)
{
	struct vfs_file *f = (struct vfs_file *)file;
	int rc;

	if (f->is_wal && (rc = wal_flush(f)) != SQLITE_OK)
		return rc;
	return RIO(f)->xTruncate(f->real, size);
}

static int
vfs_sync(sqlite3_file *file, int flags)
{
	struct vfs_file *f = (struct vfs_file *)file;
	int rc;

	if (f->is_wal && (rc = wal_flush(f)) != SQLITE_OK)
		return rc;
	return RIO(f)->xSync(f->real, flags);
}

static int
vfs_file_size(sqlite3_file *file, sqlite3_int64 *size)
{
	struct vfs_file *f = (struct vfs_file *)file;
	int rc;

	if (f->is_wal && (rc = wal_flush(f)) != SQLITE_OK)
		return rc;
	return RIO(f)->xFileSize(f->real, size);
}

static int
vfs_lock(sqlite3_file *file, int level)
{
	return RIO(file)->xLock(REAL(file), level);
}

static int
vfs_unlock(sqlite3_file *file, int level)
{
	return RIO(file)->xUnlock(REAL(file), level);
}

static int
vfs_check_reserved_lock(sqlite3_file *file, int *out)
{
	return RIO(file)->xCheckReservedLock(REAL(file), out);
}

static int
vfs_file_control(sqlite3_file *file, int op, void *arg)
{
	return RIO(file)->xFileControl(REAL(file), op, arg);
}

static int
vfs_sector_size(sqlite3_file *file)
{
	return RIO(file)->xSectorSize(REAL(file));
}

static int
vfs_device_characteristics(sqlite3_file *file)
{
	return RIO(file)->xDeviceCharacteristics(REAL(file));
}

static int
vfs_shm_map(sqlite3_file *file, int page, int size, int extend,
    void volatile **out)
{
	return RIO(file)->xShmMap(REAL(file), page, size, extend, out);
}

/* The WAL write lock is shm lock 0 (WAL_WRITE_LOCK in SQLite's wal.c). */
#define SHM_WAL_WRITE_LOCK 0

static int
vfs_shm_lock(sqlite3_file *file, int offset, int n, int flags)
{
	struct vfs_file *f = (struct vfs_file *)file;

	/*
	 * Frames still gathered when the write lock goes belong to no
	 * commit (a commit's are written at its barrier): they are what a
	 * rolled-back transaction spilled.  Written later, they would land
	 * on frames the next writer has committed by then.
	 */
	if (f->wal != NULL && offset == SHM_WAL_WRITE_LOCK &&
	    (flags & SQLITE_SHM_UNLOCK) != 0)
		f->wal->run_len = 0;
	return RIO(f)->xShmLock(f->real, offset, n, flags);
}

/* SQLite publishes a commit around this barrier: the frames it names
 * must be in the file first (see queue_vfs.h).  vfs_write() has written
 * a commit's frames already; what is left here would be a bug's. */
static void
vfs_shm_barrier(sqlite3_file *file)
{
	struct vfs_file *f = (struct vfs_file *)file;

	if (f->wal != NULL && wal_flush(f->wal) != SQLITE_OK)
		fatalx("queue database: cannot write the WAL file; exiting");
	RIO(f)->xShmBarrier(f->real);
}

static int
vfs_shm_unmap(sqlite3_file *file, int delete_flag)
{
	return RIO(file)->xShmUnmap(REAL(file), delete_flag);
}

static int
vfs_fetch(sqlite3_file *file, sqlite3_int64 off, int amt, void **out)
{
	return RIO(file)->xFetch(REAL(file), off, amt, out);
}

static int
vfs_unfetch(sqlite3_file *file, sqlite3_int64 off, void *p)
{
	return RIO(file)->xUnfetch(REAL(file), off, p);
}

static const sqlite3_io_methods vfs_io = {
	.iVersion = 3,
	.xClose = vfs_close,
	.xRead = vfs_read,
	.xWrite = vfs_write,
	.xTruncate = vfs_truncate,
	.xSync = vfs_sync,
	.xFileSize = vfs_file_size,
	.xLock = vfs_lock,
	.xUnlock = vfs_unlock,
	.xCheckReservedLock = vfs_check_reserved_lock,
	.xFileControl = vfs_file_control,
	.xSectorSize = vfs_sector_size,
	.xDeviceCharacteristics = vfs_device_characteristics,
	.xShmMap = vfs_shm_map,
	.xShmLock = vfs_shm_lock,
	.xShmBarrier = vfs_shm_barrier,
	.xShmUnmap = vfs_shm_unmap,
	.xFetch = vfs_fetch,
	.xUnfetch = vfs_unfetch,
};

/* ---- vfs methods ---- */

static int
vfs_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *file, int flags,
    int *out_flags)
{
	struct vfs_file *f = (struct vfs_file *)file;
	int rc;

	(void)vfs;
	memset(f, 0, sizeof(*f));
	f->real = (sqlite3_file *)(f + 1);
	f->real->pMethods = NULL;
	rc = default_vfs->xOpen(default_vfs, name, f->real, flags, out_flags);
	if (f->real->pMethods == NULL) {
		/* Nothing to close: SQLite will not call xClose either. */
		f->base.pMethods = NULL;
		return rc;
	}
	if (f->real->pMethods->iVersion < 3) {
		/* Not the io methods this VFS forwards to. */
		f->real->pMethods->xClose(f->real);
		f->base.pMethods = NULL;
		return SQLITE_CANTOPEN;
	}
	f->base.pMethods = &vfs_io;
	if ((flags & SQLITE_OPEN_WAL) != 0 && name != NULL) {
		sqlite3_file *db = sqlite3_database_file_object(name);

		f->is_wal = true;
		if (db != NULL && db->pMethods == &vfs_io) {
			f->db = (struct vfs_file *)db;
			f->db->wal = f;
		}
	}
	return rc;
}

static int
vfs_delete(sqlite3_vfs *vfs, const char *name, int sync_dir)
{
	(void)vfs;
	return default_vfs->xDelete(default_vfs, name, sync_dir);
}

static int
vfs_access(sqlite3_vfs *vfs, const char *name, int flags, int *out)
{
	(void)vfs;
	return default_vfs->xAccess(default_vfs, name, flags, out);
}

/*
 * A bare file name stays relative to the current directory.  The queue
 * process enters its directory while still root and may then be unable
 * to search the directories above it (a queue under /root, mode 0700):
 * the absolute name the default VFS would make from getcwd() could not
 * be opened again, nor its -wal and -shm files.
 */
static int
vfs_full_pathname(sqlite3_vfs *vfs, const char *name, int n, char *out)
{
	size_t len = strlen(name);

	(void)vfs;
	if (len > 0 && strchr(name, '/') == NULL) {
		if (len >= (size_t)n)
			return SQLITE_CANTOPEN;
		memcpy(out, name, len + 1);
		return SQLITE_OK;
	}
	return default_vfs->xFullPathname(default_vfs, name, n, out);
}

static void *
vfs_dl_open(sqlite3_vfs *vfs, const char *name)
{
	(void)vfs;
	return default_vfs->xDlOpen(default_vfs, name);
}

static void
vfs_dl_error(sqlite3_vfs *vfs, int n, char *out)
{
	(void)vfs;
	default_vfs->xDlError(default_vfs, n, out);
}

static void
(*vfs_dl_sym(sqlite3_vfs *vfs, void *handle, const char *symbol))(void)
{
	(void)vfs;
	return default_vfs->xDlSym(default_vfs, handle, symbol);
}

static void
vfs_dl_close(sqlite3_vfs *vfs, void *handle)
{
	(void)vfs;
	default_vfs->xDlClose(default_vfs, handle);
}

static int
vfs_randomness(sqlite3_vfs *vfs, int n, char *out)
{
	(void)vfs;
	return default_vfs->xRandomness(default_vfs, n, out);
}

static int
vfs_sleep(sqlite3_vfs *vfs, int microseconds)
{
	(void)vfs;
	return default_vfs->xSleep(default_vfs, microseconds);
}

static int
vfs_current_time(sqlite3_vfs *vfs, double *out)
{
	(void)vfs;
	return default_vfs->xCurrentTime(default_vfs, out);
}

static int
vfs_get_last_error(sqlite3_vfs *vfs, int n, char *out)
{
	(void)vfs;
	return default_vfs->xGetLastError(default_vfs, n, out);
}

static int
vfs_current_time_int64(sqlite3_vfs *vfs, sqlite3_int64 *out)
{
	(void)vfs;
	return default_vfs->xCurrentTimeInt64(default_vfs, out);
}

static sqlite3_vfs queue_vfs = {
	.iVersion = 2,
	.zName = QUEUE_VFS_NAME,
	.xOpen = vfs_open,
	.xDelete = vfs_delete,
	.xAccess = vfs_access,
	.xFullPathname = vfs_full_pathname,
	.xDlOpen = vfs_dl_open,
	.xDlError = vfs_dl_error,
	.xDlSym = vfs_dl_sym,
	.xDlClose = vfs_dl_close,
	.xRandomness = vfs_randomness,
	.xSleep = vfs_sleep,
	.xCurrentTime = vfs_current_time,
	.xGetLastError = vfs_get_last_error,
	.xCurrentTimeInt64 = vfs_current_time_int64,
};

/* Whether to use this VFS at all: once per process, logged once. */
static bool
vfs_wanted(void)
{
	static int wanted = -1;
	const char *env = getenv(QUEUE_VFS_ENV);

	if (wanted >= 0)
		return wanted;
	if (env != NULL && strcmp(env, "stock") == 0) {
		log_info("queue: SQLite's stock VFS (%s=stock)", QUEUE_VFS_ENV);
		wanted = 0;
	} else if (sqlite3_libversion_number() < QUEUE_VFS_MIN_SQLITE) {
		log_warn("queue: SQLite %s is older than %s, which the queue VFS"
		    " needs: using the stock VFS", sqlite3_libversion(),
		    QUEUE_VFS_MIN_SQLITE_TEXT);
		wanted = 0;
	} else {
		wanted = 1;
	}
	return wanted;
}

const char *
queue_vfs_name(void)
{
	if (!vfs_wanted())
		return NULL;
	if (default_vfs != NULL)
		return QUEUE_VFS_NAME;
	default_vfs = sqlite3_vfs_find(NULL);
	if (default_vfs == NULL || default_vfs->iVersion < 2) {
		log_error("SQLite has no usable default VFS");
		default_vfs = NULL;
		return NULL;
	}
	queue_vfs.szOsFile = (int)sizeof(struct vfs_file) +
	    default_vfs->szOsFile;
	queue_vfs.mxPathname = default_vfs->mxPathname;
	if (sqlite3_vfs_register(&queue_vfs, 0) != SQLITE_OK) {
		log_error("cannot register the SQLite VFS %s", QUEUE_VFS_NAME);
		default_vfs = NULL;
		return NULL;
	}
	return QUEUE_VFS_NAME;
}
