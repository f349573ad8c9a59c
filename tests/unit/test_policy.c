/*
 * Unit tests of the policy delegation client: the request format, answer
 * parsing, addresses, and the asynchronous client against a small policy
 * server forked here on a unix socket (reuse, retry after the service
 * closed an idle connection, timeout, service down, cancel).
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>

#include "smtp/policy.h"
#include "common/util.h"
#include "unit.h"

static void
test_request_format(void)
{
	struct policy_request r = {
		.protocol_state = "RCPT", .protocol_name = "ESMTP",
		.helo_name = "client.example", .queue_id = "0123456789ABCDEF",
		.sender = "a@example.org", .recipient = "b@example.net",
		.recipient_count = 2, .client_address = "192.0.2.1",
		.client_port = 4321, .instance = "0123456789ABCDEF",
		.sasl_username = "evil\nrequest=x", .size = 1234,
	};
	struct buf b;

	buf_init(&b);
	policy_request_format(&r, &b);
	static const char head[] = "request=smtpd_access_policy\n"
	    "protocol_state=RCPT\nprotocol_name=ESMTP\n"
	    "helo_name=client.example\nqueue_id=0123456789ABCDEF\n"
	    "sender=a@example.org\nrecipient=b@example.net\n"
	    "recipient_count=2\nclient_address=192.0.2.1\n"
	    "client_name=unknown\nreverse_client_name=unknown\n"
	    "instance=0123456789ABCDEF\n";
	CHECK(strncmp(b.data, head, sizeof(head) - 1) == 0);
	CHECK(strstr(b.data, "\nsasl_username=evil request=x\n") != NULL);
	CHECK(strstr(b.data, "\nsize=1234\n") != NULL);
	CHECK(strstr(b.data, "\nclient_port=4321\n") != NULL);
	CHECK(strstr(b.data, "\nserver_port=\n") != NULL);
	/* Ends with exactly one empty line, and holds no other. */
	CHECK(b.len > 2 && strcmp(b.data + b.len - 2, "\n\n") == 0);
	CHECK(strstr(b.data, "\n\n") == b.data + b.len - 2);
	buf_free(&b);
}

static void
action_is(const char *action, int verdict, int code, const char *text)
{
	struct policy_answer a;

	memset(&a, 0, sizeof(a));
	if (policy_action_parse(action, &a) < 0) {
		printf("#   \"%s\" refused: %s\n", action, a.why);
		CHECK(0);
		return;
	}
	CHECK_INT(a.verdict, verdict);
	CHECK_INT(a.code, code);
	if (text != NULL)
		CHECK_STR(a.text, text);
}

static void
test_actions(void)
{
	struct policy_answer a;

	action_is("DUNNO", POLICY_CONTINUE, 0, NULL);
	action_is("dunno", POLICY_CONTINUE, 0, NULL);
	action_is("OK", POLICY_ACCEPT, 0, NULL);
	action_is("REJECT", POLICY_REJECT, 554, "5.7.1 Access denied");
	action_is("REJECT  go away  ", POLICY_REJECT, 554, "5.7.1 go away");
	action_is("REJECT 5.7.26 unauthenticated", POLICY_REJECT, 554,
	    "5.7.26 unauthenticated");
	action_is("DEFER", POLICY_TEMPFAIL, 450, "4.7.1 Try again later");
	action_is("DEFER_IF_PERMIT Service temporarily unavailable",
	    POLICY_TEMPFAIL, 450, "4.7.1 Service temporarily unavailable");
	action_is("450 4.2.0 greylisted, see http://x/", POLICY_TEMPFAIL, 450,
	    "4.2.0 greylisted, see http://x/");
	action_is("550 no such user", POLICY_REJECT, 550, "5.7.1 no such user");
	/* An enhanced code of the wrong class is not kept. */
	action_is("550 4.1.1 mixed", POLICY_REJECT, 550, "5.7.1 4.1.1 mixed");
	action_is("421 bye", POLICY_TEMPFAIL, 421, "4.7.1 bye");
	/* PREPEND: no opinion, and a header field for the message. */
	CHECK_INT(policy_action_parse("PREPEND X-Foo: bar  ", &a), 0);
	CHECK_INT(a.verdict, POLICY_CONTINUE);
	CHECK_STR(a.prepend, "X-Foo: bar");
	CHECK_INT(policy_action_parse("prepend Received-SPF: pass (ok) "
	    "client-ip=192.0.2.1;", &a), 0);
	CHECK_STR(a.prepend, "Received-SPF: pass (ok) client-ip=192.0.2.1;");
	CHECK_INT(policy_action_parse("DUNNO", &a), 0);
	CHECK_STR(a.prepend, "");
	/* Not a header field: malformed, so policy.default. */
	CHECK_INT(policy_action_parse("PREPEND", &a), -1);
	CHECK_INT(policy_action_parse("PREPEND no colon here", &a), -1);
	CHECK_INT(policy_action_parse("PREPEND : empty name", &a), -1);
	CHECK_INT(policy_action_parse("PREPEND X Bad: space in name", &a), -1);
	CHECK_INT(policy_action_parse("PREPEND X-A: b\rX-B: c", &a), -1);
	{
		char big[1100];
		memcpy(big, "PREPEND X-Big: ", 15);
		memset(big + 15, 'x', sizeof(big) - 16);
		big[sizeof(big) - 1] = '\0';
		CHECK_INT(policy_action_parse(big, &a), -1);
	}
	/* access(5) actions that leave the stage undecided. */
	CHECK_INT(policy_action_parse("WARN look at this", &a), 0);
	CHECK_INT(a.verdict, POLICY_CONTINUE);
	CHECK_INT(a.extra, POLICY_EXTRA_WARN);
	CHECK_STR(a.text, "look at this");
	CHECK_INT(policy_action_parse("info  noted ", &a), 0);
	CHECK_INT(a.verdict, POLICY_CONTINUE);
	CHECK_INT(a.extra, POLICY_EXTRA_INFO);
	CHECK_STR(a.text, "noted");
	CHECK_INT(policy_action_parse("DEFER_IF_REJECT later", &a), 0);
	CHECK_INT(a.verdict, POLICY_CONTINUE);
	CHECK_INT(a.extra, POLICY_EXTRA_DEFER_IF_REJECT);
	CHECK_INT(policy_action_parse("HOLD", &a), 0);
	CHECK_INT(a.verdict, POLICY_CONTINUE);
	CHECK_INT(a.extra, POLICY_EXTRA_HOLD);
	CHECK_STR(a.text, "");
	CHECK_INT(policy_action_parse("HOLD suspicious sender", &a), 0);
	CHECK_INT(a.extra, POLICY_EXTRA_HOLD);
	CHECK_STR(a.text, "suspicious sender");
	CHECK_INT(policy_action_parse("DISCARD spam trap", &a), 0);
	CHECK_INT(a.verdict, POLICY_CONTINUE);
	CHECK_INT(a.extra, POLICY_EXTRA_DISCARD);
	CHECK_STR(a.text, "spam trap");
	CHECK_INT(policy_action_parse("DUNNO", &a), 0);
	CHECK_INT(a.extra, POLICY_EXTRA_NONE);
	CHECK_INT(policy_action_parse("OK", &a), 0);
	CHECK_INT(a.verdict, POLICY_ACCEPT);
	CHECK_INT(a.extra, POLICY_EXTRA_NONE);
	CHECK_INT(policy_action_parse("REJECT", &a), 0);
	CHECK_INT(a.extra, POLICY_EXTRA_NONE);
	/* Postfix-only actions: refused, clearly. */
	CHECK_INT(policy_action_parse("FILTER smtp:[127.0.0.1]:10025", &a), -1);
	CHECK_STR(a.why, "action \"FILTER\" is not supported by mxgate "
	    "(see mxgate.conf(5))");
	CHECK_INT(policy_action_parse("REDIRECT a@example.org", &a), -1);
	CHECK_INT(policy_action_parse("BCC a@example.org", &a), -1);
	CHECK_INT(policy_action_parse("my_restriction_class", &a), -1);
	CHECK_STR(a.why, "action \"my_restriction_class\" is not supported "
	    "by mxgate (see mxgate.conf(5))");
	CHECK_INT(policy_action_parse("", &a), -1);
	CHECK_INT(policy_action_parse("250 fine", &a), -1);
	CHECK_INT(policy_action_parse("4500 x", &a), -1);
}

static void
test_answer_parsing(void)
{
	char action[128];
	char big[POLICY_ANSWER_MAX + 10];

	CHECK_INT(policy_answer_end("action=DUNNO\n", 13), 0);
	CHECK_INT(policy_answer_end("action=DUNNO\n\n", 14), 14);
	CHECK_INT(policy_answer_end("action=DUNNO\n\nextra", 19), 14);
	CHECK_INT(policy_answer_end("\n", 1), 1);
	CHECK_INT(policy_answer_end("a\0b\n\n", 5), -1);
	memset(big, 'x', sizeof(big));
	CHECK_INT(policy_answer_end(big, sizeof(big)), -1);
	CHECK_INT(policy_answer_action("foo=bar\naction=REJECT no\n\n", 26,
	    action, sizeof(action)), 0);
	CHECK_STR(action, "REJECT no");
	CHECK_INT(policy_answer_action("action=OK\r\n\r\n", 13, action,
	    sizeof(action)), 0);
	CHECK_STR(action, "OK");
	CHECK_INT(policy_answer_action("foo=bar\n\n", 9, action,
	    sizeof(action)), -1);
}

static void
test_addresses(void)
{
	char why[256];

	CHECK_INT(policy_address_check("unix:/run/policy.sock", why, sizeof(why)), 0);
	CHECK_INT(policy_address_check("inet:127.0.0.1:10023", why, sizeof(why)), 0);
	CHECK_INT(policy_address_check("inet:[::1]:10023", why, sizeof(why)), 0);
	CHECK_INT(policy_address_check("inet:localhost:10023", why, sizeof(why)), 0);
	CHECK_INT(policy_address_check("unix:relative", why, sizeof(why)), -1);
	CHECK_INT(policy_address_check("inet:127.0.0.1", why, sizeof(why)), -1);
	CHECK_INT(policy_address_check("inet:127.0.0.1:0", why, sizeof(why)), -1);
	CHECK_INT(policy_address_check("inet:127.0.0.1:70000", why, sizeof(why)), -1);
	CHECK_INT(policy_address_check("inet:policy.example:10023", why,
	    sizeof(why)), -1);
	CHECK_INT(policy_address_check("tcp:127.0.0.1:1", why, sizeof(why)), -1);
}

/* ---- a policy server, forked ---- */

static char sock_path[108];
static pid_t server_pid;

/* Answers by recipient: reject@ REJECT, slow@ after 1.5 s, bye@ answers
 * and closes, mute@ closes without answering, count@ 450 with the
 * connection and request numbers; anything else DUNNO. */
static void
serve_conn(int fd, int conn_no)
{
	char buf[8192];
	size_t len = 0;
	int req_no = 0;

	for (;;) {
		ssize_t n = read(fd, buf + len, sizeof(buf) - 1 - len);
		char *end, reply[256];
		if (n <= 0)
			return;
		len += (size_t)n;
		buf[len] = '\0';
		while ((end = strstr(buf, "\n\n")) != NULL) {
			*end = '\0';
			req_no++;
			const char *rcpt = strstr(buf, "\nrecipient=");
			rcpt = rcpt ? rcpt + 11 : "";
			bool bye = strncmp(rcpt, "bye@", 4) == 0;
			if (strncmp(rcpt, "mute@", 5) == 0)
				return;
			if (strncmp(rcpt, "slow@", 5) == 0)
				usleep(1500 * 1000);
			if (strncmp(rcpt, "reject@", 7) == 0)
				snprintf(reply, sizeof(reply), "action=REJECT no way\n\n");
			else if (strncmp(rcpt, "count@", 6) == 0)
				snprintf(reply, sizeof(reply), "action=450 4.7.1 "
				    "conn=%d req=%d\n\n", conn_no, req_no);
			else
				snprintf(reply, sizeof(reply), "action=DUNNO\n\n");
			if (write(fd, reply, strlen(reply)) < 0)
				return;
			if (bye)
				return;
			size_t used = (size_t)(end + 2 - buf);
			memmove(buf, buf + used, len - used);
			len -= used;
			buf[len] = '\0';
		}
	}
}

static void
server_start(void)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	int lfd;

	snprintf(sock_path, sizeof(sock_path), "/tmp/mxgate-policy-%d.sock",
	    (int)getpid());
	unlink(sock_path);
	strcpy(sun.sun_path, sock_path);
	lfd = socket(AF_UNIX, SOCK_STREAM, 0);
	if (bind(lfd, (struct sockaddr *)&sun, sizeof(sun)) < 0 ||
	    listen(lfd, 16) < 0) {
		perror("policy test server");
		exit(1);
	}
	server_pid = fork();
	if (server_pid == 0) {
		int conn_no = 0;
		signal(SIGCHLD, SIG_IGN);
		for (;;) {
			int fd = accept(lfd, NULL, NULL);
			if (fd < 0)
				continue;
			conn_no++;
			if (fork() == 0) {
				close(lfd);
				serve_conn(fd, conn_no);
				_exit(0);
			}
			close(fd);
		}
	}
	close(lfd);
}

static void
server_stop(void)
{
	kill(server_pid, SIGTERM);
	waitpid(server_pid, NULL, 0);
	unlink(sock_path);
}

struct got {
	int calls;
	struct policy_answer a;
};

static void
on_answer(void *ctx, const struct policy_answer *a)
{
	struct got *g = ctx;

	g->calls++;
	g->a = *a;
}

static void
drive(struct policy_client *c, int ms)
{
	uint64_t end = monotonic_ms() + (uint64_t)ms;

	while (policy_pending(c) > 0 && monotonic_ms() < end) {
		struct pollfd pfd = { .fd = policy_client_fd(c), .events = POLLIN };
		if (poll(&pfd, 1, 20) > 0)
			policy_client_dispatch(c);
		policy_client_tick(c, monotonic_ms());
	}
	/* Deliver what a last tick finished. */
	policy_client_dispatch(c);
}

static uint64_t
ask(struct policy_client *c, const char *rcpt, struct got *g)
{
	struct policy_request r = {
		.protocol_state = "RCPT", .protocol_name = "ESMTP",
		.client_address = "192.0.2.1", .recipient = rcpt,
	};

	memset(g, 0, sizeof(*g));
	return policy_query(c, &r, on_answer, g);
}

static void
test_client(void)
{
	char service[128];
	struct policy_client *c;
	struct got g[4];

	snprintf(service, sizeof(service), "unix:%s", sock_path);
	c = policy_client_new(service, 1000, "DEFER policy down");
	CHECK(c != NULL);
	if (c == NULL)
		return;

	ask(c, "someone@example.net", &g[0]);
	CHECK_INT(g[0].calls, 0);           /* never from inside the query */
	drive(c, 3000);
	CHECK_INT(g[0].calls, 1);
	CHECK_INT(g[0].a.verdict, POLICY_CONTINUE);
	CHECK(!g[0].a.is_default);

	ask(c, "reject@example.net", &g[0]);
	drive(c, 3000);
	CHECK_INT(g[0].a.verdict, POLICY_REJECT);
	CHECK_INT(g[0].a.code, 554);
	CHECK_STR(g[0].a.text, "5.7.1 no way");

	/* One request at a time on one connection, reused. */
	ask(c, "count@example.net", &g[0]);
	drive(c, 3000);
	ask(c, "count@example.net", &g[1]);
	drive(c, 3000);
	CHECK_STR(g[0].a.text, "4.7.1 conn=1 req=3");
	CHECK_STR(g[1].a.text, "4.7.1 conn=1 req=4");

	/* The service closes after answering: the next request, sent on the
	 * closed connection, is retried on a new one. */
	ask(c, "bye@example.net", &g[0]);
	drive(c, 3000);
	CHECK_INT(g[0].a.verdict, POLICY_CONTINUE);
	ask(c, "count@example.net", &g[1]);
	drive(c, 3000);
	CHECK_STR(g[1].a.text, "4.7.1 conn=2 req=1");

	/* Several at once: several connections, each answered. */
	ask(c, "reject@example.net", &g[0]);
	ask(c, "x@example.net", &g[1]);
	ask(c, "reject@example.net", &g[2]);
	drive(c, 3000);
	CHECK_INT(g[0].a.verdict, POLICY_REJECT);
	CHECK_INT(g[1].a.verdict, POLICY_CONTINUE);
	CHECK_INT(g[2].a.verdict, POLICY_REJECT);

	/* No answer in time: the default, and nothing more afterwards. */
	uint64_t t0 = monotonic_ms();
	ask(c, "slow@example.net", &g[0]);
	drive(c, 3000);
	CHECK(monotonic_ms() - t0 < 1400);
	CHECK_INT(g[0].calls, 1);
	CHECK(g[0].a.is_default);
	CHECK_INT(g[0].a.verdict, POLICY_TEMPFAIL);
	CHECK_STR(g[0].a.text, "4.7.1 policy down");

	/* Closed without an answer on a fresh connection: the default. */
	ask(c, "mute@example.net", &g[0]);
	drive(c, 3000);
	CHECK(g[0].a.is_default);

	/* Cancelled: never called back. */
	uint64_t id = ask(c, "x@example.net", &g[0]);
	policy_cancel(c, id);
	CHECK_INT(policy_pending(c), 0);
	usleep(100 * 1000);
	drive(c, 300);
	CHECK_INT(g[0].calls, 0);
	policy_client_free(c);
}

static void
test_service_down(void)
{
	struct policy_client *c = policy_client_new("unix:/nonexistent/policy",
	    1000, "DUNNO");
	struct got g;

	CHECK(c != NULL);
	if (c == NULL)
		return;
	ask(c, "x@example.net", &g);
	CHECK_INT(g.calls, 0);
	drive(c, 2000);
	CHECK_INT(g.calls, 1);
	CHECK(g.a.is_default);
	CHECK_INT(g.a.verdict, POLICY_CONTINUE);
	policy_client_free(c);

	/* A closed TCP port. */
	c = policy_client_new("inet:127.0.0.1:1", 1000, "450 4.3.0 later");
	ask(c, "x@example.net", &g);
	drive(c, 2000);
	CHECK_INT(g.calls, 1);
	CHECK_INT(g.a.code, 450);
	CHECK_STR(g.a.text, "4.3.0 later");
	policy_client_free(c);

	CHECK(policy_client_new("unix:/x", 1000, "BOGUS") == NULL);
}

int
main(void)
{
	signal(SIGPIPE, SIG_IGN);
	RUN(test_request_format);
	RUN(test_actions);
	RUN(test_answer_parsing);
	RUN(test_addresses);
	server_start();
	RUN(test_client);
	server_stop();
	RUN(test_service_down);
	return unit_done();
}
