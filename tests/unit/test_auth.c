/*
 * test_auth — credential checks: the passwd file and the SQLite users
 * table, hashes (yescrypt, SHA-512-crypt), the file update used by
 * `mxgatectl passwd`, and the thread pool with its eventfd.
 */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include <sqlite3.h>

#include "smtp/auth.h"
#include "common/util.h"
#include "unit.h"

static char dir[] = "/tmp/test_auth.XXXXXX";
static char passwd_path[256], db_path[256];

static void
write_text(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	if (f == NULL)
		return;
	fputs(text, f);
	fclose(f);
}

static char *
read_text(const char *path)
{
	static char text[8192];
	size_t n;
	FILE *f = fopen(path, "r");

	if (f == NULL)
		return NULL;
	n = fread(text, 1, sizeof(text) - 1, f);
	text[n] = '\0';
	fclose(f);
	return text;
}

static enum auth_verdict
check(const char *passwd_file, const char *sqlite, const char *user,
    const char *pass, char *why, size_t whysize)
{
	struct auth_sources src = { passwd_file, sqlite };
	struct auth_checker *ck = auth_checker_new(&src);
	enum auth_verdict v = auth_check(ck, user, pass, why, whysize);

	auth_checker_free(ck);
	return v;
}

static void
test_user_valid(void)
{
	CHECK(auth_user_valid("bob"));
	CHECK(auth_user_valid("bob@example.com"));
	CHECK(auth_user_valid("j\xc3\xb6rg"));
	CHECK(!auth_user_valid(""));
	CHECK(!auth_user_valid("a:b"));
	CHECK(!auth_user_valid("a b"));
	CHECK(!auth_user_valid("a\nb"));
	CHECK(!auth_user_valid("a\x7f"));
}

static void
test_hashes(void)
{
	char y[256], six[256], why[128];

	CHECK_INT(auth_hash("yescrypt", "secret", y, sizeof(y)), 0);
	CHECK_INT(auth_hash("sha512", "secret", six, sizeof(six)), 0);
	CHECK(strncmp(y, "$y$", 3) == 0);
	CHECK(strncmp(six, "$6$", 3) == 0);
	CHECK_INT(auth_hash("md5", "secret", y, sizeof(y)), -1);
	/* A fresh salt each time. */
	{
		char again[256];
		CHECK_INT(auth_hash("sha512", "secret", again,
		    sizeof(again)), 0);
		CHECK(strcmp(again, six) != 0);
	}
	CHECK_INT(auth_hash("yescrypt", "secret", y, sizeof(y)), 0);
	snprintf(passwd_path, sizeof(passwd_path), "%s/passwd", dir);
	{
		char text[1024];
		snprintf(text, sizeof(text), "# users\n\nyes:%s\nsix:%s\n", y,
		    six);
		write_text(passwd_path, text);
	}
	CHECK_INT(check(passwd_path, NULL, "yes", "secret", why, sizeof(why)),
	    AUTH_OK);
	CHECK_INT(check(passwd_path, NULL, "six", "secret", why, sizeof(why)),
	    AUTH_OK);
	CHECK_INT(check(passwd_path, NULL, "six", "Secret", why, sizeof(why)),
	    AUTH_FAIL);
	CHECK_STR(why, "wrong password");
	CHECK_INT(check(passwd_path, NULL, "nobody", "secret", why,
	    sizeof(why)), AUTH_FAIL);
	CHECK_STR(why, "no such user");
}

static void
test_passwd_file(void)
{
	char err[256], why[128], hash[256], *text;
	struct stat st;

	snprintf(passwd_path, sizeof(passwd_path), "%s/pw", dir);
	unlink(passwd_path);
	/* Created 0640 whatever the umask. */
	CHECK_INT(auth_hash("sha512", "one", hash, sizeof(hash)), 0);
	CHECK_INT(auth_passwd_set(passwd_path, "alice", hash, err,
	    sizeof(err)), 0);
	CHECK(stat(passwd_path, &st) == 0 && (st.st_mode & 0777) == 0640);
	CHECK_INT(check(passwd_path, NULL, "alice", "one", why, sizeof(why)),
	    AUTH_OK);

	/* Comments, other users and their order survive an update. */
	write_text(passwd_path, "# the team\nbob:*\n#alice:old\n"
	    "alice:$6$x$y\ncarol:!locked");
	chmod(passwd_path, 0600);
	CHECK_INT(auth_passwd_set(passwd_path, "alice", hash, err,
	    sizeof(err)), 0);
	text = read_text(passwd_path);
	CHECK(text != NULL);
	if (text != NULL) {
		char want[1024];
		snprintf(want, sizeof(want), "# the team\nbob:*\n#alice:old\n"
		    "alice:%s\ncarol:!locked\n", hash);
		CHECK_STR(text, want);
	}
	CHECK(stat(passwd_path, &st) == 0 && (st.st_mode & 0777) == 0600);
	CHECK_INT(auth_passwd_set(passwd_path, "dave", hash, err, sizeof(err)),
	    0);
	CHECK_INT(check(passwd_path, NULL, "dave", "one", why, sizeof(why)),
	    AUTH_OK);
	CHECK_INT(check(passwd_path, NULL, "alice", "one", why, sizeof(why)),
	    AUTH_OK);

	/* Locked entries match nothing. */
	CHECK_INT(check(passwd_path, NULL, "bob", "*", why, sizeof(why)),
	    AUTH_FAIL);
	CHECK_STR(why, "account locked");
	CHECK_INT(check(passwd_path, NULL, "carol", "!locked", why,
	    sizeof(why)), AUTH_FAIL);
	/* A user name that cannot be in the file is just unknown. */
	CHECK_INT(check(passwd_path, NULL, "#alice", "old", why, sizeof(why)),
	    AUTH_FAIL);
	CHECK_INT(check(passwd_path, NULL, "alice:$6$x$y", "x", why,
	    sizeof(why)), AUTH_FAIL);

	CHECK_INT(auth_passwd_set(passwd_path, "a:b", hash, err, sizeof(err)),
	    -1);
	CHECK_INT(auth_passwd_set(passwd_path, "e", "x:y", err, sizeof(err)),
	    -1);
	CHECK_INT(auth_passwd_set("/nonexistent/dir/pw", "e", hash, err,
	    sizeof(err)), -1);

	/* An unreadable source is a temporary failure, not a wrong password. */
	CHECK_INT(check("/nonexistent/pw", NULL, "alice", "one", why,
	    sizeof(why)), AUTH_TEMPFAIL);
	CHECK_STR(why, "passwd_file: No such file or directory");
}

static void
make_db(const char *path, const char *sql)
{
	sqlite3 *db;

	unlink(path);
	CHECK(sqlite3_open(path, &db) == SQLITE_OK);
	CHECK(sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK);
	sqlite3_close(db);
}

static void
test_sqlite(void)
{
	char hash[256], sql[1024], why[128];

	snprintf(db_path, sizeof(db_path), "%s/users.db", dir);
	CHECK_INT(auth_hash("yescrypt", "dbpass", hash, sizeof(hash)), 0);
	snprintf(sql, sizeof(sql), "CREATE TABLE users (name TEXT PRIMARY KEY,"
	    " password_hash TEXT NOT NULL); INSERT INTO users VALUES"
	    " ('erin', '%s'), ('alice', '%s'), ('locked', '*');", hash, hash);
	make_db(db_path, sql);
	CHECK_INT(check(NULL, db_path, "erin", "dbpass", why, sizeof(why)),
	    AUTH_OK);
	CHECK_INT(check(NULL, db_path, "erin", "nope", why, sizeof(why)),
	    AUTH_FAIL);
	CHECK_INT(check(NULL, db_path, "frank", "dbpass", why, sizeof(why)),
	    AUTH_FAIL);
	CHECK_INT(check(NULL, db_path, "locked", "*", why, sizeof(why)),
	    AUTH_FAIL);
	/* The file comes first: alice's password there wins. */
	snprintf(passwd_path, sizeof(passwd_path), "%s/pw", dir);
	CHECK_INT(check(passwd_path, db_path, "alice", "one", why, sizeof(why)),
	    AUTH_OK);
	CHECK_INT(check(passwd_path, db_path, "alice", "dbpass", why,
	    sizeof(why)), AUTH_FAIL);
	/* ... and the database knows the others. */
	CHECK_INT(check(passwd_path, db_path, "erin", "dbpass", why,
	    sizeof(why)), AUTH_OK);
	/* Never created by a check (read-only), and no table: try later. */
	CHECK_INT(check(NULL, "/nonexistent/users.db", "erin", "dbpass", why,
	    sizeof(why)), AUTH_TEMPFAIL);
	make_db(db_path, "CREATE TABLE other (x);");
	CHECK_INT(check(NULL, db_path, "erin", "dbpass", why, sizeof(why)),
	    AUTH_TEMPFAIL);
	CHECK(strstr(why, "no such table") != NULL);
}

static void
test_pool(void)
{
	struct auth_sources src = { passwd_path, NULL };
	struct auth_pool *pool = auth_pool_new(&src, 2);
	enum auth_verdict v[4] = { AUTH_TEMPFAIL, AUTH_TEMPFAIL, AUTH_TEMPFAIL,
	    AUTH_TEMPFAIL };
	int got = 0, rounds = 0;
	char why[128];
	uint64_t id;

	CHECK(pool != NULL);
	if (pool == NULL)
		return;
	CHECK_INT(auth_pool_submit(pool, 1, "alice", "one"), 0);
	CHECK_INT(auth_pool_submit(pool, 2, "alice", "two"), 0);
	CHECK_INT(auth_pool_submit(pool, 3, "nobody", "one"), 0);
	/* Results come through the eventfd, in any order. */
	while (got < 3 && rounds++ < 100) {
		struct pollfd pfd = { auth_pool_fd(pool), POLLIN, 0 };
		enum auth_verdict verdict;

		if (poll(&pfd, 1, 10000) != 1)
			break;
		while (auth_pool_result(pool, &id, &verdict, why,
		    sizeof(why))) {
			CHECK(id >= 1 && id <= 3);
			if (id >= 1 && id <= 3)
				v[id] = verdict;
			got++;
		}
	}
	CHECK_INT(got, 3);
	CHECK_INT(v[1], AUTH_OK);
	CHECK_INT(v[2], AUTH_FAIL);
	CHECK_INT(v[3], AUTH_FAIL);
	/* Nothing left, and the eventfd was reset. */
	{
		struct pollfd pfd = { auth_pool_fd(pool), POLLIN, 0 };
		enum auth_verdict verdict;
		CHECK(!auth_pool_result(pool, &id, &verdict, why, sizeof(why)));
		CHECK_INT(poll(&pfd, 1, 0), 0);
	}
	/* Checks still queued at the end are dropped, not waited for. */
	CHECK_INT(auth_pool_submit(pool, 4, "alice", "one"), 0);
	auth_pool_free(pool);
}

int
main(void)
{
	char cmd[300];

	if (mkdtemp(dir) == NULL) {
		perror("mkdtemp");
		return 1;
	}
	RUN(test_user_valid);
	RUN(test_hashes);
	RUN(test_passwd_file);
	RUN(test_sqlite);
	RUN(test_pool);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if (system(cmd) != 0)
		printf("# could not remove %s\n", dir);
	return unit_done();
}
