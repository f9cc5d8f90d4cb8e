/*
 * status.h - the outcome of delivering to one recipient, carried from the
 * socket to the log line (and later the DSN): reply code, enhanced status
 * code, class and the remote's text, never an ad-hoc string to re-parse.
 */
#ifndef TERN_OUTBOUND_STATUS_H
#define TERN_OUTBOUND_STATUS_H

#include <stdarg.h>

enum ds_class { DS_OK, DS_TEMP, DS_PERM };

/* Where in the session it happened; also indexes per-stage timeouts. */
enum client_stage {
	STAGE_CONNECT,
	STAGE_GREETING,
	STAGE_TLS,
	STAGE_EHLO,
	STAGE_MAIL_FROM,
	STAGE_RCPT_TO,
	STAGE_DATA,
	STAGE_DNS,      /* finding the hosts and addresses; no session yet */
	STAGE_COUNT
};

struct delivery_status {
	enum ds_class cls;
	enum client_stage stage;
	int code;          /* SMTP reply code; 0 when no reply (connect failure, timeout, local) */
	char enhanced[16]; /* "4.4.2"; from the reply, else one tern chose; "" if none */
	char text[512];    /* the remote's reply text (multi-line joined with "; "), or tern's reason */
	int remote;        /* 1 when text is the remote's words, 0 when tern's */
};

/* Fill a status that tern decided (timeout, connect error, ...). */
void ds_set_local(struct delivery_status *ds, enum ds_class cls, enum client_stage stage,
		  const char *enhanced, const char *fmt, ...) __attribute__((format(printf, 5, 6)));
const char *ds_stage_name(enum client_stage stage);
const char *ds_class_name(enum ds_class cls); /* "sent", "deferred", "bounced" */

#endif
