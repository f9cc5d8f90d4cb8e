/*
 * fuzz_reply.c - libFuzzer harness for the outbound SMTP reply parser
 * (src/outbound/reply.c).
 *
 * The input is the server's side of a session. It is cut into lines the
 * way client.c's read_replies does (an evbuffer, lines ending in LF or
 * CRLF, none longer than REPLY_LINE_MAX) and every line goes to
 * reply_feed; a complete reply is checked, then reset, and so is a reply
 * that failed (where the client would drop the connection, this goes on,
 * to reach more of the input). The input is delivered three ways: in one
 * piece, in two pieces cut where its last byte says, and in small pieces
 * of a size its first byte picks. All three must give the same replies:
 * partial lines are only ever waited for, never parsed. (An unfinished
 * line is waited for up to REPLY_LINE_MAX + 1 bytes, the last of which
 * may be the CR of a CRLF still on its way; client.c gives up one byte
 * earlier, so there a line of exactly REPLY_LINE_MAX bytes is refused
 * when its CR and LF arrive in different reads.)
 *
 * Invariants, for every input:
 * - reply_feed accepts a line exactly when it has the form RFC 5321 4.2
 *   gives ("NNN", "NNN text" or "NNN-text", first digit 2..5, second
 *   0..5, the same code on every line) and fits the bounds of reply.h;
 *   otherwise it fails with a message. It says DONE exactly on the last
 *   line ("NNN" or "NNN ").
 * - code is 200..599 and is the code of the lines; total stays within
 *   REPLY_MAX; n_lines counts the lines; text holds each line's text
 *   '\n'-terminated and NUL-terminated after its length, and reply_line
 *   walks exactly those lines.
 * - enhanced is NUL-terminated inside its buffer and is either "" or the
 *   well-formed code (class "." 1*3DIGIT "." 1*3DIGIT, class the reply's
 *   first digit) that starts the first line's text, followed by a space
 *   or the end; when the first line starts so, it is not "".
 * - reply_join_text, into buffers of exactly outlen bytes (ASan sees one
 *   byte too many), writes the lines joined with "; ", without the
 *   repeated enhanced code, control bytes as spaces; when that does not
 *   fit, a prefix of it ending in "..." that never splits a UTF-8
 *   character of a valid UTF-8 text.
 *
 * Not covered here: what client.c does with a reply (its state machine
 * and EHLO keyword parsing are static to it).
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "outbound/reply.h"
#include "util/strbuf.h"

static void fail(int line, const char *what)
{
	fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, line, what);
	abort();
}

#define check(ok) ((ok) ? (void)0 : fail(__LINE__, #ok))

struct reader {
	struct evbuffer *in;
	struct reply r;
	struct strbuf texts;  /* our copy of the current reply's line texts, '\n'-terminated */
	struct strbuf first;  /* the current reply's first line */
	size_t fed;           /* bytes fed to the current reply */
	size_t lines;         /* lines fed to the current reply */
	bool skipping;        /* dropping the rest of an over-long line */
	bool deep;            /* check reply_join_text too (one delivery is enough) */
	struct strbuf log;    /* what happened, to compare the three deliveries */
};

static void reader_init(struct reader *rd)
{
	rd->in = evbuffer_new();
	check(rd->in != NULL);
	reply_init(&rd->r);
	strbuf_init(&rd->texts);
	strbuf_init(&rd->first);
	strbuf_init(&rd->log);
	rd->fed = 0;
	rd->lines = 0;
	rd->skipping = false;
	rd->deep = false;
}

static void reader_free(struct reader *rd)
{
	evbuffer_free(rd->in);
	reply_free(&rd->r);
	strbuf_free(&rd->texts);
	strbuf_free(&rd->first);
	strbuf_free(&rd->log);
}

static void reader_reset(struct reader *rd)
{
	reply_reset(&rd->r);
	strbuf_reset(&rd->texts);
	strbuf_reset(&rd->first);
	rd->fed = 0;
	rd->lines = 0;
}

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

/* 1 to 3 digits at s[*i], and no fourth. */
static bool digits_1_3(const char *s, size_t len, size_t *i)
{
	size_t n = 0;

	while (*i + n < len && is_digit(s[*i + n]))
		n++;
	*i += n;
	return n >= 1 && n <= 3;
}

/* Length of a well-formed enhanced code of class cls that starts text
 * and is followed by a space or the end; 0 when there is none. */
static size_t enhanced_at(const char *text, size_t len, char cls)
{
	size_t i = 2;

	if (len < 2 || text[0] != cls || text[1] != '.')
		return 0;
	if (!digits_1_3(text, len, &i) || i >= len || text[i] != '.')
		return 0;
	i++;
	if (!digits_1_3(text, len, &i) || (i < len && text[i] != ' '))
		return 0;
	return i;
}

/* Is s (len bytes) valid UTF-8? Overlongs and surrogates are not. */
static bool utf8_valid(const unsigned char *s, size_t len)
{
	for (size_t i = 0; i < len;) {
		unsigned char c = s[i];
		size_t n;
		uint32_t cp;

		if (c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf)
			n = 2, cp = c & 0x1f;
		else if (c >= 0xe0 && c <= 0xef)
			n = 3, cp = c & 0x0f;
		else if (c >= 0xf0 && c <= 0xf4)
			n = 4, cp = c & 0x07;
		else
			return false;
		if (len - i < n)
			return false;
		for (size_t k = 1; k < n; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return false;
			cp = cp << 6 | (s[i + k] & 0x3f);
		}
		if ((n == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
		    (n == 4 && (cp < 0x10000 || cp > 0x10ffff)))
			return false;
		i += n;
	}
	return true;
}

/* What reply_join_text should give with all the room it wants. */
static void join_reference(const struct reader *rd, struct strbuf *out)
{
	const char *p = rd->texts.data, *end = p + rd->texts.len;
	size_t elen = strlen(rd->r.enhanced);

	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *t = p;
		size_t n;

		check(nl != NULL);
		n = (size_t)(nl - p);
		if (elen > 0 && n >= elen && memcmp(t, rd->r.enhanced, elen) == 0 &&
		    (n == elen || t[elen] == ' ')) {
			t += elen;
			n -= elen;
			while (n > 0 && *t == ' ') {
				t++;
				n--;
			}
		}
		if (p != rd->texts.data)
			strbuf_append(out, "; ", 2);
		for (size_t i = 0; i < n; i++) {
			unsigned char c = (unsigned char)t[i];

			strbuf_putc(out, c < 0x20 || c == 0x7f ? ' ' : (char)c);
		}
		p = nl + 1;
	}
	check(!strbuf_failed(out));
}

static void check_join(const struct reader *rd)
{
	static const size_t sizes[] = { 0, 1, 4, 5, 6, 8, 9, 16, 64, 512 };
	struct strbuf ref;
	bool valid;

	strbuf_init(&ref);
	join_reference(rd, &ref);
	valid = utf8_valid((const unsigned char *)ref.data, ref.len);
	for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]) + 3; k++) {
		/* Also the sizes where it just fits and just does not. */
		size_t outlen = k < sizeof(sizes) / sizeof(sizes[0]) ? sizes[k] :
				ref.len + 2 + (k - sizeof(sizes) / sizeof(sizes[0]));
		char *out = malloc(outlen);
		size_t o;

		check(out != NULL || outlen == 0);
		reply_join_text(&rd->r, out, outlen);
		if (outlen == 0) {
			free(out);
			continue;
		}
		o = strnlen(out, outlen);
		check(o < outlen);
		if (outlen < 5) {
			check(o == 0);
		} else if (ref.len <= outlen - 4) {
			check(o == ref.len && (o == 0 || memcmp(out, ref.data, o) == 0));
		} else {
			/* Cut: a prefix, less at most one whole character, then "...". */
			check(o >= 3 && memcmp(out + o - 3, "...", 3) == 0);
			o -= 3;
			check(o <= outlen - 4 && o + 4 >= outlen - 4);
			check(memcmp(out, ref.data, o) == 0);
			if (valid)
				check(utf8_valid((const unsigned char *)out, o));
		}
		free(out);
	}
	strbuf_free(&ref);
}

/* The reply as the parser holds it, after a line it accepted; its text
 * line by line only once it is complete (quadratic otherwise). */
static void check_reply(const struct reader *rd, bool done)
{
	const struct reply *r = &rd->r;
	size_t elen = strnlen(r->enhanced, sizeof(r->enhanced));
	size_t pos = 0, n = 0, tpos = 0, want;
	const char *text;
	size_t len;

	check(r->code >= 200 && r->code <= 599 && r->code % 100 / 10 <= 5);
	check(r->code / 100 == rd->first.data[0] - '0');
	check(r->total == rd->fed && r->total <= REPLY_MAX);
	check(r->n_lines == rd->lines && r->text.len == rd->texts.len);
	check(r->text.data[r->text.len] == '\0');

	check(elen < sizeof(r->enhanced));
	text = rd->first.len > 4 ? rd->first.data + 4 : "";
	len = rd->first.len > 4 ? rd->first.len - 4 : 0;
	want = enhanced_at(text, len, rd->first.data[0]);
	check(elen == want && memcmp(r->enhanced, text, elen) == 0);

	if (!done)
		return;
	check(memcmp(r->text.data, rd->texts.data, r->text.len) == 0);
	while (reply_line(r, &pos, &text, &len)) {
		check(text == r->text.data + tpos && tpos + len < r->text.len);
		check(memchr(text, '\n', len) == NULL && text[len] == '\n');
		tpos += len + 1;
		n++;
	}
	check(n == r->n_lines && n == rd->lines && tpos == r->text.len);
}

/* Does line have the form of an SMTP reply line, continuing the reply? */
static bool line_ok(const struct reader *rd, const char *line, size_t len)
{
	if (len > REPLY_LINE_MAX || rd->fed + len > REPLY_MAX || len < 3)
		return false;
	if (line[0] < '2' || line[0] > '5' || line[1] < '0' || line[1] > '5' || !is_digit(line[2]))
		return false;
	if (len > 3 && line[3] != ' ' && line[3] != '-')
		return false;
	return rd->first.len == 0 || memcmp(line, rd->first.data, 3) == 0;
}

static void feed_line(struct reader *rd, const char *line, size_t len)
{
	bool ok = line_ok(rd, line, len);
	bool last = len == 3 || (len > 3 && line[3] == ' ');
	const char *err = NULL;
	enum reply_result res = reply_feed(&rd->r, line, len, &err);

	if (!ok) {
		check(res == REPLY_ERROR && err != NULL && err[0] != '\0');
		strbuf_printf(&rd->log, "E %s\n", err);
		reader_reset(rd);
		return;
	}
	check(res == (last ? REPLY_DONE : REPLY_MORE));
	if (rd->first.len == 0)
		strbuf_append(&rd->first, line, len);
	if (len > 4)
		strbuf_append(&rd->texts, line + 4, len - 4);
	strbuf_putc(&rd->texts, '\n');
	check(!strbuf_failed(&rd->texts) && !strbuf_failed(&rd->first));
	rd->fed += len;
	rd->lines++;
	check_reply(rd, res == REPLY_DONE);
	if (res == REPLY_DONE) {
		if (rd->deep)
			check_join(rd);
		strbuf_printf(&rd->log, "D %d [%s] %zu ", rd->r.code, rd->r.enhanced, rd->r.n_lines);
		strbuf_append(&rd->log, rd->texts.data, rd->texts.len);
		reader_reset(rd);
	}
}

/*
 * Cut whole lines off the input buffer, as client.c does. A line with no
 * end yet is waited for while it might still fit: REPLY_LINE_MAX bytes
 * plus the CR of a CRLF whose LF is still to come.
 */
static void read_lines(struct reader *rd)
{
	static char line[REPLY_LINE_MAX + 1];

	for (;;) {
		size_t eol_len = 0, len;
		struct evbuffer_ptr p = evbuffer_search_eol(rd->in, NULL, &eol_len,
							     EVBUFFER_EOL_CRLF);

		if (rd->skipping) {
			if (p.pos < 0) {
				evbuffer_drain(rd->in, evbuffer_get_length(rd->in));
				return;
			}
			evbuffer_drain(rd->in, (size_t)p.pos + eol_len);
			rd->skipping = false;
			continue;
		}
		if (p.pos < 0) {
			if (evbuffer_get_length(rd->in) <= REPLY_LINE_MAX + 1)
				return;
			strbuf_puts(&rd->log, "L\n");
			reader_reset(rd);
			rd->skipping = true;
			continue;
		}
		len = (size_t)p.pos;
		if (len > REPLY_LINE_MAX) {
			strbuf_puts(&rd->log, "L\n");
			reader_reset(rd);
			evbuffer_drain(rd->in, len + eol_len);
			continue;
		}
		check(evbuffer_remove(rd->in, line, len) == (int)len);
		evbuffer_drain(rd->in, eol_len);
		feed_line(rd, line, len);
	}
}

static void deliver(struct reader *rd, const uint8_t *data, size_t size, size_t step)
{
	for (size_t i = 0; i < size; i += step) {
		size_t n = size - i < step ? size - i : step;

		check(evbuffer_add(rd->in, data + i, n) == 0);
		read_lines(rd);
	}
	/* What is left: a reply without its last line, a line without its end. */
	strbuf_printf(&rd->log, "END %zu %zu %d\n", rd->r.n_lines,
		      evbuffer_get_length(rd->in), rd->skipping);
	check(!strbuf_failed(&rd->log));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct reader whole, two, small;
	size_t cut;

	if (size == 0)
		return 0;
	reader_init(&whole);
	reader_init(&two);
	reader_init(&small);
	whole.deep = true;

	deliver(&whole, data, size, size);

	cut = (size_t)data[size - 1] * size / 255;
	check(evbuffer_add(two.in, data, cut) == 0);
	read_lines(&two);
	deliver(&two, data + cut, size - cut, size - cut != 0 ? size - cut : 1);

	deliver(&small, data, size, 1 + data[0] % 16u);

	check(whole.log.len == two.log.len && memcmp(whole.log.data, two.log.data, whole.log.len) == 0);
	check(whole.log.len == small.log.len &&
	      memcmp(whole.log.data, small.log.data, whole.log.len) == 0);

	reader_free(&whole);
	reader_free(&two);
	reader_free(&small);
	return 0;
}
