/*
 * received.c - the Received: field; see received.h.
 *
 *   Received: from <helo> ([192.0.2.1])
 *   	(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384)
 *   	by <hostname> (tern) with ESMTPS id <session id>
 *   	for <rcpt@example.com>; Thu, 26 Nov 2026 10:00:00 +0000
 *
 * Only our own values and checked client text reach the header, so a
 * client cannot inject header lines or comments. The date is written by
 * hand: strftime's %a and %b follow the locale, RFC 5322 wants English.
 * The TLS comment (only under TLS) names OpenSSL's protocol and cipher,
 * which are tokens of our own library, never the client's text.
 */
#include "inbound/received.h"

#include <sys/socket.h>

#include "inbound/smtp_parse.h"

static void put_date(struct strbuf *out, time_t t)
{
	static const char days[7][4] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };
	static const char months[12][4] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
					    "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
	struct tm tm;
	long off, aoff;

	if (localtime_r(&t, &tm) == NULL) {
		strbuf_puts(out, "Thu, 01 Jan 1970 00:00:00 +0000");
		return;
	}
	off = tm.tm_gmtoff / 60;
	aoff = off < 0 ? -off : off;
	strbuf_printf(out, "%s, %02d %s %04d %02d:%02d:%02d %c%02ld%02ld",
		      days[tm.tm_wday % 7], tm.tm_mday, months[tm.tm_mon % 12], tm.tm_year + 1900,
		      tm.tm_hour, tm.tm_min, tm.tm_sec, off < 0 ? '-' : '+', aoff / 60, aoff % 60);
}

void received_write(struct strbuf *out, const struct received_info *ri)
{
	char ip[IPADDR_STRLEN];

	strbuf_puts(out, "Received: from ");
	if (smtp_text_safe(ri->helo, ri->helo_len))
		strbuf_append(out, ri->helo, ri->helo_len);
	else
		strbuf_puts(out, "[invalid]");
	if (ri->addr != NULL && ri->addr->family != 0) {
		ipaddr_format(ri->addr, ip, sizeof(ip));
		strbuf_printf(out, " ([%s%s])", ri->addr->family == AF_INET6 ? "IPv6:" : "", ip);
	}
	if (ri->tls != NULL)
		strbuf_printf(out, "\r\n\t(using %s)", ri->tls);
	strbuf_printf(out, "\r\n\tby %s (tern) with %s id %s", ri->hostname, ri->protocol, ri->id);
	if (ri->rcpt != NULL && smtp_text_safe(ri->rcpt, ri->rcpt_len)) {
		strbuf_puts(out, "\r\n\tfor <");
		strbuf_append(out, ri->rcpt, ri->rcpt_len);
		strbuf_puts(out, ">;");
	} else {
		strbuf_puts(out, ";");
	}
	strbuf_puts(out, "\r\n\t");
	put_date(out, ri->when);
	strbuf_puts(out, "\r\n");
}
