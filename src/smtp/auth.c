/*
 * auth — see auth.h.
 *
 * The pool is a threadpool (threadpool.h) whose threads each keep an
 * auth_checker.  Threads never log (the log module belongs to the loop):
 * the reason travels with the verdict.  A password is wiped as soon as
 * its check is over.
 */
#include <crypt.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <libgen.h>
#include <sys/stat.h>

#include <sqlite3.h>

#include "smtp/auth.h"
#include "common/log.h"
#include "common/threadpool.h"
#include "common/util.h"

#define USER_MAX        255
#define HASH_MAX        512
#define SQLITE_WAIT_MS  2000

struct auth_checker {
	char    *passwd_file;
	char    *sqlite;
	sqlite3 *db;                    /* opened on first use */
	struct crypt_data *cd;          /* large: not on the stack */
	char     dummy[CRYPT_OUTPUT_SIZE];
};

/* ---- looking users up -------------------------------------------------- */

static void set_why(char *why, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
set_why(char *why, size_t size, const char *fmt, ...)
{
	va_list ap;

	if (why == NULL || size == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(why, size, fmt, ap);
	va_end(ap);
}

/*
 * The hash of user in the passwd file: 1 found, 0 not there, -1 the file
 * cannot be read.
 */
static int
file_lookup(struct auth_checker *ck, const char *user, char *hash,
    size_t size, char *why, size_t whysize)
{
	size_t ulen = strlen(user), cap = 0;
	char *line = NULL;
	ssize_t n;
	FILE *fp;
	int found = 0;

	if ((fp = fopen(ck->passwd_file, "re")) == NULL) {
		set_why(why, whysize, "passwd_file: %s", strerror(errno));
		return -1;
	}
	while (!found && (n = getline(&line, &cap, fp)) >= 0) {
		while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
			line[--n] = '\0';
		if (n == 0 || line[0] == '#')
			continue;
		if ((size_t)n <= ulen || line[ulen] != ':' ||
		    memcmp(line, user, ulen) != 0)
			continue;
		/* Fields after the hash, if a later version adds any. */
		line[ulen + 1 + strcspn(line + ulen + 1, ":")] = '\0';
		strlcpy_mx(hash, line + ulen + 1, size);
		found = 1;
	}
	if (!found && ferror(fp)) {
		set_why(why, whysize, "passwd_file: %s", strerror(errno));
		found = -1;
	}
	free(line);
	fclose(fp);
	return found;
}

static void
db_close(struct auth_checker *ck)
{
	sqlite3_close(ck->db);
	ck->db = NULL;
}

static int
db_open(struct auth_checker *ck, char *why, size_t whysize)
{
	if (ck->db != NULL)
		return 0;
	if (sqlite3_open_v2(ck->sqlite, &ck->db, SQLITE_OPEN_READONLY |
	    SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
		set_why(why, whysize, "sqlite: %s", ck->db != NULL ?
		    sqlite3_errmsg(ck->db) : "out of memory");
		db_close(ck);
		return -1;
	}
	sqlite3_busy_timeout(ck->db, SQLITE_WAIT_MS);
	return 0;
}

/* As file_lookup(), from the users table. */
static int
sqlite_lookup(struct auth_checker *ck, const char *user, char *hash,
    size_t size, char *why, size_t whysize)
{
	sqlite3_stmt *st = NULL;
	const unsigned char *h;
	int rc, found = -1;

	if (db_open(ck, why, whysize) < 0)
		return -1;
	if (sqlite3_prepare_v2(ck->db, "SELECT password_hash FROM users"
	    " WHERE name = ?1", -1, &st, NULL) != SQLITE_OK)
		goto fail;
	sqlite3_bind_text(st, 1, user, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		h = sqlite3_column_text(st, 0);
		strlcpy_mx(hash, h != NULL ? (const char *)h : "", size);
		found = 1;
	} else if (rc == SQLITE_DONE) {
		found = 0;
	} else {
		goto fail;
	}
	sqlite3_finalize(st);
	return found;
fail:
	set_why(why, whysize, "sqlite: %s", sqlite3_errmsg(ck->db));
	sqlite3_finalize(st);
	/* Reopen next time: the file may have been replaced or fixed. */
	db_close(ck);
	return -1;
}

/* ---- checking ---------------------------------------------------------- */

/* Equal strings, in a time that does not depend on where they differ. */
static bool
same_secret(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b), i;
	unsigned char d = la != lb;

	for (i = 0; i < la && i < lb; i++)
		d |= (unsigned char)(a[i] ^ b[i]);
	return d == 0;
}

/* A locked or empty entry ("*", "!...", ""): nothing can match it. */
static bool
hash_usable(const char *hash)
{
	return hash[0] != '\0' && hash[0] != '*' && hash[0] != '!';
}

struct auth_checker *
auth_checker_new(const struct auth_sources *src)
{
	struct auth_checker *ck = xcalloc(1, sizeof(*ck));
	char salt[CRYPT_GENSALT_OUTPUT_SIZE];
	const char *h;

	ck->passwd_file = src->passwd_file ? xstrdup(src->passwd_file) : NULL;
	ck->sqlite = src->sqlite ? xstrdup(src->sqlite) : NULL;
	ck->cd = xcalloc(1, sizeof(*ck->cd));
	/* The hash an unknown user's password is checked against, at the
	 * cost of a real one. */
	if (crypt_gensalt_rn("$y$", 0, NULL, 0, salt, sizeof(salt)) != NULL &&
	    (h = crypt_r("no such user", salt, ck->cd)) != NULL && h[0] != '*')
		strlcpy_mx(ck->dummy, h, sizeof(ck->dummy));
	else
		strlcpy_mx(ck->dummy, "$6$mxgate$", sizeof(ck->dummy));
	return ck;
}

void
auth_checker_free(struct auth_checker *ck)
{
	if (ck == NULL)
		return;
	db_close(ck);
	explicit_bzero(ck->cd, sizeof(*ck->cd));
	free(ck->cd);
	free(ck->passwd_file);
	free(ck->sqlite);
	free(ck);
}

/* The first source that knows user: 1 found, 0 none, -1 an error. */
static int
lookup(struct auth_checker *ck, const char *user, char *hash, size_t size,
    char *why, size_t whysize)
{
	int r = 0;

	if (ck->passwd_file != NULL)
		r = file_lookup(ck, user, hash, size, why, whysize);
	if (r == 0 && ck->sqlite != NULL)
		r = sqlite_lookup(ck, user, hash, size, why, whysize);
	return r;
}

enum auth_verdict
auth_check(struct auth_checker *ck, const char *user, const char *pass,
    char *why, size_t whysize)
{
	char hash[HASH_MAX];
	const char *out;
	int found;

	set_why(why, whysize, "%s", "");
	found = auth_user_valid(user) ?
	    lookup(ck, user, hash, sizeof(hash), why, whysize) : 0;
	if (found < 0)
		return AUTH_TEMPFAIL;
	if (found == 0 || !hash_usable(hash)) {
		crypt_r(pass, ck->dummy, ck->cd);
		set_why(why, whysize, "%s", found == 0 ? "no such user" :
		    "account locked");
		return AUTH_FAIL;
	}
	out = crypt_r(pass, hash, ck->cd);
	if (out == NULL || out[0] == '*') {
		set_why(why, whysize, "%s", "unsupported password hash");
		return AUTH_FAIL;
	}
	if (!same_secret(out, hash)) {
		set_why(why, whysize, "%s", "wrong password");
		return AUTH_FAIL;
	}
	return AUTH_OK;
}

/* ---- the pool ---------------------------------------------------------- */

struct auth_job {
	struct threadpool_job tp;       /* first: the pool's part */
	uint64_t  id;
	char     *user;
	char     *pass;
	enum auth_verdict verdict;
	char      why[160];
};

struct auth_pool {
	struct threadpool  *threads;
	struct auth_sources src;
};

static void
job_free(struct auth_job *j)
{
	if (j->pass != NULL) {
		explicit_bzero(j->pass, strlen(j->pass));
		free(j->pass);
	}
	free(j->user);
	free(j);
}

static void
job_drop(struct threadpool_job *tp)
{
	job_free((struct auth_job *)tp);
}

static void *
thread_init(void *arg)
{
	struct auth_pool *pool = arg;

	return auth_checker_new(&pool->src);
}

static void
thread_fini(void *state)
{
	auth_checker_free(state);
}

static void
job_run(struct threadpool_job *tp, void *state)
{
	struct auth_job *j = (struct auth_job *)tp;

	j->verdict = auth_check(state, j->user, j->pass, j->why,
	    sizeof(j->why));
	explicit_bzero(j->pass, strlen(j->pass));
}

static const struct threadpool_ops auth_pool_ops = {
	.thread_init = thread_init,
	.thread_fini = thread_fini,
	.run = job_run,
};

struct auth_pool *
auth_pool_new(const struct auth_sources *src, unsigned nthreads)
{
	struct auth_pool *pool = xcalloc(1, sizeof(*pool));

	pool->src.passwd_file = src->passwd_file ? xstrdup(src->passwd_file) :
	    NULL;
	pool->src.sqlite = src->sqlite ? xstrdup(src->sqlite) : NULL;
	pool->threads = threadpool_new(nthreads ? nthreads : 1, &auth_pool_ops,
	    pool);
	if (pool->threads == NULL) {
		log_error("auth: starting the threads: %s", strerror(errno));
		auth_pool_free(pool);
		return NULL;
	}
	return pool;
}

void
auth_pool_free(struct auth_pool *pool)
{
	if (pool == NULL)
		return;
	threadpool_free(pool->threads, job_drop);
	free((char *)pool->src.passwd_file);
	free((char *)pool->src.sqlite);
	free(pool);
}

int
auth_pool_fd(const struct auth_pool *pool)
{
	return threadpool_fd(pool->threads);
}

int
auth_pool_submit(struct auth_pool *pool, uint64_t id, const char *user,
    const char *pass)
{
	struct auth_job *j = xcalloc(1, sizeof(*j));

	j->id = id;
	j->user = xstrdup(user);
	j->pass = xstrdup(pass);
	if (threadpool_submit(pool->threads, &j->tp) < 0) {
		job_free(j);
		return -1;
	}
	return 0;
}

bool
auth_pool_result(struct auth_pool *pool, uint64_t *id,
    enum auth_verdict *verdict, char *why, size_t whysize)
{
	struct auth_job *j;

	if ((j = (struct auth_job *)threadpool_done(pool->threads)) == NULL)
		return false;
	*id = j->id;
	*verdict = j->verdict;
	set_why(why, whysize, "%s", j->why);
	job_free(j);
	return true;
}

/* ---- the password file ------------------------------------------------- */

bool
auth_user_valid(const char *user)
{
	size_t i, len = strlen(user);

	if (len == 0 || len > USER_MAX)
		return false;
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)user[i];
		if (c <= ' ' || c == ':' || c == 0x7f)
			return false;
	}
	return true;
}

int
auth_hash(const char *scheme, const char *pass, char *out, size_t size)
{
	char salt[CRYPT_GENSALT_OUTPUT_SIZE];
	struct crypt_data *cd;
	const char *prefix, *h;
	int r = -1;

	if (strcmp(scheme, "yescrypt") == 0)
		prefix = "$y$";
	else if (strcmp(scheme, "sha512") == 0)
		prefix = "$6$";
	else {
		errno = EINVAL;
		return -1;
	}
	if (crypt_gensalt_rn(prefix, 0, NULL, 0, salt, sizeof(salt)) == NULL)
		return -1;
	cd = xcalloc(1, sizeof(*cd));
	h = crypt_r(pass, salt, cd);
	if (h == NULL || h[0] == '*')
		errno = errno != 0 ? errno : EINVAL;
	else if (strlcpy_mx(out, h, size) >= size)
		errno = ENAMETOOLONG;
	else
		r = 0;
	explicit_bzero(cd, sizeof(*cd));
	free(cd);
	return r;
}

/* The file's lines with user's replaced (or added) by "user:hash". */
static int
passwd_rewrite(FILE *in, const char *user, const char *hash, struct buf *b)
{
	size_t ulen = strlen(user), cap = 0;
	bool done = false;
	char *line = NULL;
	ssize_t n;

	while (in != NULL && (n = getline(&line, &cap, in)) >= 0) {
		if (!done && (size_t)n > ulen && line[ulen] == ':' &&
		    memcmp(line, user, ulen) == 0 && line[0] != '#') {
			buf_appendf(b, "%s:%s\n", user, hash);
			done = true;
			continue;
		}
		buf_append(b, line, (size_t)n);
		if (n > 0 && line[n - 1] != '\n')
			buf_append(b, "\n", 1);
	}
	free(line);
	if (in != NULL && ferror(in))
		return -1;
	if (!done)
		buf_appendf(b, "%s:%s\n", user, hash);
	return 0;
}

/* Write b to tmp (mode, owner of the old file), fsync, rename to path. */
static int
replace_file(const char *path, const char *tmp, const struct buf *b,
    const struct stat *old, char *err, size_t errsize)
{
	mode_t mode = old != NULL ? (old->st_mode & 07777) : 0640;
	int fd;

	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
	    mode)) < 0) {
		snprintf(err, errsize, "%s: %s", tmp, strerror(errno));
		return -1;
	}
	/* open() applied the umask. */
	if (fchmod(fd, mode) < 0 || (old != NULL && geteuid() == 0 &&
	    fchown(fd, old->st_uid, old->st_gid) < 0) ||
	    fd_write_all(fd, b->data, b->len) < 0 || fsync(fd) < 0) {
		snprintf(err, errsize, "%s: %s", tmp, strerror(errno));
		close(fd);
		unlink(tmp);
		return -1;
	}
	if (close(fd) < 0 || rename(tmp, path) < 0) {
		snprintf(err, errsize, "%s: %s", path, strerror(errno));
		unlink(tmp);
		return -1;
	}
	return 0;
}

/* The rename is durable once the directory is synced. */
static void
sync_dir(const char *path)
{
	char *copy = xstrdup(path);
	int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd >= 0) {
		fsync(fd);
		close(fd);
	}
	free(copy);
}

int
auth_passwd_set(const char *path, const char *user, const char *hash,
    char *err, size_t errsize)
{
	struct stat st;
	struct buf b;
	char *tmp;
	FILE *in;
	int r = -1;

	if (!auth_user_valid(user)) {
		snprintf(err, errsize, "invalid user name (1 to %d bytes, no "
		    "':', space or control character)", USER_MAX);
		return -1;
	}
	if (strchr(hash, ':') != NULL || strchr(hash, '\n') != NULL) {
		snprintf(err, errsize, "invalid hash");
		return -1;
	}
	if ((in = fopen(path, "re")) == NULL && errno != ENOENT) {
		snprintf(err, errsize, "%s: %s", path, strerror(errno));
		return -1;
	}
	buf_init(&b);
	xasprintf(&tmp, "%s.tmp.%ld", path, (long)getpid());
	if (in != NULL && fstat(fileno(in), &st) < 0)
		snprintf(err, errsize, "%s: %s", path, strerror(errno));
	else if (passwd_rewrite(in, user, hash, &b) < 0)
		snprintf(err, errsize, "%s: %s", path, strerror(errno));
	else if (replace_file(path, tmp, &b, in != NULL ? &st : NULL, err,
	    errsize) == 0)
		r = 0;
	if (r == 0)
		sync_dir(path);
	if (in != NULL)
		fclose(in);
	free(tmp);
	buf_free(&b);
	return r;
}
