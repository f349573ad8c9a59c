/*
 * route_test — `mxgatectl route test`: ask the configuration's routes what
 * they would do with a recipient, without a daemon (like `exim -bt`).
 *
 *   route test RCPT [--from SENDER] [--ip ADDR] [--helo NAME]
 *                   [--auth USER] [--tls]
 *       prints the routes that match, every variable, each action with
 *       its expanded parameters (the JSON stored in the queue), or the
 *       reply the client would get.  RCPT and SENDER are written with or
 *       without <>; "" or <> is the null sender (the default).  Defaults:
 *       --ip 192.0.2.1, --helo client.example, not authenticated, no TLS;
 *       ${queue_id} is 00000000000TEST0.  The address is parsed as the SMTP
 *       engine parses it (SMTPUTF8 allowed): a bad one gets the engine's
 *       "501 5.1.3" reply.
 *       Exit status: 0 accepted, 1 rejected, 2 bad usage.
 *
 *   route test --script FILE
 *       runs one test per line:
 *           RCPT [--from S] [--ip A] [--helo H] [--auth U] [--tls] => EXPECTED
 *       Blank lines and lines starting with "#" are skipped.  Words are
 *       separated by blanks; a "..." part keeps its blanks and quotes
 *       ("john smith"@example.test).  EXPECTED is either
 *           reject [CODE [X.Y.Z]]      refused (with this code and
 *                                      enhanced status code)
 *       or one or more of (all must hold)
 *           accept                     accepted
 *           route=NAME[,NAME...]       exactly these routes, in order
 *           action=ACTION[,ACTION...]  exactly these actions, in order
 *           var.NAME=VALUE             the first route's variable
 *           param.NAME=VALUE           a string parameter of the first
 *                                      route ("path", "url", "upstream")
 *       e.g.  support+42@help.example.com => route=tickets action=pipe var.ticket=42
 *             bob@evil.example => reject 550 5.1.1
 *       Each mismatch is reported as "FILE:LINE: ..."; then a count.
 *       Exit status: 0 when every test passed, 1 otherwise (a mismatch or
 *       a malformed line), 2 bad usage.
 */
#ifndef MXGATE_ROUTE_TEST_H
#define MXGATE_ROUTE_TEST_H

#include "common/config.h"

/* argv: the words after "route test". */
int route_test_main(const struct mxconf *conf, int argc, char **argv);

#endif
