/*
 * reply.h - SMTP/LMTP replies as the outbound client reads them: lines in,
 * one parsed reply (code, enhanced status code, text lines) out.
 *
 * Private to src/outbound/. The client cuts lines off its input and feeds
 * them here one at a time; this file never sees the socket. Everything is
 * bounded: a line longer than REPLY_LINE_MAX or a reply longer than
 * REPLY_MAX is a protocol error, never a larger allocation.
 */
#ifndef TERN_OUTBOUND_REPLY_H
#define TERN_OUTBOUND_REPLY_H

#include <stdbool.h>
#include <stddef.h>

#include "util/strbuf.h"

#define REPLY_LINE_MAX 2048    /* bytes per line, line ending excluded */
#define REPLY_MAX (64 * 1024)  /* bytes per reply, all lines */

struct reply {
	int code;            /* 200..599; valid once reply_feed said REPLY_DONE */
	char enhanced[16];   /* "2.1.0" from the first line when its class matches, else "" */
	size_t n_lines;
	size_t total;        /* bytes fed so far, for the REPLY_MAX bound */
	struct strbuf text;  /* each line's text after "NNN-"/"NNN ", '\n'-terminated */
};

enum reply_result {
	REPLY_MORE,   /* a continuation line: feed the next one */
	REPLY_DONE,   /* the last line: the reply is complete */
	REPLY_ERROR,  /* malformed or too long; *err says why */
};

void reply_init(struct reply *r);
/* Forget the current reply, keeping the buffer for the next. */
void reply_reset(struct reply *r);
void reply_free(struct reply *r);

/* Feed one line, without its CRLF (or LF). Lines may hold any bytes. */
enum reply_result reply_feed(struct reply *r, const char *line, size_t len, const char **err);

/* Walk the text of each line in order: start with *pos = 0; returns false
 * after the last. The text is not NUL-terminated. */
bool reply_line(const struct reply *r, size_t *pos, const char **text, size_t *len);

/* The text of every line joined with "; ", for a delivery_status: the
 * enhanced code repeated at the start of a line is left out, control
 * characters become spaces, and text that does not fit out (outlen bytes,
 * NUL included) is cut at a character boundary and ends in "...". */
void reply_join_text(const struct reply *r, char *out, size_t outlen);

#endif
