/*
 * ctl_admin — config, route test, passwd, reload (ctl_admin.h).
 */
#include <errno.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>
#include <sys/stat.h>

#include "common/config.h"
#include "ctl/ctl_admin.h"
#include "ctl/route_test.h"
#include "smtp/auth.h"

/* config: config.h, config_write_effective(). */
int
ctl_config(struct ctl *ctl, int argc, char **argv)
{
	bool changed_only = false;

	if (ctl_flag_args(ctl, argc, argv, "-d", &changed_only) != 0)
		return EXIT_USAGE;
	return config_write_effective(stdout, ctl->conf, changed_only) < 0 ?
	    1 : 0;
}

/* route test: see route_test.h. */
int
ctl_route_test(struct ctl *ctl, int argc, char **argv)
{
	return route_test_main(ctl->conf, argc, argv);
}

/* passwd */

/* One line from f, without its line end; -1 at end of file or error. */
static int
read_line(FILE *f, char *out, size_t size)
{
	size_t len;

	if (fgets(out, (int)size, f) == NULL)
		return -1;
	len = strlen(out);
	if (len > 0 && out[len - 1] != '\n' && !feof(f)) {
		explicit_bzero(out, size);
		errno = EMSGSIZE;
		return -1;
	}
	out[strcspn(out, "\r\n")] = '\0';
	return 0;
}

/* Prompt on the terminal with echo off. */
static int
prompt_password(const char *prompt, char *out, size_t size)
{
	struct termios old, quiet;
	int r;

	fputs(prompt, stderr);
	fflush(stderr);
	if (tcgetattr(STDIN_FILENO, &old) < 0)
		return -1;
	quiet = old;
	quiet.c_lflag &= ~(tcflag_t)ECHO;
	tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
	r = read_line(stdin, out, size);
	tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
	fputc('\n', stderr);
	return r;
}

/* From the terminal (twice), or the first line of stdin (scripts). */
static int
read_password(char *pass, size_t size)
{
	char again[1024];
	int r;

	if (!isatty(STDIN_FILENO))
		r = read_line(stdin, pass, size);
	else if ((r = prompt_password("Password: ", pass, size)) == 0 &&
	    (r = prompt_password("Again: ", again, sizeof(again))) == 0 &&
	    strcmp(pass, again) != 0) {
		fprintf(stderr, "mxgatectl: the passwords differ\n");
		explicit_bzero(again, sizeof(again));
		return -1;
	}
	explicit_bzero(again, sizeof(again));
	if (r < 0) {
		fprintf(stderr, "mxgatectl: no password read%s%s\n",
		    errno == EMSGSIZE ? ": " : "",
		    errno == EMSGSIZE ? "too long" : "");
		return -1;
	}
	if (pass[0] == '\0') {
		fprintf(stderr, "mxgatectl: empty password\n");
		return -1;
	}
	return 0;
}

int
ctl_passwd(struct ctl *ctl, int argc, char **argv)
{
	const char *user = NULL, *file = NULL;
	char pass[1024], hash[512], err[512];
	bool sha512 = false, existed;
	struct ctl_opt opts[] = { { "--file", NULL, &file },
	    { "--sha512", &sha512, NULL }, CTL_OPT_END };
	struct ctl_args a = { .opts = opts, .words = &user, .maxwords = 1 };
	struct passwd *pw;
	struct stat st;
	int r;

	if (ctl_args_parse(&a, argc, argv) < 0 || user == NULL)
		return ctl_usage(ctl);
	if (!auth_user_valid(user)) {
		fprintf(stderr, "mxgatectl: invalid user name (1 to 255 bytes, "
		    "no ':', space or control character)\n");
		return 1;
	}
	if (file == NULL) {
		if (ctl_load_config(ctl) == -1)
			return 1;
		if ((file = ctl->conf->auth_passwd_file) == NULL) {
			fprintf(stderr, "mxgatectl: the configuration has no "
			    "auth.passwd_file: name one with --file\n");
			return 1;
		}
	}
	if (read_password(pass, sizeof(pass)) == -1)
		return 1;
	r = auth_hash(sha512 ? "sha512" : "yescrypt", pass, hash, sizeof(hash));
	explicit_bzero(pass, sizeof(pass));
	if (r == -1) {
		fprintf(stderr, "mxgatectl: hashing: %s\n", strerror(errno));
		return 1;
	}
	existed = stat(file, &st) == 0;
	if (auth_passwd_set(file, user, hash, err, sizeof(err)) == -1) {
		fprintf(stderr, "mxgatectl: %s\n", err);
		return 1;
	}
	/* A new file (mode 0640) for the lookup process, which alone reads
	 * it: root's, its user's group. */
	if (!existed && geteuid() == 0 && (pw = getpwnam(ctl->conf != NULL &&
	    ctl->conf->lookup_user != NULL ? ctl->conf->lookup_user :
	    "mxgate-auth")) != NULL && chown(file, 0, pw->pw_gid) < 0)
		fprintf(stderr, "mxgatectl: %s: chown: %s\n", file,
		    strerror(errno));
	printf("%s: password of %s set\n", file, user);
	return 0;
}

/* The master's reload counter and outcome, from its title ("mxgated:
 * master (reload N loaded|refused)", master.c): -1 when pid is not an
 * mxgated master. */
static int
master_reloads(pid_t pid, bool *loaded)
{
	char path[64], title[256];
	unsigned n = 0;
	size_t len;
	FILE *fp;

	snprintf(path, sizeof(path), "/proc/%ld/cmdline", (long)pid);
	if ((fp = fopen(path, "r")) == NULL)
		return -1;
	len = fread(title, 1, sizeof(title) - 1, fp);
	fclose(fp);
	title[len] = '\0';
	if (strncmp(title, "mxgated: master", 15) != 0)
		return -1;
	*loaded = strstr(title, " loaded)") != NULL;
	if (sscanf(title, "mxgated: master (reload %u", &n) != 1)
		n = 0;
	return (int)n;
}

int
ctl_reload(struct ctl *ctl, int argc, char **argv)
{
	char line[32];
	long pid = 0;
	bool loaded = false;
	int before, now = -1;
	FILE *fp;

	(void)argc;
	(void)argv;
	if (ctl->conf->pid_file == NULL) {
		fprintf(stderr, "mxgatectl: %s has no server.pid_file: send"
		    " SIGHUP to the mxgated master process yourself\n",
		    ctl->conf->path);
		return 1;
	}
	if ((fp = fopen(ctl->conf->pid_file, "r")) == NULL ||
	    fgets(line, sizeof(line), fp) == NULL ||
	    (pid = strtol(line, NULL, 10)) <= 1) {
		fprintf(stderr, "mxgatectl: server.pid_file %s: %s; is mxgated"
		    " running?\n", ctl->conf->pid_file, fp == NULL ?
		    strerror(errno) : "no process id in it");
		if (fp != NULL)
			fclose(fp);
		return 1;
	}
	fclose(fp);
	if ((before = master_reloads((pid_t)pid, &loaded)) < 0) {
		fprintf(stderr, "mxgatectl: process %ld (server.pid_file %s) is"
		    " not an mxgated master: is mxgated running?\n", pid,
		    ctl->conf->pid_file);
		return 1;
	}
	if (kill((pid_t)pid, SIGHUP) < 0) {
		fprintf(stderr, "mxgatectl: kill -HUP %ld: %s\n", pid,
		    strerror(errno));
		return 1;
	}
	/* The checks fork a process per role, certificates load: seconds
	 * at most. */
	for (int i = 0; i < 600; i++) {
		if ((now = master_reloads((pid_t)pid, &loaded)) != before)
			break;
		usleep(50 * 1000);
	}
	if (now == before) {
		fprintf(stderr, "mxgatectl: mxgated %ld has not answered the"
		    " reload within 30 s: see its log\n", pid);
		return 1;
	}
	if (now < 0) {
		fprintf(stderr, "mxgatectl: mxgated %ld has gone\n", pid);
		return 1;
	}
	if (!loaded) {
		fprintf(stderr, "mxgatectl: mxgated %ld refused %s: nothing"
		    " changed; its log says why\n", pid, ctl->conf->path);
		return 1;
	}
	printf("mxgated %ld: %s loaded; new sessions use it\n", pid,
	    ctl->conf->path);
	return 0;
}
