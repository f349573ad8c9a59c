/*
 * check — see check.h.
 */
#include <errno.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>

#include "common/config.h"
#include "common/log.h"
#include "common/proc.h"
#include "common/util.h"
#include "master/check.h"
#include "queue/queue_db.h"

/* Who a role's checks run as, and how lines name it. */
struct role {
	const char *process;            /* "queue process" */
	const char *user;               /* NULL: not root, the current user */
	const char *group;              /* NULL: the user's primary group */
	char        label[128];         /* "queue process (user mxgate)" */
	bool        fatal;              /* a problem here stops the start */
	const char *route_user;         /* delivery: the routes of this user
	                                 * (NULL: those of delivery_user) */
	int         problems;           /* fatal ones */
	int         warnings;
};

/* mxgated -n writes to stderr; the start logs (journal priorities). */
static bool use_log;
static int  mode_warnings;      /* check_modes(), in this process */

static void
emit(bool is_error, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
emit(bool is_error, const char *fmt, ...)
{
	char line[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (!use_log)
		fprintf(stderr, "mxgated: %s%s\n", is_error ? "" : "warning: ",
		    line);
	else if (is_error)
		log_error("%s", line);
	else
		log_warn("%s", line);
}

static void
problem(struct role *r, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
problem(struct role *r, const char *path, const char *fmt, ...)
{
	char what[768];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	emit(r->fatal, "%s: %s: %s", r->label, path, what);
	if (r->fatal)
		r->problems++;
	else
		r->warnings++;
}

static void
warning(const char *path, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
warning(const char *path, const char *fmt, ...)
{
	char what[768];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	emit(false, "%s: %s", path, what);
	mode_warnings++;
}

static const char *
user_name(uid_t uid, char *buf, size_t size)
{
	struct passwd *pw = getpwuid(uid);

	if (pw != NULL)
		return pw->pw_name;
	snprintf(buf, size, "%lu", (unsigned long)uid);
	return buf;
}

/* "owner root, mode 0700" */
static void
describe(const char *path, char *buf, size_t size)
{
	struct stat st;
	char ubuf[32];

	if (stat(path, &st) < 0) {
		snprintf(buf, size, "%s", strerror(errno));
		return;
	}
	snprintf(buf, size, "owner %s, mode %04o",
	    user_name(st.st_uid, ubuf, sizeof(ubuf)),
	    (unsigned)(st.st_mode & 07777));
}

/*
 * The first directory on the way to path that the current user cannot
 * search, into buf; false if every one can be searched (or is missing).
 */
static bool
blocking_parent(const char *path, char *buf, size_t size)
{
	char *p;

	if (strlcpy_mx(buf, path, size) >= size)
		return false;
	for (p = buf + 1; (p = strchr(p, '/')) != NULL; p++) {
		*p = '\0';
		if (access(buf, X_OK) < 0 && errno == EACCES)
			return true;
		*p = '/';
	}
	return false;
}

static const char *
need_words(int mode)
{
	switch (mode) {
	case R_OK:              return "read it";
	case R_OK | W_OK:       return "read and write it";
	case W_OK | X_OK:       return "write in it";
	case X_OK:              return "run it";
	default:                return "use it";
	}
}

/*
 * path must be reachable and allow mode to this process's user.  setting
 * names where the path comes from, for the fix.
 */
static void
need(struct role *r, const char *setting, const char *path, int mode)
{
	char parent[PATH_MAX], how[96];
	const char *who = r->user != NULL ? r->user : "the current user";

	if (access(path, mode) == 0)
		return;
	switch (errno) {
	case ENOENT:
	case ENOTDIR:
		problem(r, path, "%s; fix: create it, or correct %s",
		    strerror(errno), setting);
		return;
	case EROFS:
		problem(r, path, "cannot %s: on a read-only file system; fix:"
		    " move %s to a writable one", need_words(mode), setting);
		return;
	case EACCES:
		break;
	default:
		problem(r, path, "cannot %s: %s", need_words(mode),
		    strerror(errno));
		return;
	}
	if (blocking_parent(path, parent, sizeof(parent))) {
		describe(parent, how, sizeof(how));
		problem(r, path, "cannot reach it: no search permission on %s"
		    " (%s); fix: chmod o+x %s, or move %s out of it", parent,
		    how, parent, setting);
		return;
	}
	describe(path, how, sizeof(how));
	if (r->user != NULL && mode == R_OK) {
		/* Something to read (credentials, a CA): its group is enough,
		 * the file need not change hands. */
		struct group *gr = getgrgid(getegid());

		problem(r, path, "cannot %s: Permission denied (%s); fix:"
		    " chgrp %s %s && chmod g+r %s", need_words(mode), how,
		    gr != NULL ? gr->gr_name : "GROUP", path, path);
	} else if (r->user != NULL)
		problem(r, path, "cannot %s: Permission denied (%s); fix: chown"
		    " %s %s, or give %s access", need_words(mode), how,
		    r->user, path, who);
	else
		problem(r, path, "cannot %s: Permission denied (%s); fix: run"
		    " mxgated as root, or give %s access", need_words(mode),
		    how, who);
}

/* The deepest existing directory of path (path itself if it exists). */
static void
existing_ancestor(const char *path, char *buf, size_t size)
{
	struct stat st;
	char *slash;

	strlcpy_mx(buf, path, size);
	while (stat(buf, &st) < 0 && (errno == ENOENT || errno == ENOTDIR)) {
		if ((slash = strrchr(buf, '/')) == NULL || slash == buf) {
			strlcpy_mx(buf, "/", size);
			return;
		}
		*slash = '\0';
	}
}

/* The fixed part of a path with ${variables}: up to its last '/'. */
static void
fixed_root(const char *path, char *buf, size_t size)
{
	char *var, *slash;

	strlcpy_mx(buf, path, size);
	if ((var = strstr(buf, "${")) != NULL)
		*var = '\0';
	if ((slash = strrchr(buf, '/')) != NULL)
		slash[1] = '\0';
}

/* Whether uid:gid may read and write a file of this owner and mode. */
static bool
may_read_write(const struct stat *st, uid_t uid, gid_t gid)
{
	if (st->st_uid == uid)
		return (st->st_mode & (S_IRUSR | S_IWUSR)) == (S_IRUSR | S_IWUSR);
	if (st->st_gid == gid)
		return (st->st_mode & (S_IRGRP | S_IWGRP)) == (S_IRGRP | S_IWGRP);
	return (st->st_mode & (S_IROTH | S_IWOTH)) == (S_IROTH | S_IWOTH);
}

/*
 * The queue process: the master makes the queue directory (as root) and
 * gives it to the queue user, and the queue process enters it before it
 * drops root (so a queue in a 0700 tree works); what is already in it
 * must be the queue user's.  Run here, as root, from the files' owners
 * and modes: the directory may not be the queue user's yet.
 */
static void
check_queue(struct role *r, const struct mxconf *conf)
{
	static const char *const files[] = { QUEUE_DB_NAME,
	    QUEUE_DB_NAME "-wal", QUEUE_DB_NAME "-shm", QUEUE_LOCK_NAME };
	char path[PATH_MAX], how[96];
	unsigned uid = (unsigned)geteuid(), gid = (unsigned)getegid();
	struct stat st;

	if (stat(conf->queue_dir, &st) < 0)
		return;         /* made at start (check_master) */
	if (!S_ISDIR(st.st_mode)) {
		problem(r, conf->queue_dir, "not a directory; fix: correct"
		    " queue.directory");
		return;
	}
	if (r->user != NULL &&
	    proc_lookup_user(r->user, r->group, &uid, &gid) < 0) {
		r->problems++;
		return;
	}
	for (size_t i = 0; i < ARRAY_LEN(files); i++) {
		snprintf(path, sizeof(path), "%s/%s", conf->queue_dir, files[i]);
		if (lstat(path, &st) < 0 ||
		    may_read_write(&st, (uid_t)uid, (gid_t)gid))
			continue;
		describe(path, how, sizeof(how));
		problem(r, path, "cannot read and write it: Permission denied"
		    " (%s); fix: chown %s %s/%s*", how,
		    r->user != NULL ? r->user : "$(id -un)", conf->queue_dir,
		    QUEUE_DB_NAME);
		return;
	}
}

/* Delivery children: the handlers' targets. */
static void check_dnssec_resolver(struct role *, const struct mxconf *);

static void
check_delivery(struct role *r, const struct mxconf *conf)
{
	char buf[PATH_MAX], anc[PATH_MAX], setting[96];

	for (size_t i = 0; i < conf->nroutes; i++) {
		const struct route_conf *rt = &conf->routes[i];

		if (rt->action == NULL)
			continue;
		/* A route with a user= of its own is tried as that user. */
		if ((rt->user == NULL) != (r->route_user == NULL) ||
		    (rt->user != NULL && strcmp(rt->user, r->route_user) != 0))
			continue;
		if (strcmp(rt->action, "maildir") == 0 && rt->path != NULL &&
		    rt->path[0] == '/') {
			/* Missing directories are made by the master and given
			 * to this user; existing ones must let it write. */
			snprintf(setting, sizeof(setting),
			    "routes[%zu].path (route %s)", i, rt->name);
			fixed_root(rt->path, buf, sizeof(buf));
			existing_ancestor(buf, anc, sizeof(anc));
			if (strcmp(anc, buf) == 0 ||
			    (strlen(anc) + 1 == strlen(buf) &&
			    strncmp(anc, buf, strlen(anc)) == 0))
				need(r, setting, anc, W_OK | X_OK);
			else
				need(r, setting, anc, X_OK);
		}
		if (strcmp(rt->action, "pipe") == 0 && rt->ncommand > 0 &&
		    rt->command[0][0] == '/' &&
		    strstr(rt->command[0], "${") == NULL) {
			snprintf(setting, sizeof(setting),
			    "routes[%zu].command (route %s)", i, rt->name);
			need(r, setting, rt->command[0], X_OK);
		}
		if (rt->tls_ca != NULL) {
			snprintf(setting, sizeof(setting),
			    "routes[%zu].tls_ca (route %s)", i, rt->name);
			need(r, setting, rt->tls_ca, R_OK);
		}
		if (rt->attachments_dir != NULL &&
		    strstr(rt->attachments_dir, "${") == NULL) {
			snprintf(setting, sizeof(setting),
			    "routes[%zu].attachments_dir (route %s)", i,
			    rt->name);
			existing_ancestor(rt->attachments_dir, anc, sizeof(anc));
			need(r, setting, anc, W_OK | X_OK);
		}
	}
	if (r->route_user == NULL && conf->relay_tls_ca != NULL)
		need(r, "delivery.tls_ca", conf->relay_tls_ca, R_OK);
	check_dnssec_resolver(r, conf);
	for (size_t i = 0; r->route_user == NULL && i < conf->nupstreams;
	    i++) {
		const struct upstream_conf *u = &conf->upstreams[i];

		if (u->tls_ca != NULL) {
			snprintf(setting, sizeof(setting),
			    "upstreams[%zu].tls_ca (upstream %s)", i, u->name);
			need(r, setting, u->tls_ca, R_OK);
		}
	}
}

/*
 * delivery.dnssec trusts the AD bit of the resolvers of /etc/resolv.conf
 * (DANE): one across the network could be impersonated on the way, the
 * bit forged (RFC 6698 4.1, RFC 7672 2.1): a local validating resolver
 * is the safe one, as Postfix's documentation says.
 */
static void
check_dnssec_resolver(struct role *r, const struct mxconf *conf)
{
	char line[512], ns[256];
	FILE *f;

	if (!conf->dnssec || r->route_user != NULL)
		return;
	if ((f = fopen("/etc/resolv.conf", "r")) == NULL) {
		problem(r, "/etc/resolv.conf", "delivery.dnssec: cannot read"
		    " it: %s", strerror(errno));
		return;
	}
	while (fgets(line, sizeof(line), f) != NULL) {
		if (sscanf(line, " nameserver %255s", ns) != 1)
			continue;
		if (strncmp(ns, "127.", 4) == 0 || strcmp(ns, "::1") == 0)
			continue;
		emit(false, "%s: /etc/resolv.conf: delivery.dnssec trusts the"
		    " AD bit of nameserver %s, which is not on this host: its"
		    " answers cross the network unprotected; use a local"
		    " validating resolver (unbound)", r->label, ns);
		r->warnings++;
	}
	fclose(f);
}

/* The lookup process: the credentials AUTH is checked against. */
static void
check_lookup(struct role *r, const struct mxconf *conf)
{
	if (conf->auth_passwd_file != NULL)
		need(r, "auth.passwd_file", conf->auth_passwd_file, R_OK);
	if (conf->auth_sqlite != NULL)
		need(r, "auth.sqlite", conf->auth_sqlite, R_OK);
}

/* smtp workers: a unix policy service's socket. */
static void
check_smtp(struct role *r, const struct mxconf *conf)
{
	if (conf->policy_service != NULL &&
	    strncmp(conf->policy_service, "unix:", 5) == 0 &&
	    access(conf->policy_service + 5, W_OK) < 0 && errno != ENOENT)
		need(r, "policy.service", conf->policy_service + 5, W_OK);
	/* Milters and named policy services: the same, each. */
	for (size_t i = 0; i < conf->nmilters + conf->npolicy_services; i++) {
		const char *a = i < conf->nmilters ? conf->milters[i].address :
		    conf->policy_services[i - conf->nmilters].service;
		if (strncmp(a, "unix:", 5) == 0 && access(a + 5, W_OK) < 0 &&
		    errno != ENOENT)
			need(r, i < conf->nmilters ? "milters[].address" :
			    "policy_services[].service", a + 5, W_OK);
	}
}

/* The master (root, or the current user): what it makes at start. */
static void
check_master(struct role *r, const struct mxconf *conf)
{
	char anc[PATH_MAX];
	struct stat st;

	existing_ancestor(conf->queue_dir, anc, sizeof(anc));
	if (stat(anc, &st) == 0 && !S_ISDIR(st.st_mode)) {
		problem(r, anc, "not a directory, cannot hold %s; fix: correct"
		    " queue.directory", conf->queue_dir);
		return;
	}
	if (strcmp(anc, conf->queue_dir) != 0)
		need(r, "queue.directory", anc, W_OK | X_OK);
	else if (r->user == NULL)
		need(r, "queue.directory", anc, W_OK | X_OK);
}

/*
 * Run fn as the role's user in a child.  Its counts come back in the exit
 * status: problems in the high nibble, warnings in the low one.
 */
static void
run_as(struct role *r, const struct mxconf *conf,
    void (*fn)(struct role *, const struct mxconf *))
{
	unsigned uid = 0, gid = 0;
	int status;
	pid_t pid;

	if (r->user == NULL) {
		fn(r, conf);
		return;
	}
	if (proc_lookup_user(r->user, r->group, &uid, &gid) < 0) {
		r->problems++;
		return;
	}
	fflush(stderr);
	if ((pid = fork()) < 0) {
		emit(true, "fork: %s", strerror(errno));
		r->problems++;
		return;
	}
	if (pid == 0) {
		gid_t g = (gid_t)gid;

		if (setgroups(1, &g) < 0 || setresgid(g, g, g) < 0 ||
		    setresuid((uid_t)uid, (uid_t)uid, (uid_t)uid) < 0) {
			emit(true, "checking as %s: %s", r->user,
			    strerror(errno));
			_exit(0x10);
		}
		fn(r, conf);
		fflush(stderr);
		_exit((r->problems > 15 ? 15 : r->problems) << 4 |
		    (r->warnings > 15 ? 15 : r->warnings));
	}
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR) {
			r->problems++;
			return;
		}
	if (!WIFEXITED(status)) {
		r->problems++;
		return;
	}
	r->problems += WEXITSTATUS(status) >> 4;
	r->warnings += WEXITSTATUS(status) & 15;
}

static void
secret_mode(const char *path, const char *what, mode_t forbidden,
    const char *fix)
{
	struct stat st;

	if (path == NULL || stat(path, &st) < 0 || !(st.st_mode & forbidden))
		return;
	warning(path, "%s is readable by %s (mode %04o); fix: chmod %s %s",
	    what, (st.st_mode & forbidden & S_IROTH) ? "every user" :
	    "its group", (unsigned)(st.st_mode & 07777), fix, path);
}

/* Secrets others can read, code others can change: warnings. */
static void
check_modes(const struct mxconf *conf)
{
	struct stat st;

	for (size_t i = 0; i < conf->ntls_certs; i++)
		secret_mode(conf->tls_certs[i].key, "the TLS private key",
		    S_IRGRP | S_IROTH, "0600");
	secret_mode(conf->auth_passwd_file, "the AUTH passwd file", S_IROTH,
	    "o-r");
	secret_mode(conf->auth_sqlite, "the AUTH database", S_IROTH, "o-r");
	for (size_t i = 0; i < conf->nupstreams; i++)
		if (conf->upstreams[i].auth_password != NULL) {
			secret_mode(conf->path, "the configuration, with"
			    " upstream passwords,", S_IROTH, "o-r");
			break;
		}
	for (size_t i = 0; i < conf->nroutes; i++)
		if (conf->routes[i].secret != NULL) {
			secret_mode(conf->path, "the configuration, with"
			    " webhook secrets,", S_IROTH, "o-r");
			break;
		}
	for (size_t i = 0; i < conf->nplugins; i++)
		if (stat(conf->plugins[i].path, &st) == 0 &&
		    (st.st_mode & (S_IWGRP | S_IWOTH)))
			warning(conf->plugins[i].path, "the plugin is writable by"
			    " others (mode %04o), and root loads it; fix:"
			    " chmod go-w %s", (unsigned)(st.st_mode & 07777),
			    conf->plugins[i].path);
}

static void
role_init(struct role *r, const char *process, const char *user,
    const char *group, bool fatal)
{
	char buf[32];

	memset(r, 0, sizeof(*r));
	r->process = process;
	r->fatal = fatal;
	if (geteuid() == 0 && user != NULL) {
		r->user = user;
		r->group = group;
	}
	snprintf(r->label, sizeof(r->label), "%s (user %s)", process,
	    r->user != NULL ? r->user : user_name(geteuid(), buf, sizeof(buf)));
}

int
check_access(const struct mxconf *conf, bool starting, int *warnings)
{
	const char *quser = conf->queue_user ? conf->queue_user : conf->user;
	const char *qgroup = conf->queue_user ? NULL : conf->group;
	struct role roles[5];
	int problems = 0;

	use_log = starting;
	mode_warnings = 0;
	*warnings = 0;
	role_init(&roles[0], "master", NULL, NULL, true);
	check_master(&roles[0], conf);
	role_init(&roles[1], "queue process", quser, qgroup, true);
	check_queue(&roles[1], conf);
	/* What delivery cannot reach defers those routes' mail, what the
	 * lookup process cannot read fails AUTH; the rest works, so these
	 * are warnings, and the start goes on. */
	role_init(&roles[2], "delivery", conf->delivery_user, NULL, false);
	run_as(&roles[2], conf, check_delivery);
	role_init(&roles[3], "lookup process", conf->lookup_user, NULL, false);
	run_as(&roles[3], conf, check_lookup);
	role_init(&roles[4], "smtp worker", conf->user, conf->group, false);
	run_as(&roles[4], conf, check_smtp);
	/* Routes that name their own user (user=): as that user. */
	for (size_t i = 0; i < conf->nroutes; i++) {
		const char *u = conf->routes[i].user;
		struct role route;
		bool seen = false;

		for (size_t j = 0; u != NULL && j < i; j++)
			if (conf->routes[j].user != NULL &&
			    strcmp(conf->routes[j].user, u) == 0)
				seen = true;
		if (u == NULL || seen)
			continue;
		role_init(&route, "delivery", u, NULL, false);
		route.route_user = u;
		run_as(&route, conf, check_delivery);
		problems += route.problems;
		*warnings += route.warnings;
	}
	if (geteuid() == 0)
		check_modes(conf);
	for (size_t i = 0; i < ARRAY_LEN(roles); i++) {
		problems += roles[i].problems;
		*warnings += roles[i].warnings;
	}
	*warnings += mode_warnings;
	return problems;
}

/*
 * mkdir -p for every directory of path up to its last '/' (the last
 * component itself is not made unless path ends with '/').  Directories
 * created here are given to uid:gid when give is set; existing ones are
 * left as they are.
 */
int
check_make_parents(const char *dir, bool give, unsigned uid, unsigned gid)
{
	char *path = xstrdup(dir);

	for (char *p = path + 1; *p != '\0'; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(path, 0755) == 0) {
			if (give && chown(path, (uid_t)uid, (gid_t)gid) < 0) {
				log_error("chown %s: %s", path,
				    strerror(errno));
				free(path);
				return -1;
			}
		} else if (errno != EEXIST) {
			log_error("mkdir %s: %s", path,
			    strerror(errno));
			free(path);
			return -1;
		}
		*p = '/';
	}
	free(path);
	return 0;
}

/*
 * The fixed root of each maildir route (its path up to the first
 * variable) must be writable by the delivery user (the route's user=
 * when it names one), who delivers.  The directories that do not exist
 * yet are created here, while still root, and given to that user;
 * existing ones are left as the operator made them.
 */
int
check_prepare_maildirs(const struct mxconf *conf)
{
	bool give = geteuid() == 0;

	for (size_t i = 0; i < conf->nroutes; i++) {
		const struct route_conf *r = &conf->routes[i];
		const char *user = r->user ? r->user : conf->delivery_user;
		unsigned uid = 0, gid = 0;
		char cwd[PATH_MAX], *root, *var, *slash;
		int rc;

		if (r->action == NULL || strcmp(r->action, "maildir") != 0 ||
		    r->path == NULL)
			continue;
		if (give && (user == NULL ||
		    proc_lookup_user(user, NULL, &uid, &gid) < 0))
			return -1;
		if (r->path[0] == '/')
			root = xstrdup(r->path);
		else if (getcwd(cwd, sizeof(cwd)) == NULL)
			continue;
		else
			xasprintf(&root, "%s/%s", cwd, r->path);
		if ((var = strstr(root, "${")) != NULL)
			*var = '\0';
		if ((slash = strrchr(root, '/')) != NULL)
			slash[1] = '\0';
		rc = check_make_parents(root, give, uid, gid);
		free(root);
		if (rc < 0)
			return -1;
	}
	return 0;
}
