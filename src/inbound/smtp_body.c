/*
 * smtp_body.c - DATA and BDAT byte decoding; see smtp_body.h.
 *
 * A small state machine over line positions. Only a CRLF pair starts a
 * new line: after a bare LF the next byte is still mid-line, so "\n.\n",
 * "\n.\r\n" and "\r.\r" can never end a DATA message (SMTP smuggling).
 * The common case, the middle of a line, is two memchr calls per line,
 * and every byte is looked at once however the input is split into
 * reads: the scan never goes back over bytes already decoded.
 */
#include "inbound/smtp_body.h"

#include <string.h>
#include <strings.h>

enum {
	ST_BOL,    /* at the start of a line */
	ST_DOT,    /* DATA: a leading '.' read (and dropped) */
	ST_DOT_CR, /* DATA: ".\r" at the start of a line */
	ST_MID,    /* inside a line */
	ST_CR,     /* a CR read, held back until we know whether LF follows */
};

void smtp_body_begin(struct smtp_body *b, struct strbuf *out, uint64_t limit, bool dot,
		     bool check_bare)
{
	memset(b, 0, sizeof(*b));
	b->out = out;
	b->limit = limit;
	b->line_start = out->len;
	b->state = ST_BOL;
	b->dot = dot;
	b->check_bare = check_bare;
	b->in_header = true;
}

static void emit(struct smtp_body *b, const char *p, size_t n)
{
	b->size += n;
	if (b->size <= b->limit)
		strbuf_append(b->out, p, n);
}

static void bare(struct smtp_body *b)
{
	if (b->check_bare)
		b->bare = true;
}

/* A CRLF was just stored: look at the line in the header section. */
static void line_end(struct smtp_body *b)
{
	const char *line = b->out->data + b->line_start;
	size_t n = b->out->len - b->line_start;

	if (b->in_header && !smtp_body_oversize(b) && !strbuf_failed(b->out)) {
		if (n == 2)
			b->in_header = false;
		else if (n >= 9 && strncasecmp(line, "Received:", 9) == 0)
			b->received++;
	}
	b->line_start = b->out->len;
}

size_t smtp_body_feed(struct smtp_body *b, const char *buf, size_t len)
{
	const char *p = buf, *end = buf + len;

	while (p < end && !b->done) {
		switch (b->state) {
		case ST_BOL:
			if (b->dot && *p == '.') {
				b->state = ST_DOT;
				p++;
			} else {
				b->state = ST_MID;
			}
			break;
		case ST_DOT:
			if (*p == '\r') {
				b->state = ST_DOT_CR;
				p++;
			} else {
				b->state = ST_MID; /* the dot was stuffing */
			}
			break;
		case ST_DOT_CR:
			if (*p == '\n') {
				b->done = true;
				p++;
			} else {
				emit(b, "\r", 1);
				bare(b);
				b->state = ST_MID;
			}
			break;
		case ST_MID: {
			const char *nl = memchr(p, '\n', (size_t)(end - p));
			const char *stop = nl != NULL ? nl : end;
			const char *cr = memchr(p, '\r', (size_t)(stop - p));

			if (cr != NULL) {
				emit(b, p, (size_t)(cr - p));
				p = cr + 1;
				b->state = ST_CR;
				break;
			}
			emit(b, p, (size_t)(stop - p));
			p = stop;
			if (nl != NULL) {
				emit(b, "\n", 1);
				bare(b);
				p++;
			}
			break;
		}
		case ST_CR:
			if (*p == '\n') {
				emit(b, "\r\n", 2);
				p++;
				line_end(b);
				b->state = ST_BOL;
			} else {
				emit(b, "\r", 1);
				bare(b);
				b->state = ST_MID;
			}
			break;
		}
	}
	return (size_t)(p - buf);
}

void smtp_body_end(struct smtp_body *b)
{
	if (b->state == ST_CR) {
		emit(b, "\r", 1);
		bare(b);
		b->state = ST_MID;
	}
}
