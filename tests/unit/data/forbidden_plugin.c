/*
 * A plugin that breaks the smtp workers' seccomp filter on request, for
 * tests/integration/test_confinement.py: HELO or EHLO with the name
 * "forbidden.example" makes the worker call ptrace(2), which the filter
 * forbids, so the kernel kills the worker; the master must replace it
 * and the sessions of the other workers must go on.  Every other name
 * continues.  Never load it on a real server.
 */
#include <string.h>
#include <unistd.h>
#include <sys/syscall.h>

#include "mxgate/plugin.h"

static void
on_helo(void *state, void *ctx, const struct mxgate_session *s,
    struct mxgate_result *r)
{
	(void)state;
	(void)ctx;
	(void)r;
	if (strcmp(s->helo, "forbidden.example") == 0)
		syscall(SYS_ptrace, 0, 0, 0, 0);
}

static const struct mxgate_plugin forbidden = {
	.abi = MXGATE_PLUGIN_ABI,
	.name = "forbidden",
	.on_helo = on_helo,
};

const struct mxgate_plugin *
mxgate_plugin_register(void)
{
	return &forbidden;
}
