/*
 * status.c - see status.h.
 */
#include "outbound/status.h"

#include <stdio.h>
#include <string.h>

static const char *const stage_names[STAGE_COUNT] = {
	[STAGE_CONNECT] = "connect", [STAGE_GREETING] = "greeting", [STAGE_TLS] = "tls",
	[STAGE_EHLO] = "ehlo",       [STAGE_MAIL_FROM] = "mail-from", [STAGE_RCPT_TO] = "rcpt-to",
	[STAGE_DATA] = "data",       [STAGE_DNS] = "dns",
};

void ds_set_local(struct delivery_status *ds, enum ds_class cls, enum client_stage stage,
		  const char *enhanced, const char *fmt, ...)
{
	va_list ap;

	ds->cls = cls;
	ds->stage = stage;
	ds->code = 0;
	ds->remote = 0;
	snprintf(ds->enhanced, sizeof(ds->enhanced), "%s", enhanced != NULL ? enhanced : "");
	va_start(ap, fmt);
	vsnprintf(ds->text, sizeof(ds->text), fmt, ap);
	va_end(ap);
}

const char *ds_stage_name(enum client_stage stage)
{
	return stage < STAGE_COUNT ? stage_names[stage] : "?";
}

const char *ds_class_name(enum ds_class cls)
{
	switch (cls) {
	case DS_OK: return "sent";
	case DS_TEMP: return "deferred";
	case DS_PERM: return "bounced";
	}
	return "?";
}
