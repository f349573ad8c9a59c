/*
 * ctl_admin — the commands about the configuration and the daemon rather
 * than the queue: config (the effective configuration), route test
 * (route_test.h), passwd (an AUTH password into the passwd file) and
 * reload (SIGHUP to the master in server.pid_file, then wait for its
 * verdict in its process title).
 */
#ifndef MXGATE_CTL_ADMIN_H
#define MXGATE_CTL_ADMIN_H

#include "ctl/ctl.h"

int ctl_config(struct ctl *ctl, int argc, char **argv);
int ctl_route_test(struct ctl *ctl, int argc, char **argv);
int ctl_passwd(struct ctl *ctl, int argc, char **argv);
int ctl_reload(struct ctl *ctl, int argc, char **argv);

#endif
