/*
 * smtp_body.h - the message bytes after DATA or BDAT, decoded
 * incrementally as they arrive (private to src/inbound).
 *
 * DATA: only CRLF "." CRLF ends the message; a line's leading dot is
 * removed (RFC 5321 4.5.2). BDAT: the octets are taken as they are and
 * the session counts the chunk. Both: a CR or LF that is not part of a
 * CRLF pair ("bare") is recorded, the data is kept only up to the size
 * limit (the rest is counted, not stored), and Received: lines of the
 * header section are counted for loop detection.
 *
 * Nothing here rejects a message: the caller reads to the end and then
 * looks at the flags, so the client and server stay in step.
 */
#ifndef TERN_INBOUND_SMTP_BODY_H
#define TERN_INBOUND_SMTP_BODY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/strbuf.h"

struct smtp_body {
	struct strbuf *out;   /* appended to, while size <= limit */
	uint64_t limit;       /* most data bytes kept */
	uint64_t size;        /* data bytes seen, stored or not */
	size_t line_start;    /* offset in out of the line being read */
	unsigned received;    /* Received: lines in the header section */
	uint8_t state;
	bool dot;             /* DATA: dot-stuffed, ends at CRLF.CRLF */
	bool check_bare;      /* false for BODY=BINARYMIME */
	bool in_header;       /* no empty line seen yet */
	bool bare;            /* a bare CR or LF was seen */
	bool done;            /* DATA: the end marker was read */
};

void smtp_body_begin(struct smtp_body *b, struct strbuf *out, uint64_t limit, bool dot,
		     bool check_bare);
/* Decode up to len bytes; returns how many were used (fewer only when the
 * DATA end marker is reached: the rest is the next command). */
size_t smtp_body_feed(struct smtp_body *b, const char *p, size_t len);
/* BDAT LAST: the message ends here; a CR held back is bare. */
void smtp_body_end(struct smtp_body *b);

static inline bool smtp_body_oversize(const struct smtp_body *b)
{
	return b->size > b->limit;
}

#endif
