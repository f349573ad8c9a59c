/*
 * proc — process roles, privilege dropping and process titles.
 *
 * proc_drop_privileges() switches, when started as root, to the given
 * user and group irrevocably (setgroups, setresgid, setresuid, then a
 * check that root cannot be regained); otherwise it does nothing.  The
 * roles call it through sandbox_enter() (sandbox.h), which adds the
 * chroot, the capabilities, no_new_privs and the seccomp filter.
 */
#ifndef MXGATE_PROC_H
#define MXGATE_PROC_H

#include <stdbool.h>

/* Call first thing in main(); makes argv's space reusable for titles. */
void proc_title_init(int argc, char **argv);
/* "mxgated: smtp" in ps(1) and in /proc/PID/comm. */
void proc_title_set(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * Block these signals and return a non-blocking signalfd that reports
 * them, so that each process handles signals in its event loop instead of
 * in handlers.  Fatal on failure.
 */
int proc_signalfd(const int *signals, int nsignals);

/* user NULL: nothing to drop.  Returns 0, or -1 after logging. */
int proc_drop_privileges(const char *user, const char *group);
/* The same for a user already looked up (after a chroot, where the user
 * database is out of reach). */
int proc_switch_user(const char *user, unsigned uid, unsigned gid);
/* The uid/gid the role would run as: for chown of the queue directory. */
int proc_lookup_user(const char *user, const char *group, unsigned *uid,
    unsigned *gid);

#endif
