/*
 * audit — see audit.h.
 */
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include "common/log.h"
#include "ctl/audit.h"

void
audit_init(const char *format)
{
	enum log_format f;

	if (format != NULL && log_format_parse(format, &f) == 0)
		log_set_format(f);
}

/* The kernel's login uid: -1 when unset (a daemon, a container). */
static long long
login_uid(void)
{
	FILE *f = fopen("/proc/self/loginuid", "r");
	unsigned long long v;
	long long uid = -1;

	if (f == NULL)
		return -1;
	if (fscanf(f, "%llu", &v) == 1 && v != 4294967295ULL)
		uid = (long long)v;
	fclose(f);
	return uid;
}

void
audit_log(const char *action, const char *queue_id, long long nmsgs,
    long long nrcpt, const char *selection, const char *detail)
{
	struct passwd *pw = getpwuid(getuid());
	long long luid = login_uid();
	struct log_rec r;

	log_rec_begin(&r);
	if (queue_id != NULL)
		log_rec_str(&r, "id", queue_id);
	log_rec_str(&r, "event", "operator");
	log_rec_str(&r, "action", action);
	if (selection != NULL)
		log_rec_str(&r, "selection", selection);
	if (nmsgs >= 0)
		log_rec_num(&r, "messages", nmsgs);
	if (nrcpt >= 0)
		log_rec_num(&r, "nrcpt", nrcpt);
	log_rec_num(&r, "uid", (long long)getuid());
	log_rec_str(&r, "user", pw != NULL ? pw->pw_name : NULL);
	if (luid >= 0)
		log_rec_num(&r, "loginuid", luid);
	if (detail != NULL)
		log_rec_str(&r, "detail", detail);
	log_rec_syslog(&r, "mxgatectl", LOG_MAIL | LOG_NOTICE);
}
