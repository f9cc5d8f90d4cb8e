/*
 * reply.c - SMTP reply parser; see reply.h.
 *
 * A reply is one or more lines "NNN-text" ending with "NNN text" (or a
 * bare "NNN"), every line with the same code (RFC 5321 4.2.1). The first
 * digit must be 2..5 and the second 0..5: anything else is not a reply
 * this client can act on, so it is an error rather than a guess.
 *
 * Invariants: r->text holds exactly n_lines '\n'-terminated line texts;
 * a line's text comes from bytes split at LF, so it never holds '\n'
 * itself. r->total never exceeds REPLY_MAX.
 *
 * Not done here: reading the socket, deciding what a code means for the
 * session (client.c), parsing EHLO keywords (client.c walks reply_line).
 */
#include "outbound/reply.h"

#include <string.h>

void reply_init(struct reply *r)
{
	r->code = 0;
	r->enhanced[0] = '\0';
	r->n_lines = 0;
	r->total = 0;
	strbuf_init(&r->text);
}

void reply_reset(struct reply *r)
{
	r->code = 0;
	r->enhanced[0] = '\0';
	r->n_lines = 0;
	r->total = 0;
	strbuf_reset(&r->text);
}

void reply_free(struct reply *r)
{
	strbuf_free(&r->text);
	reply_init(r);
}

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

/* 1 to 3 digits at s[*i]; advances *i. */
static bool digits_1_3(const char *s, size_t len, size_t *i)
{
	size_t start = *i;

	while (*i < len && *i - start < 3 && is_digit(s[*i]))
		(*i)++;
	return *i > start && (*i >= len || !is_digit(s[*i]));
}

/*
 * Length of the enhanced status code (RFC 3463: class "." subject "."
 * detail) at the start of text, when its class is cls and a space or the
 * end follows it; 0 when there is none.
 */
static size_t enhanced_len(const char *text, size_t len, char cls)
{
	size_t i = 0;

	/* RFC 3463 classes are 2, 4 and 5 only ("354 3.0.0" carries none). */
	if (len < 5 || text[0] != cls || text[1] != '.' || (cls != '2' && cls != '4' && cls != '5'))
		return 0;
	i = 2;
	if (!digits_1_3(text, len, &i) || i >= len || text[i] != '.')
		return 0;
	i++;
	if (!digits_1_3(text, len, &i))
		return 0;
	if (i < len && text[i] != ' ')
		return 0;
	return i;
}

enum reply_result reply_feed(struct reply *r, const char *line, size_t len, const char **err)
{
	int code;
	bool last;
	const char *text;
	size_t text_len;

	if (len > REPLY_LINE_MAX) {
		*err = "reply line too long";
		return REPLY_ERROR;
	}
	if (len > REPLY_MAX - r->total) {
		*err = "reply too long";
		return REPLY_ERROR;
	}
	r->total += len;
	if (len < 3 || line[0] < '2' || line[0] > '5' || line[1] < '0' || line[1] > '5' ||
	    !is_digit(line[2]) || (len > 3 && line[3] != ' ' && line[3] != '-')) {
		*err = "malformed reply line";
		return REPLY_ERROR;
	}
	code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
	if (r->n_lines > 0 && code != r->code) {
		*err = "reply code changes between lines";
		return REPLY_ERROR;
	}
	last = len == 3 || line[3] == ' ';
	text = len > 4 ? line + 4 : "";
	text_len = len > 4 ? len - 4 : 0;

	if (r->n_lines == 0) {
		size_t e = enhanced_len(text, text_len, line[0]);

		r->code = code;
		/* e <= 1 + 1 + 3 + 1 + 3 = 9 bytes, so it fits enhanced[16]. */
		memcpy(r->enhanced, text, e);
		r->enhanced[e] = '\0';
	}
	strbuf_append(&r->text, text, text_len);
	strbuf_putc(&r->text, '\n');
	if (strbuf_failed(&r->text)) {
		*err = "out of memory";
		return REPLY_ERROR;
	}
	r->n_lines++;
	return last ? REPLY_DONE : REPLY_MORE;
}

bool reply_line(const struct reply *r, size_t *pos, const char **text, size_t *len)
{
	const char *start, *nl;

	if (*pos >= r->text.len)
		return false;
	start = r->text.data + *pos;
	nl = memchr(start, '\n', r->text.len - *pos);
	/* Every line is '\n'-terminated (invariant), so nl is never NULL. */
	*text = start;
	*len = (size_t)(nl - start);
	*pos += *len + 1;
	return true;
}

/* Append n bytes of s to out[*o], leaving room for "..." and the NUL;
 * false when it did not all fit. */
static bool join_append(char *out, size_t outlen, size_t *o, const char *s, size_t n)
{
	size_t room = outlen - 4 - *o;
	bool fits = n <= room;

	if (!fits)
		n = room;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		out[(*o)++] = c < 0x20 || c == 0x7f ? ' ' : (char)c;
	}
	return fits;
}

/* The length of out[0..o) without a UTF-8 sequence cut short at its end. */
static size_t utf8_whole(const char *out, size_t o)
{
	size_t k = 0, need;
	unsigned char lead;

	while (k < o && k < 3 && ((unsigned char)out[o - 1 - k] & 0xc0) == 0x80)
		k++;
	if (k == o)
		return o;
	lead = (unsigned char)out[o - 1 - k];
	if (lead < 0xc0)
		return o;
	need = lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : 2;
	return need == k + 1 ? o : o - k - 1;
}

void reply_join_text(const struct reply *r, char *out, size_t outlen)
{
	size_t pos = 0, o = 0, elen = strlen(r->enhanced);
	const char *text;
	size_t len;
	bool first = true;

	if (outlen < 5) {
		if (outlen > 0)
			out[0] = '\0';
		return;
	}
	while (reply_line(r, &pos, &text, &len)) {
		/* "550-5.1.1 a" / "550 5.1.1 b": the code is in ds->enhanced already. */
		if (elen > 0 && len >= elen && memcmp(text, r->enhanced, elen) == 0 &&
		    (len == elen || text[elen] == ' ')) {
			text += elen;
			len -= elen;
			while (len > 0 && *text == ' ') {
				text++;
				len--;
			}
		}
		if ((!first && !join_append(out, outlen, &o, "; ", 2)) ||
		    !join_append(out, outlen, &o, text, len)) {
			o = utf8_whole(out, o);
			memcpy(out + o, "...", 3);
			o += 3;
			break;
		}
		first = false;
	}
	out[o] = '\0';
}
