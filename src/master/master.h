/*
 * master — the parent process.  Binds the listeners, forks and supervises
 * the smtp workers and the queue process, accepts connections, applies the
 * connection limits (total and per client IP) and passes each socket to the
 * least-loaded worker.  It never reads a byte a client sends.
 *
 * Supervision: a child that dies is logged and respawned with back-off; a
 * worker's death ends only its own sessions.  SIGTERM/SIGINT: the
 * listeners close, workers get shutdown_grace seconds to finish their
 * sessions, then the queue process commits what it holds and stops.
 *
 * master_main() returns the process exit status.
 */
#ifndef MXGATE_MASTER_H
#define MXGATE_MASTER_H

#include "common/config.h"

int master_main(struct mxconf *conf);

#endif
