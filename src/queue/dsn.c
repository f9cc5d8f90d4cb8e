/*
 * dsn.c - the delivery status notification as a message: an RFC 5322
 * header, an RFC 6522 multipart/report holding a note for a person, the
 * RFC 3464 delivery-status report and the original (or its header).
 *
 * Invariants of what it writes:
 *  - every line tern writes ends with CRLF and holds at most LINE_HARD
 *    bytes; where tern picks the breaks, lines stay within LINE_SOFT when
 *    there is a space to break at (the original's lines are its own);
 *  - the note and the report are printable 7-bit ASCII whatever the remote
 *    said: its reply text is flattened onto one logical line (CR, LF and
 *    tabs become spaces, other controls and 8-bit bytes '?') and folded;
 *  - the boundary occurs nowhere in what it encloses, so no original can
 *    end a part early or forge one.
 *
 * It deliberately does not:
 *  - decide who is reported or when (notify.c);
 *  - encode the original: it goes back byte for byte as stored, an 8-bit
 *    one labelled 8bit and reported through *eight_bit;
 *  - write message/global-delivery-status (RFC 6533): a recipient address
 *    in UTF-8 appears in the report and the note as its 7-bit
 *    utf-8-addr-xtext form instead.
 */
#include "queue/dsn.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "util/base64.h"

/* RFC 5322 §2.1.1: lines SHOULD stay within 78 characters and MUST
 * within 998, CRLF excluded. */
#define LINE_SOFT 78
#define LINE_HARD 998

/* From and To addresses cannot be folded; cut at twice the longest valid
 * path (RFC 5321 §4.5.3.1.3) so that even a broken one leaves the line
 * legal. */
#define ADDR_MAX 512
/* A configured display name is cut here, at a character boundary. */
#define DISPLAY_NAME_MAX 200
/* RFC 2047 §2: an encoded-word is at most 75 characters; 45 bytes make 60
 * of base64, plus the 12 of "=?utf-8?b?" and "?=". */
#define EWORD_BYTES 45
/* An RFC 5322 date, with room for years of any width. */
#define DATE_MAX 64
/* "=_tern_" + 16 + "_" + 16 + "_" + 8, NUL: under RFC 2046's 70. */
#define BOUNDARY_MAX 56

static const char *const action_names[] = {
	[DSN_ACTION_FAILED] = "failed",
	[DSN_ACTION_DELAYED] = "delayed",
	[DSN_ACTION_DELIVERED] = "delivered",
};

/* ---- dates ---- */

/* RFC 5322 §3.3 date-time in UTC, with English names whatever the locale. */
static void format_date(int64_t ms, char *out, size_t outlen)
{
	static const char days[7][4] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };
	static const char months[12][4] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
					    "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
	time_t t = (time_t)(ms / 1000);
	struct tm tm;

	/* Fails only past the years struct tm can count, which no stored
	 * time reaches; the epoch keeps the field well formed. */
	if (gmtime_r(&t, &tm) == NULL) {
		t = 0;
		gmtime_r(&t, &tm);
	}
	snprintf(out, outlen, "%s, %02d %s %04ld %02d:%02d:%02d +0000", days[tm.tm_wday],
		 tm.tm_mday, months[tm.tm_mon], (long)tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
		 tm.tm_sec);
}

/* ---- wrapped, sanitised text ---- */

static bool is_break(unsigned char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/*
 * Text written word by word. Runs of spaces, tabs, CR and LF between
 * words become one space, or a line break followed by indent when the
 * next word would pass LINE_SOFT; other controls and 8-bit bytes become
 * '?'. A word longer than a line is cut only at LINE_HARD. With indent
 * " " a break is an RFC 5322 fold: unfolding gives the single-spaced text
 * back. Consecutive wrap_put calls continue one another: text glued
 * across two calls stays one word.
 */
struct wrap {
	struct strbuf *sb;
	const char *indent;
	size_t indent_len;
	size_t col;
	bool started; /* a word was written: later breaks owe a space */
	bool gap;     /* a space is owed before the next word */
};

static void wrap_begin(struct wrap *w, struct strbuf *sb, size_t col, const char *indent)
{
	w->sb = sb;
	w->indent = indent;
	w->indent_len = strlen(indent);
	w->col = col;
	w->started = false;
	w->gap = false;
}

static void wrap_newline(struct wrap *w)
{
	strbuf_puts(w->sb, "\r\n");
	strbuf_puts(w->sb, w->indent);
	w->col = w->indent_len;
}

static void wrap_put(struct wrap *w, const char *s, size_t len)
{
	size_t i = 0;

	while (i < len) {
		size_t end = i;

		if (is_break((unsigned char)s[i])) {
			w->gap = w->started;
			i++;
			continue;
		}
		while (end < len && !is_break((unsigned char)s[end]))
			end++;
		if (w->gap) {
			if (w->col + 1 + (end - i) > LINE_SOFT && w->col > w->indent_len) {
				wrap_newline(w);
			} else {
				strbuf_putc(w->sb, ' ');
				w->col++;
			}
			w->gap = false;
		}
		for (; i < end; i++) {
			unsigned char c = (unsigned char)s[i];

			if (w->col >= LINE_HARD)
				wrap_newline(w);
			strbuf_putc(w->sb, c > 0x20 && c < 0x7f ? (char)c : '?');
			w->col++;
		}
		w->started = true;
	}
}

static void wrap_puts(struct wrap *w, const char *s)
{
	wrap_put(w, s, strlen(s));
}

static bool is_ascii(const char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s >= 0x80)
			return false;
	return true;
}

/* One UTF-8 character at s: its code point and length, or U+FFFD and 1
 * for a byte that does not start a well-formed one. */
static size_t utf8_next(const unsigned char *s, uint32_t *cp)
{
	size_t n;
	uint32_t min;

	if (s[0] < 0x80) {
		*cp = s[0];
		return 1;
	}
	if ((s[0] & 0xe0) == 0xc0) {
		n = 2, min = 0x80, *cp = s[0] & 0x1fu;
	} else if ((s[0] & 0xf0) == 0xe0) {
		n = 3, min = 0x800, *cp = s[0] & 0x0fu;
	} else if ((s[0] & 0xf8) == 0xf0) {
		n = 4, min = 0x10000, *cp = s[0] & 0x07u;
	} else {
		*cp = 0xfffd;
		return 1;
	}
	/* The NUL ending s is not a continuation byte, so this stops there. */
	for (size_t k = 1; k < n; k++) {
		if ((s[k] & 0xc0) != 0x80) {
			*cp = 0xfffd;
			return 1;
		}
		*cp = (*cp << 6) | (s[k] & 0x3fu);
	}
	if (*cp < min || *cp > 0x10ffff || (*cp >= 0xd800 && *cp <= 0xdfff)) {
		*cp = 0xfffd;
		return 1;
	}
	return n;
}

/* The address type a recipient is reported under (RFC 6533 §3). */
static const char *addr_type(const char *addr)
{
	return is_ascii(addr) ? "rfc822" : "utf-8";
}

/* A recipient address as 7-bit text: an ASCII one as it is; one with
 * UTF-8 as utf-8-addr-xtext (RFC 6533 §3), every character outside
 * QCHAR as "\x{HEX}". */
static void wrap_addr(struct wrap *w, const char *addr)
{
	const unsigned char *p = (const unsigned char *)addr;

	if (is_ascii(addr)) {
		wrap_puts(w, addr);
		return;
	}
	while (*p != '\0') {
		uint32_t cp;
		char esc[16];

		p += utf8_next(p, &cp);
		if (cp > 0x20 && cp < 0x7f && cp != '\\' && cp != '+' && cp != '=') {
			esc[0] = (char)cp;
			esc[1] = '\0';
		} else {
			snprintf(esc, sizeof(esc), "\\x{%" PRIX32 "}", cp);
		}
		wrap_puts(w, esc);
	}
}

/* ---- report fields ---- */

/* "Name: type; value" with the value wrapped and sanitised, then CRLF;
 * type may be NULL. */
static void put_field(struct strbuf *sb, const char *name, const char *type, const char *value)
{
	struct wrap w;
	size_t col = strlen(name) + 2;

	strbuf_printf(sb, "%s: ", name);
	if (type != NULL) {
		strbuf_printf(sb, "%s; ", type);
		col += strlen(type) + 2;
	}
	wrap_begin(&w, sb, col, " ");
	wrap_puts(&w, value);
	strbuf_puts(sb, "\r\n");
}

static void put_date_field(struct strbuf *sb, const char *name, int64_t ms)
{
	char date[DATE_MAX];

	format_date(ms, date, sizeof(date));
	strbuf_printf(sb, "%s: %s\r\n", name, date);
}

/* RFC 3463: class "." subject "." detail, 1 to 3 digits each. */
static bool enhanced_valid(const char *e)
{
	size_t i = 1;

	if (e[0] != '2' && e[0] != '4' && e[0] != '5')
		return false;
	for (int part = 0; part < 2; part++) {
		size_t digits = 0;

		if (e[i++] != '.')
			return false;
		while (e[i] >= '0' && e[i] <= '9' && digits < 4)
			i++, digits++;
		if (digits == 0 || digits > 3)
			return false;
	}
	return e[i] == '\0';
}

/* The Status of a recipient: the enhanced code it carries, else one that
 * says no more than the class. */
static const char *status_code(const struct delivery_status *ds)
{
	if (enhanced_valid(ds->enhanced))
		return ds->enhanced;
	switch (ds->cls) {
	case DS_OK: return "2.0.0";
	case DS_TEMP: return "4.0.0";
	case DS_PERM: break;
	}
	return "5.0.0";
}

/* Whether the text is the remote's reply, to be quoted with its code. */
static bool is_remote_reply(const struct delivery_status *ds)
{
	return ds->remote != 0 && ds->code != 0;
}

/* "550 5.1.1 text": the reply as the remote gave it (the enhanced code
 * was split off its text when parsed). */
static void wrap_reply(struct wrap *w, const struct delivery_status *ds)
{
	char code[16];

	snprintf(code, sizeof(code), "%d ", ds->code);
	wrap_puts(w, code);
	if (ds->enhanced[0] != '\0') {
		wrap_puts(w, ds->enhanced);
		wrap_puts(w, " ");
	}
	wrap_puts(w, ds->text);
}

/* RFC 3464 §2.2, then §2.3 for each recipient, blocks apart by a blank line. */
static void put_report(const struct dsn_input *in, struct strbuf *sb)
{
	put_field(sb, "Reporting-MTA", "dns", in->reporting_mta);
	if (in->envid != NULL)
		put_field(sb, "Original-Envelope-Id", NULL, in->envid);
	put_date_field(sb, "Arrival-Date", in->arrival_ms);
	for (size_t i = 0; i < in->n_rcpts; i++) {
		const struct dsn_rcpt *r = &in->rcpts[i];
		const struct delivery_status *ds = r->status;
		struct wrap w;

		strbuf_puts(sb, "\r\n");
		if (r->orcpt != NULL)
			put_field(sb, "Original-Recipient", NULL, r->orcpt);
		strbuf_printf(sb, "Final-Recipient: %s; ", addr_type(r->addr));
		wrap_begin(&w, sb, strlen("Final-Recipient: ") + strlen(addr_type(r->addr)) + 2, " ");
		wrap_addr(&w, r->addr);
		strbuf_puts(sb, "\r\n");
		strbuf_printf(sb, "Action: %s\r\n", action_names[r->action]);
		strbuf_printf(sb, "Status: %s\r\n", status_code(ds));
		if (r->remote_mta != NULL)
			put_field(sb, "Remote-MTA", "dns", r->remote_mta);
		if (is_remote_reply(ds)) {
			strbuf_puts(sb, "Diagnostic-Code: smtp; ");
			wrap_begin(&w, sb, strlen("Diagnostic-Code: smtp; "), " ");
			wrap_reply(&w, ds);
			strbuf_puts(sb, "\r\n");
		} else if (ds->text[0] != '\0') {
			/* tern's own reason (a DNS failure, an expiry, a refused
			 * connection): an extension diagnostic type (RFC 3464
			 * §2.3.6), as Postfix writes X-Postfix. */
			put_field(sb, "Diagnostic-Code", "X-Tern", ds->text);
		}
		if (r->last_attempt_ms != 0)
			put_date_field(sb, "Last-Attempt-Date", r->last_attempt_ms);
		if (r->action == DSN_ACTION_DELAYED && r->will_retry_until_ms != 0)
			put_date_field(sb, "Will-Retry-Until", r->will_retry_until_ms);
	}
}

/* ---- the note for a person ---- */

static const char *const note_headings[] = {
	[DSN_ACTION_FAILED] = "Your message could not be delivered to these recipients:",
	[DSN_ACTION_DELAYED] = ("Your message has not been delivered yet to these recipients. "
				"The mail system keeps trying; there is no need to send it again."),
	[DSN_ACTION_DELIVERED] = "Your message was delivered to these recipients:",
};

/* Failures first: they are what the sender must act on. */
static const enum dsn_action note_order[] = {
	DSN_ACTION_FAILED, DSN_ACTION_DELAYED, DSN_ACTION_DELIVERED,
};

/* Continuation lines of a recipient in the note. */
#define NOTE_INDENT "    "

/* "<addr>: host mx.example.org said: 550 5.1.1 ..." or, for tern's own
 * reason, "<addr>: host mx.example.org: connection refused (4.4.1)". */
static void put_note_rcpt(struct strbuf *sb, const struct dsn_rcpt *r)
{
	const struct delivery_status *ds = r->status;
	struct wrap w;

	wrap_begin(&w, sb, 0, NOTE_INDENT);
	wrap_puts(&w, "<");
	wrap_addr(&w, r->addr);
	wrap_puts(&w, ">: ");
	if (r->remote_mta != NULL) {
		wrap_puts(&w, "host ");
		wrap_puts(&w, r->remote_mta);
		wrap_puts(&w, is_remote_reply(ds) ? " said: " : ": ");
	} else if (is_remote_reply(ds)) {
		wrap_puts(&w, "the remote server said: ");
	}
	if (is_remote_reply(ds)) {
		wrap_reply(&w, ds);
	} else {
		wrap_puts(&w, ds->text);
		wrap_puts(&w, " (");
		wrap_puts(&w, status_code(ds));
		wrap_puts(&w, ")");
	}
	strbuf_puts(sb, "\r\n");
	/* A line of its own: the remote's text ends in no particular way. */
	if (r->action == DSN_ACTION_DELAYED && r->will_retry_until_ms != 0) {
		char date[DATE_MAX];

		format_date(r->will_retry_until_ms, date, sizeof(date));
		strbuf_puts(sb, NOTE_INDENT);
		wrap_begin(&w, sb, strlen(NOTE_INDENT), NOTE_INDENT);
		wrap_puts(&w, "Still trying until ");
		wrap_puts(&w, date);
		wrap_puts(&w, ".");
		strbuf_puts(sb, "\r\n");
	}
}

static void put_note(const struct dsn_input *in, struct strbuf *sb)
{
	char date[DATE_MAX], id[24];
	struct wrap w;

	format_date(in->arrival_ms, date, sizeof(date));
	snprintf(id, sizeof(id), "%016" PRIx64, in->queue_id);
	/* Broken by hand so that the date stays on one line. */
	wrap_begin(&w, sb, 0, "");
	wrap_puts(&w, "This is the mail system at ");
	wrap_puts(&w, in->reporting_mta);
	wrap_puts(&w, ", about your message");
	strbuf_puts(sb, "\r\n");
	wrap_begin(&w, sb, 0, "");
	wrap_puts(&w, "received ");
	wrap_puts(&w, date);
	wrap_puts(&w, " (queue id ");
	wrap_puts(&w, id);
	wrap_puts(&w, ").");
	strbuf_puts(sb, "\r\n");
	for (size_t k = 0; k < sizeof(note_order) / sizeof(note_order[0]); k++) {
		enum dsn_action action = note_order[k];
		bool heading = false;

		for (size_t i = 0; i < in->n_rcpts; i++) {
			if (in->rcpts[i].action != action)
				continue;
			if (!heading) {
				strbuf_puts(sb, "\r\n");
				wrap_begin(&w, sb, 0, "");
				wrap_puts(&w, note_headings[action]);
				strbuf_puts(sb, "\r\n\r\n");
				heading = true;
			}
			put_note_rcpt(sb, &in->rcpts[i]);
		}
	}
	strbuf_puts(sb, "\r\n");
	wrap_begin(&w, sb, 0, "");
	wrap_puts(&w, in->ret_full ? "Your message is attached after the delivery report."
			: "The header of your message is attached after the delivery report.");
	strbuf_puts(sb, "\r\n");
}

/* ---- the header ---- */

/* An address in From or To: as given (UTF-8 included, which makes the
 * notice 8-bit), controls as '?', cut at ADDR_MAX. */
static void put_header_addr(struct strbuf *sb, const char *addr)
{
	size_t len = strnlen(addr, ADDR_MAX);

	strbuf_putc(sb, '<');
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)addr[i];

		strbuf_putc(sb, c < 0x20 || c == 0x7f ? '?' : (char)c);
	}
	strbuf_putc(sb, '>');
}

static void put_base64(struct strbuf *sb, const unsigned char *s, size_t len)
{
	char out[BASE64_ENCODED_LEN(EWORD_BYTES) + 1];

	/* An encoded word's payload is short; longer input is the caller's bug. */
	if (len > EWORD_BYTES)
		len = EWORD_BYTES;
	strbuf_append(sb, out, base64_encode(s, len, out));
}

/*
 * The display name: a quoted-string when it is printable ASCII, else
 * RFC 2047 encoded-words (B, UTF-8), one per folded line, none splitting
 * a character. Controls become spaces either way. Returns the column
 * after it.
 */
static size_t put_display_name(struct strbuf *sb, const char *name, size_t col)
{
	unsigned char text[DISPLAY_NAME_MAX];
	size_t len = strnlen(name, sizeof(text));
	bool ascii = true;

	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)name[i];

		text[i] = c < 0x20 || c == 0x7f ? ' ' : c;
		ascii = ascii && c < 0x80;
	}
	/* Cut short: end before a character the cut would split. name[len]
	 * exists, as strnlen found no NUL before it. */
	if (!ascii && name[len] != '\0')
		while (len > 0 && ((unsigned char)name[len] & 0xc0) == 0x80)
			len--;
	if (ascii) {
		strbuf_putc(sb, '"');
		for (size_t i = 0; i < len; i++) {
			if (text[i] == '"' || text[i] == '\\') {
				strbuf_putc(sb, '\\');
				col++;
			}
			strbuf_putc(sb, (char)text[i]);
		}
		strbuf_putc(sb, '"');
		return col + len + 2;
	}
	for (size_t i = 0; i < len;) {
		size_t n = len - i < EWORD_BYTES ? len - i : EWORD_BYTES;

		while (i + n < len && n > 1 && (text[i + n] & 0xc0) == 0x80)
			n--;
		if (i > 0) {
			strbuf_puts(sb, "\r\n ");
			col = 1;
		}
		strbuf_puts(sb, "=?utf-8?b?");
		put_base64(sb, text + i, n);
		strbuf_puts(sb, "?=");
		col += 12 + (n + 2) / 3 * 4;
		i += n;
	}
	return col;
}

static void put_from(struct strbuf *sb, const char *name, const char *addr)
{
	size_t col = strlen("From: ");

	strbuf_puts(sb, "From: ");
	if (name != NULL && name[0] != '\0') {
		col = put_display_name(sb, name, col);
		/* Fold before the address rather than pass the soft limit. */
		if (col + 3 + strnlen(addr, ADDR_MAX) > LINE_SOFT)
			strbuf_puts(sb, "\r\n");
		strbuf_putc(sb, ' ');
	}
	put_header_addr(sb, addr);
	strbuf_puts(sb, "\r\n");
}

static const char *subject_for(const struct dsn_input *in, const char **kind)
{
	bool failed = false, delayed = false;

	for (size_t i = 0; i < in->n_rcpts; i++) {
		failed |= in->rcpts[i].action == DSN_ACTION_FAILED;
		delayed |= in->rcpts[i].action == DSN_ACTION_DELAYED;
	}
	if (failed) {
		*kind = "failure";
		return "Undelivered Mail Returned to Sender";
	}
	if (delayed) {
		*kind = "delay";
		return "Delayed Mail (still being retried)";
	}
	*kind = "success";
	return "Successful Mail Delivery Report";
}

static void put_header(const struct dsn_input *in, struct strbuf *sb, const char *boundary,
		       bool eight_bit_part)
{
	char date[DATE_MAX];
	const char *kind;
	const char *subject = subject_for(in, &kind);

	format_date(in->now_ms, date, sizeof(date));
	strbuf_printf(sb, "Date: %s\r\n", date);
	put_from(sb, in->from_name, in->from_addr);
	strbuf_puts(sb, "To: ");
	put_header_addr(sb, in->to);
	strbuf_printf(sb, "\r\nSubject: %s\r\n", subject);
	/* Queue id, time and kind: a failure and a delay notice for one
	 * message may be composed in the same millisecond. */
	strbuf_printf(sb, "Message-ID: <%016" PRIx64 ".%" PRId64 ".%s.dsn@", in->queue_id,
		      in->now_ms, kind);
	for (const char *p = in->reporting_mta; *p != '\0' && p - in->reporting_mta < ADDR_MAX; p++)
		strbuf_putc(sb, *p > 0x20 && *p < 0x7f ? *p : '?');
	strbuf_puts(sb, ">\r\n");
	strbuf_puts(sb, "Auto-Submitted: auto-replied\r\n");
	strbuf_puts(sb, "MIME-Version: 1.0\r\n");
	strbuf_printf(sb, "Content-Type: multipart/report; report-type=delivery-status;\r\n"
		      " boundary=\"%s\"\r\n", boundary);
	/* RFC 2045 §6.4: a multipart is labelled no narrower than its parts. */
	if (eight_bit_part)
		strbuf_puts(sb, "Content-Transfer-Encoding: 8bit\r\n");
	strbuf_puts(sb, "\r\n");
}

/* ---- the whole notice ---- */

static bool has_8bit(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)s[i] >= 0x80)
			return true;
	return false;
}

/* The original's header block: up to and including the first empty line,
 * or all of it when there is none. */
static size_t header_len(const char *body, size_t len)
{
	const char *end;

	if (len >= 2 && body[0] == '\r' && body[1] == '\n')
		return 2;
	end = memmem(body, len, "\r\n\r\n", 4);
	return end != NULL ? (size_t)(end - body) + 4 : len;
}

static bool contains(const char *hay, size_t hay_len, const char *needle)
{
	return memmem(hay, hay_len, needle, strlen(needle)) != NULL;
}

/*
 * A boundary found in none of the parts. "=_" occurs in no
 * quoted-printable or base64 text, so it rarely meets even an original
 * that holds MIME parts of its own; the counter is tried further when it
 * does.
 * The counter is of fixed width, so one place in the parts can rule out
 * only one candidate, and the search ends.
 */
static void choose_boundary(const struct dsn_input *in, const struct strbuf *note,
			    const struct strbuf *report, const char *orig, size_t orig_len,
			    char boundary[BOUNDARY_MAX])
{
	for (uint32_t n = 0;; n++) {
		snprintf(boundary, BOUNDARY_MAX, "=_tern_%016" PRIx64 "_%" PRIx64 "_%08" PRIx32,
			 in->queue_id, (uint64_t)in->now_ms, n);
		if (!contains(note->data, note->len, boundary) &&
		    !contains(report->data, report->len, boundary) &&
		    !contains(orig, orig_len, boundary))
			return;
	}
}

int dsn_compose(const struct dsn_input *in, struct strbuf *out, bool *eight_bit)
{
	struct strbuf note, report;
	char boundary[BOUNDARY_MAX];
	size_t orig_len, header_start;
	bool orig_8bit;
	int err = 0;

	*eight_bit = false;
	if (in->n_rcpts == 0 || in->to == NULL || in->to[0] == '\0')
		return EINVAL;
	orig_len = in->ret_full ? in->body_len : header_len(in->body, in->body_len);
	orig_8bit = has_8bit(in->body, orig_len);

	strbuf_init(&note);
	strbuf_init(&report);
	put_note(in, &note);
	put_report(in, &report);
	if (strbuf_failed(&note) || strbuf_failed(&report)) {
		err = ENOMEM;
		goto done;
	}
	choose_boundary(in, &note, &report, in->body, orig_len, boundary);

	header_start = out->len;
	put_header(in, out, boundary, orig_8bit);
	/* The From and To addresses are the only header text that may be
	 * 8-bit (UTF-8); the notice then needs an 8-bit path too. */
	*eight_bit = orig_8bit || (!strbuf_failed(out) &&
				   has_8bit(out->data + header_start, out->len - header_start));

	strbuf_puts(out, "This is a delivery status notification in MIME format.\r\n");
	strbuf_printf(out, "\r\n--%s\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n", boundary);
	strbuf_append(out, note.data, note.len);
	strbuf_printf(out, "\r\n--%s\r\nContent-Type: message/delivery-status\r\n\r\n", boundary);
	strbuf_append(out, report.data, report.len);
	strbuf_printf(out, "\r\n--%s\r\nContent-Type: %s\r\n", boundary,
		      in->ret_full ? "message/rfc822" : "text/rfc822-headers");
	if (orig_8bit)
		strbuf_puts(out, "Content-Transfer-Encoding: 8bit\r\n");
	strbuf_puts(out, "\r\n");
	strbuf_append(out, in->body, orig_len);
	strbuf_printf(out, "\r\n--%s--\r\n", boundary);
	if (strbuf_failed(out))
		err = ENOMEM;
done:
	strbuf_free(&note);
	strbuf_free(&report);
	return err;
}
