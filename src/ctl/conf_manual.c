/*
 * conf_manual — print mxgate.conf(5), made from the configuration table
 * by config_write_manual() (config.h).  Not installed: `make manual`
 * writes its output to doc/mxgate.conf.5, which is committed, and
 * tests/unit/test_config fails when that page is out of date.
 *
 *   conf_manual > doc/mxgate.conf.5
 */
#include <stdio.h>

#include "common/config.h"

int
main(int argc, char **argv)
{
	(void)argv;
	if (argc != 1) {
		fprintf(stderr, "usage: conf_manual > mxgate.conf.5\n");
		return 2;
	}
	config_write_manual(stdout);
	if (fflush(stdout) != 0 || ferror(stdout)) {
		perror("conf_manual: stdout");
		return 1;
	}
	return 0;
}
