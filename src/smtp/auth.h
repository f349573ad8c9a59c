/*
 * auth — checking SASL credentials (AUTH PLAIN / LOGIN) for the smtp
 * workers, and maintaining the password file for mxgatectl.
 *
 * Sources, tried in this order; the first that knows the user decides:
 *   auth.passwd_file  lines "user:hash" -- hash is a crypt(3) hash, e.g.
 *                     yescrypt "$y$..." or SHA-512-crypt "$6$..."; blank
 *                     lines and lines starting with '#' are ignored; a
 *                     hash that is not one ("*", "!", "") locks the user.
 *                     Read at each check, so edits apply at once.
 *   auth.sqlite       an SQLite database opened read-only, with the table
 *                         CREATE TABLE users (
 *                             name          TEXT PRIMARY KEY,
 *                             password_hash TEXT NOT NULL  -- crypt(3)
 *                         );
 * Both must be readable by server.lookup_user (the lookup process, the
 * only one that checks credentials: lookup.h), and by nobody else that
 * does not need them; the chrooted smtp workers cannot open them.
 *
 * Hashes are slow on purpose, so they are never checked in an event
 * loop: auth_pool_new() starts a few threads (in the lookup process);
 * auth_pool_submit() queues a check; when one is done the pool's eventfd (auth_pool_fd()) becomes
 * readable and auth_pool_result() hands the verdicts back, one by one, to
 * the loop.  A user that no source knows costs the same hash as one that
 * exists (a dummy one), so timing does not tell which users exist.
 *
 * auth_check() is the check itself, synchronous (the threads, the tests).
 * auth_hash() and auth_passwd_set() are for `mxgatectl passwd`: the file
 * is rewritten beside itself and renamed into place, so a worker reading
 * it sees the old or the new file, never half of one.
 */
#ifndef MXGATE_AUTH_H
#define MXGATE_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/config.h"

enum auth_verdict {
	AUTH_OK,
	AUTH_FAIL,          /* unknown user or wrong password */
	AUTH_TEMPFAIL,      /* a source could not be read: try later */
};

/* Where the credentials are (NULL: not used). */
struct auth_sources {
	const char *passwd_file;
	const char *sqlite;
};

/* Per-thread state of auth_check(): the SQLite handle, the dummy hash. */
struct auth_checker;

struct auth_checker *auth_checker_new(const struct auth_sources *src);
void auth_checker_free(struct auth_checker *ck);
/* why (may be NULL) gets a short reason for the log on FAIL/TEMPFAIL:
 * "no such user", "wrong password", "passwd_file: Permission denied". */
enum auth_verdict auth_check(struct auth_checker *ck, const char *user,
    const char *pass, char *why, size_t whysize);

/* ---- the worker's thread pool ---- */

struct auth_pool;

/* nthreads >= 1; NULL (and a log line) if threads cannot be started. */
struct auth_pool *auth_pool_new(const struct auth_sources *src,
    unsigned nthreads);
/* Waits for the threads; checks still queued are dropped. */
void auth_pool_free(struct auth_pool *pool);
int  auth_pool_fd(const struct auth_pool *pool);
/* Queue a check (user and pass are copied); 0, or -1 when stopping. */
int  auth_pool_submit(struct auth_pool *pool, uint64_t id, const char *user,
    const char *pass);
/* One finished check; false when there is none (the eventfd is reset when
 * the last one is taken).  why as for auth_check(). */
bool auth_pool_result(struct auth_pool *pool, uint64_t *id,
    enum auth_verdict *verdict, char *why, size_t whysize);

/* ---- the password file ---- */

/* A user name the file can hold: 1..255 bytes, no ':', no control
 * characters, no space. */
bool auth_user_valid(const char *user);
/* Hash pass with a fresh salt: scheme "yescrypt" ($y$) or "sha512"
 * ($6$).  0, or -1 with errno. */
int  auth_hash(const char *scheme, const char *pass, char *out, size_t size);
/* Set user's hash in path (created with mode 0640 if missing, else
 * keeping its mode); 0, or -1 with a message in err. */
int  auth_passwd_set(const char *path, const char *user, const char *hash,
    char *err, size_t errsize);

#endif
