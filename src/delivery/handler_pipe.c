/*
 * handler_pipe — run the route's command with the message on its stdin.
 *
 * The command is an argv array executed directly (never through a shell:
 * the arguments hold client-chosen text), in its own process group, with
 * a clean environment (pipe_env()), stdout on /dev/null, stderr captured,
 * the current directory "/", and no descriptor of ours.  stdin is the
 * message with LF line ends (format "raw") or the JSON document
 * (format "json", message_json.h).  The command runs once per job: every
 * recipient of the job gets its outcome.
 *
 * Outcomes (sysexits.h):
 *   exit 0                     delivered
 *   exit 75 (EX_TEMPFAIL)      deferred
 *   any other exit status      bounced, the first bytes of stderr in the
 *                              reply (and so in the bounce)
 *   killed by a signal         deferred (a crash or an OOM kill is not a
 *                              verdict on the message)
 *   cannot be executed         deferred (a program missing during a
 *                              deployment must not bounce mail)
 *   timeout                    the process group gets SIGTERM, SIGKILL
 *                              PIPE_KILL_GRACE seconds later; deferred
 * A command that exits without reading all of its input is judged by its
 * exit status alone.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/wait.h>

#include "delivery/delivery.h"
#include "delivery/handlers.h"
#include "common/log.h"
#include "delivery/message_json.h"
#include "common/util.h"

#define PIPE_STDERR_MAX   500      /* bytes of stderr kept for the reply */
#define PIPE_KILL_GRACE   5        /* seconds between SIGTERM and SIGKILL */
#define PIPE_POLL_MS      50       /* how often a running command is checked */
#define EX_TEMPFAIL_CODE  75

struct pipe_run {
	pid_t  pid;
	int    in_fd, err_fd;
	const char *input;
	size_t input_len, written;
	char   err[PIPE_STDERR_MAX + 1];
	size_t errlen;
	int    wstatus;
	bool   exited;
	bool   timed_out;
	int    exec_errno;             /* 0 when execve succeeded */
};

/* ---- environment ---- */

static void
env_add(char ***env, size_t *n, const char *name, const char *value)
{
	size_t len = 0;

	if (value == NULL)
		value = "";
	/* stop at the first control character */
	while (value[len] != '\0' && (unsigned char)value[len] >= 0x20 &&
	    value[len] != 0x7f)
		len++;
	*env = xrealloc(*env, (*n + 2) * sizeof(**env));
	xasprintf(&(*env)[*n], "%s=%.*s", name, (int)len, value);
	(*env)[++*n] = NULL;
}

char **
pipe_env(const struct delivery_job *job, const struct json_value *vars)
{
	char **env = NULL;
	size_t n = 0;
	struct buf all;

	buf_init(&all);
	buf_append(&all, "", 0);
	for (size_t i = 0; i < job->nrcpts; i++)
		buf_appendf(&all, "%s%s", i > 0 ? "," : "", job->rcpts[i].address);
	env_add(&env, &n, "PATH", "/usr/bin:/bin");
	env_add(&env, &n, "SENDER", job->sender);
	env_add(&env, &n, "RECIPIENT", job->nrcpts > 0 ?
	    job->rcpts[0].address : "");
	env_add(&env, &n, "RECIPIENTS", all.data);
	env_add(&env, &n, "QUEUE_ID", job->queue_id);
	env_add(&env, &n, "CLIENT_IP", job->client_ip);
	env_add(&env, &n, "HELO", job->helo);
	env_add(&env, &n, "PROTOCOL", job->protocol);
	if (job->auth_user != NULL)
		env_add(&env, &n, "AUTH_USER", job->auth_user);
	env_add(&env, &n, "ROUTE", job->route);
	for (size_t i = 0; vars != NULL && vars->type == JSON_OBJECT &&
	    i < vars->count; i++) {
		char name[128];
		size_t len = (size_t)snprintf(name, sizeof(name), "MXGATE_VAR_");

		/* capture names are [A-Za-z0-9_]; anything else becomes _ */
		for (const char *p = vars->keys[i]; *p != '\0' &&
		    len + 1 < sizeof(name); p++) {
			char c = *p;

			if (c >= 'a' && c <= 'z')
				c = (char)(c - 'a' + 'A');
			else if (!((c >= 'A' && c <= 'Z') ||
			    (c >= '0' && c <= '9')))
				c = '_';
			name[len++] = c;
		}
		name[len] = '\0';
		env_add(&env, &n, name, vars->items[i]->type == JSON_STRING ?
		    vars->items[i]->string : "");
	}
	buf_free(&all);
	return env;
}

void
pipe_env_free(char **env)
{
	for (size_t i = 0; env != NULL && env[i] != NULL; i++)
		free(env[i]);
	free(env);
}

/* ---- the child ---- */

static void
close_from(int lowest)
{
	if (close_range((unsigned)lowest, ~0U, 0) == 0)
		return;
	for (long fd = lowest, max = sysconf(_SC_OPEN_MAX); fd < max; fd++)
		close((int)fd);
}

/* In the forked child: never returns.  Failures before exec go back to
 * the parent through report (close-on-exec, so exec closes it). */
static void __attribute__((noreturn))
child_exec(char *const argv[], char *const env[], int in_fd, int err_fd,
    int report)
{
	sigset_t none;
	int devnull, e;

	setpgid(0, 0);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	signal(SIGPIPE, SIG_DFL);
	signal(SIGALRM, SIG_DFL);
	if ((devnull = open("/dev/null", O_WRONLY)) == -1 ||
	    dup2(in_fd, 0) == -1 || dup2(devnull, 1) == -1 ||
	    dup2(err_fd, 2) == -1 || chdir("/") == -1)
		goto fail;
	/* 0-2 are set; report is the only other descriptor we keep */
	if (report > 3 && close_range(3, (unsigned)report - 1, 0) == -1)
		for (int fd = 3; fd < report; fd++)
			close(fd);
	close_from(report + 1);
	execve(argv[0], argv, env);
fail:
	e = errno;
	if (write(report, &e, sizeof(e)) != (ssize_t)sizeof(e))
		_exit(127);
	_exit(127);
}

/* ---- the parent ---- */

static void
read_stderr(struct pipe_run *run)
{
	char scratch[4096];

	for (;;) {
		char *dst = run->errlen < PIPE_STDERR_MAX ? run->err + run->errlen :
		    scratch;
		size_t room = run->errlen < PIPE_STDERR_MAX ?
		    PIPE_STDERR_MAX - run->errlen : sizeof(scratch);
		ssize_t n = read(run->err_fd, dst, room);

		if (n > 0) {
			if (dst != scratch)
				run->errlen += (size_t)n;
			continue;
		}
		if (n == -1 && errno == EINTR)
			continue;
		if (n == 0 || errno != EAGAIN) {
			close(run->err_fd);
			run->err_fd = -1;
		}
		return;
	}
}

static void
write_stdin(struct pipe_run *run)
{
	while (run->written < run->input_len) {
		ssize_t n = write(run->in_fd, run->input + run->written,
		    run->input_len - run->written);

		if (n > 0) {
			run->written += (size_t)n;
			continue;
		}
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1 && errno == EAGAIN)
			return;
		break;          /* EPIPE: the command stopped reading */
	}
	close(run->in_fd);
	run->in_fd = -1;
}

static bool
reap(struct pipe_run *run, int flags)
{
	pid_t r;

	do
		r = waitpid(run->pid, &run->wstatus, flags);
	while (r == -1 && errno == EINTR);
	if (r == run->pid)
		run->exited = true;
	return run->exited;
}

/* SIGTERM to the whole group, SIGKILL after the grace period. */
static void
kill_group(struct pipe_run *run)
{
	uint64_t deadline;

	kill(-run->pid, SIGTERM);
	deadline = monotonic_ms() + PIPE_KILL_GRACE * 1000;
	while (!reap(run, WNOHANG) && monotonic_ms() < deadline)
		poll(NULL, 0, PIPE_POLL_MS);
	kill(-run->pid, SIGKILL);
	if (!run->exited)
		reap(run, 0);
}

/* Feed stdin, collect stderr, until the command exits or time is up. */
static void
supervise(struct pipe_run *run, unsigned timeout)
{
	uint64_t deadline = monotonic_ms() + (uint64_t)timeout * 1000;

	while (!reap(run, WNOHANG)) {
		struct pollfd pfd[2];
		nfds_t n = 0;
		uint64_t now = monotonic_ms();

		if (now >= deadline) {
			run->timed_out = true;
			kill_group(run);
			break;
		}
		if (run->in_fd != -1)
			pfd[n++] = (struct pollfd){ .fd = run->in_fd, .events = POLLOUT };
		if (run->err_fd != -1)
			pfd[n++] = (struct pollfd){ .fd = run->err_fd, .events = POLLIN };
		/* Short waits: the exit itself is noticed by waitpid. */
		poll(pfd, n, (int)(deadline - now < PIPE_POLL_MS ? deadline - now :
		    PIPE_POLL_MS));
		if (run->in_fd != -1)
			write_stdin(run);
		if (run->err_fd != -1)
			read_stderr(run);
	}
	/* What the command wrote before exiting; a background child that
	 * keeps stderr open does not hold us. */
	if (run->err_fd != -1)
		read_stderr(run);
}

static int
spawn(struct pipe_run *run, char *const argv[], char *const env[])
{
	int in[2] = { -1, -1 }, err[2] = { -1, -1 }, report[2] = { -1, -1 };
	ssize_t n;

	if (pipe2(in, O_CLOEXEC) == -1 || pipe2(err, O_CLOEXEC) == -1 ||
	    pipe2(report, O_CLOEXEC) == -1)
		goto fail;
	if ((run->pid = fork()) == -1)
		goto fail;
	if (run->pid == 0)
		child_exec(argv, env, in[0], err[1], report[1]);
	setpgid(run->pid, run->pid);    /* whoever runs first wins the race */
	close(in[0]);
	close(err[1]);
	close(report[1]);
	run->in_fd = in[1];
	run->err_fd = err[0];
	fd_set_nonblock(run->in_fd);
	fd_set_nonblock(run->err_fd);
	/* EOF at exec; an errno when exec failed. */
	do
		n = read(report[0], &run->exec_errno, sizeof(run->exec_errno));
	while (n == -1 && errno == EINTR);
	if (n != (ssize_t)sizeof(run->exec_errno))
		run->exec_errno = 0;
	close(report[0]);
	return 0;
fail:
	for (int i = 0; i < 2; i++) {
		if (in[i] != -1) close(in[i]);
		if (err[i] != -1) close(err[i]);
		if (report[i] != -1) close(report[i]);
	}
	return -1;
}

/* stderr as one line of text for the reply: trailing blanks dropped
 * (delivery_set() turns the inner newlines into spaces). */
static const char *
stderr_text(struct pipe_run *run)
{
	while (run->errlen > 0 && (run->err[run->errlen - 1] == '\n' ||
	    run->err[run->errlen - 1] == '\r' || run->err[run->errlen - 1] == ' '))
		run->errlen--;
	run->err[run->errlen] = '\0';
	return run->err;
}

static void
report_outcome(struct delivery_job *job, struct pipe_run *run,
    const char *prog, unsigned timeout)
{
	const char *err = stderr_text(run), *sep = run->errlen > 0 ? ": " : "";
	int st;

	if (run->exec_errno != 0)
		delivery_set_pending(job, DELIVERY_DEFER, "451 4.3.0 cannot "
		    "execute %s: %s", prog, strerror(run->exec_errno));
	else if (run->timed_out)
		delivery_set_pending(job, DELIVERY_DEFER, "451 4.4.7 command %s "
		    "timed out after %u seconds%s%s", prog, timeout, sep, err);
	else if (WIFSIGNALED(run->wstatus))
		delivery_set_pending(job, DELIVERY_DEFER, "451 4.3.0 command %s "
		    "killed by signal %d (%s)%s%s", prog, WTERMSIG(run->wstatus),
		    strsignal(WTERMSIG(run->wstatus)), sep, err);
	else if ((st = WEXITSTATUS(run->wstatus)) == 0)
		delivery_set_pending(job, DELIVERY_OK, "250 2.0.0 delivered to "
		    "command %s", prog);
	else if (st == EX_TEMPFAIL_CODE)
		delivery_set_pending(job, DELIVERY_DEFER, "451 4.3.0 command "
		    "exited with status 75 (EX_TEMPFAIL)%s%s", sep, err);
	else
		delivery_set_pending(job, DELIVERY_FAIL, "554 5.3.0 command "
		    "exited with status %d%s%s", st, sep, err);
}

/* argv from the "command" parameter: a non-empty array of strings whose
 * first element is an absolute path. */
static char **
command_argv(const struct json_value *params)
{
	const struct json_value *cmd = json_get(params, "command");
	char **argv;

	if (cmd == NULL || cmd->type != JSON_ARRAY || cmd->count == 0)
		return NULL;
	for (size_t i = 0; i < cmd->count; i++)
		if (cmd->items[i]->type != JSON_STRING)
			return NULL;
	if (cmd->items[0]->string[0] != '/')
		return NULL;
	argv = xcalloc(cmd->count + 1, sizeof(*argv));
	for (size_t i = 0; i < cmd->count; i++)
		argv[i] = cmd->items[i]->string;     /* borrowed */
	return argv;
}

/* The command's stdin: the message (LF) or the JSON document. */
static int
make_input(struct delivery_job *job, const struct json_value *params,
    struct buf *input)
{
	const char *format = json_get_string(params, "format"), *content;
	char err[512];

	if (format != NULL && strcmp(format, "json") == 0) {
		if (message_json_build(job, json_get(params, "vars"),
		    handler_attachments_dir(job, params), input, err,
		    sizeof(err)) == -1) {
			log_error("id=%s pipe: %s", job->queue_id, err);
			delivery_set_pending(job, DELIVERY_DEFER, "451 4.3.0 %s",
			    err);
			return -1;
		}
		return 0;
	}
	if ((content = delivery_content(job)) == NULL)
		return -1;
	crlf_to_lf(input, content, job->content_len);
	return 0;
}

int
handler_pipe(struct delivery_job *job, const struct json_value *params)
{
	struct pipe_run run = { .in_fd = -1, .err_fd = -1 };
	char **argv = command_argv(params), **env;
	long long timeout = PIPE_TIMEOUT;
	struct buf input;

	if (argv == NULL) {
		log_error("id=%s pipe: no usable \"command\" in the parameters",
		    job->queue_id);
		delivery_set_pending(job, DELIVERY_DEFER,
		    "4.3.5 pipe without a command");
		return -1;
	}
	strlcpy_mx(job->destination, argv[0], sizeof(job->destination));
	if (json_get_int(params, "timeout", &timeout) == -1 || timeout <= 0)
		timeout = PIPE_TIMEOUT;
	/* below the scheduler's hard limit, with room for the kill */
	if (timeout > DELIVERY_JOB_TIMEOUT - 2 * PIPE_KILL_GRACE)
		timeout = DELIVERY_JOB_TIMEOUT - 2 * PIPE_KILL_GRACE;
	buf_init(&input);
	if (make_input(job, params, &input) == -1) {
		free(argv);
		buf_free(&input);
		return -1;
	}
	env = pipe_env(job, json_get(params, "vars"));
	run.input = input.data != NULL ? input.data : "";
	run.input_len = input.len;
	if (spawn(&run, argv, env) == -1) {
		log_error("id=%s pipe: cannot start %s: %s", job->queue_id, argv[0],
		    strerror(errno));
		delivery_set_pending(job, DELIVERY_DEFER, "451 4.3.0 cannot start "
		    "%s: %s", argv[0], strerror(errno));
	} else {
		if (run.exec_errno == 0)
			supervise(&run, (unsigned)timeout);
		else
			reap(&run, 0);
		if (run.in_fd != -1)
			close(run.in_fd);
		if (run.err_fd != -1)
			close(run.err_fd);
		report_outcome(job, &run, argv[0], (unsigned)timeout);
	}
	pipe_env_free(env);
	buf_free(&input);
	free(argv);
	return 0;
}
