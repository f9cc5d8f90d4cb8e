/*
 * dsn.h - delivery status notifications (RFC 3461, RFC 3464, RFC 6522):
 * composing the notice that goes back to a message's return path.
 *
 * One notice reports the recipients of one message that reached a state
 * in one attempt (failed, delayed, or delivered when NOTIFY=SUCCESS asked
 * for it). The queue decides who is reported and when; this module only
 * writes the message: a complete RFC 5322 message with CRLF line ends,
 *   multipart/report; report-type=delivery-status
 *     1. text/plain: what happened, for a person
 *     2. message/delivery-status: per-message and per-recipient fields
 *     3. text/rfc822-headers (the original's header), or message/rfc822
 *        (the whole original) when RET=FULL.
 * Nothing in it depends on the event loop, the spool or the config.
 */
#ifndef TERN_QUEUE_DSN_H
#define TERN_QUEUE_DSN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "outbound/status.h"
#include "util/strbuf.h"

enum dsn_action { DSN_ACTION_FAILED, DSN_ACTION_DELAYED, DSN_ACTION_DELIVERED };

struct dsn_rcpt {
	const char *addr;            /* the recipient as given at RCPT TO, without <> */
	const char *orcpt;           /* ORCPT= as given ("rfc822;bob@example.org", xtext), or NULL */
	enum dsn_action action;
	const struct delivery_status *status; /* never NULL: code, enhanced code, text,
					       * the remote's words or tern's */
	const char *remote_mta;      /* host name of the remote MTA that answered, or NULL */
	int64_t last_attempt_ms;     /* 0: no attempt recorded */
	int64_t will_retry_until_ms; /* delayed: when tern gives up; else 0 */
};

struct dsn_input {
	const char *reporting_mta;   /* server.hostname */
	const char *from_name;       /* report.dsn.from-name */
	const char *from_addr;       /* report.dsn.from-address */
	const char *to;              /* the original return path (never empty: no notice for <>) */
	const char *envid;           /* ENVID= (xtext) or NULL */
	uint64_t queue_id;           /* the original's queue id, for the text and Message-ID */
	int64_t arrival_ms;
	int64_t now_ms;
	bool ret_full;               /* RET=FULL: return the whole message, else its header */
	const char *body;            /* never NULL: the original as stored, CRLF lines */
	size_t body_len;
	const struct dsn_rcpt *rcpts;
	size_t n_rcpts;              /* at least 1 */
};

/*
 * Append the notice to out. *eight_bit is set when the notice holds 8-bit
 * bytes (an 8-bit original returned with RET=FULL, or UTF-8 in its
 * header), so it must be sent with BODY=8BITMIME. Returns 0, or ENOMEM
 * (out failed), or EINVAL (no recipient, no return path).
 */
int dsn_compose(const struct dsn_input *in, struct strbuf *out, bool *eight_bit);

#endif
