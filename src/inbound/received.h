/*
 * received.h - the Received: trace field the inbound session prepends to
 * every message it accepts (RFC 5321 4.4; private to src/inbound).
 */
#ifndef TERN_INBOUND_RECEIVED_H
#define TERN_INBOUND_RECEIVED_H

#include <stddef.h>
#include <time.h>

#include "util/ipaddr.h"
#include "util/strbuf.h"

struct received_info {
	const char *helo;           /* client's HELO/EHLO/LHLO name, as given */
	size_t helo_len;
	const struct ipaddr *addr;  /* client address; family 0 when not IP */
	const char *hostname;       /* ours: server.hostname */
	const char *protocol;       /* RFC 3848: "SMTP", "ESMTP", "ESMTPSA", "LMTP", ... */
	const char *tls;            /* "TLSv1.3 with cipher ..." under TLS, else NULL */
	const char *id;             /* session-unique id */
	const char *rcpt;           /* the recipient when there is exactly one, else NULL */
	size_t rcpt_len;
	time_t when;
};

/* Append the header, folded, CRLF-terminated. Client-supplied text (the
 * HELO name, the recipient) that is not smtp_text_safe is never copied:
 * the name becomes "[invalid]", the recipient is left out. */
void received_write(struct strbuf *out, const struct received_info *ri);

#endif
