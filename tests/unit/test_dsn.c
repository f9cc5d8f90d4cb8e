/*
 * test_dsn.c - delivery status notices as composed by dsn_compose: the
 * header, the multipart/report structure (split by its boundary here, as a
 * reader would), every field of the delivery-status part, what goes back
 * of the original for RET=HDRS and RET=FULL, 8-bit originals, hostile
 * remote text and an original that holds the would-be boundary.
 *
 * Every notice composed here is also checked line by line: CRLF only, no
 * line over 998 bytes, and the note and the report 7-bit printable.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "queue/dsn.h"
#include "util/strbuf.h"

#define ARRIVAL_MS 1709632800000LL             /* Tue, 05 Mar 2024 10:00:00 +0000 */
#define LAST_MS (ARRIVAL_MS + 299123)          /* Tue, 05 Mar 2024 10:04:59 +0000 */
#define NOW_MS (ARRIVAL_MS + 307000)           /* Tue, 05 Mar 2024 10:05:07 +0000 */
#define EXPIRE_MS (ARRIVAL_MS + 5 * 86400000LL) /* Sun, 10 Mar 2024 10:00:00 +0000 */
#define QUEUE_ID 0xdeadbeefULL

static const char original_header[] =
	"From: Alice <alice@example.com>\r\n"
	"To: bob@example.org, carol@example.net\r\n"
	"Subject: hello\r\n"
	"Message-ID: <1@example.com>\r\n"
	"\r\n";
static const char original[] =
	"From: Alice <alice@example.com>\r\n"
	"To: bob@example.org, carol@example.net\r\n"
	"Subject: hello\r\n"
	"Message-ID: <1@example.com>\r\n"
	"\r\n"
	"Hi Bob,\r\n"
	"\r\n"
	"see you.\r\n";

/* ---- building inputs ---- */

static struct delivery_status remote_status(enum ds_class cls, int code, const char *enhanced,
					    const char *text)
{
	struct delivery_status ds;

	memset(&ds, 0, sizeof(ds));
	ds.cls = cls;
	ds.stage = STAGE_RCPT_TO;
	ds.code = code;
	snprintf(ds.enhanced, sizeof(ds.enhanced), "%s", enhanced);
	snprintf(ds.text, sizeof(ds.text), "%s", text);
	ds.remote = 1;
	return ds;
}

static struct dsn_input base_input(const struct dsn_rcpt *rcpts, size_t n)
{
	struct dsn_input in;

	memset(&in, 0, sizeof(in));
	in.reporting_mta = "mx.tern.example";
	in.from_name = "Mail Delivery Subsystem";
	in.from_addr = "MAILER-DAEMON@mx.tern.example";
	in.to = "alice@example.com";
	in.queue_id = QUEUE_ID;
	in.arrival_ms = ARRIVAL_MS;
	in.now_ms = NOW_MS;
	in.body = original;
	in.body_len = strlen(original);
	in.rcpts = rcpts;
	in.n_rcpts = n;
	return in;
}

/* ---- reading the notice back ---- */

struct part {
	char *head; /* the part's header fields, each with its CRLF */
	char *body; /* everything after the blank line, up to the delimiter's CRLF */
	size_t body_len;
};

struct notice {
	struct strbuf out;
	bool eight_bit;
	char *header; /* the message header, each field with its CRLF */
	char boundary[128];
	struct part parts[4];
	size_t n_parts;
};

static char *copy(const char *s, size_t len)
{
	char *c = malloc(len + 1);

	assert_non_null(c);
	memcpy(c, s, len);
	c[len] = '\0';
	return c;
}

static size_t count(const char *hay, size_t len, const char *needle)
{
	size_t n = 0, nl = strlen(needle);

	for (const char *p = hay; (p = memmem(p, len - (size_t)(p - hay), needle, nl)) != NULL; p++)
		n++;
	return n;
}

/* CRLF line ends only, every line within RFC 5322's 998 bytes. */
static void assert_lines_legal(const char *s, size_t len)
{
	size_t start = 0;

	for (size_t i = 0; i < len; i++) {
		if (s[i] == '\r') {
			assert_true(i + 1 < len && s[i + 1] == '\n');
			assert_true(i - start <= 998);
			start = i + 2;
			i++;
		} else {
			assert_true(s[i] != '\n');
		}
	}
	assert_int_equal(start, len);
}

static void assert_printable_ascii(const char *s)
{
	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '\r' || c == '\n')
			continue;
		assert_true(c >= 0x20 && c < 0x7f);
	}
}

/* Split the notice at its boundary, as a MIME reader would. */
static void parse(struct notice *n)
{
	const char *s = n->out.data, *end = s + n->out.len, *p, *b, *q;
	char delim[160];
	size_t dl;

	assert_lines_legal(s, n->out.len);
	p = strstr(s, "\r\n\r\n");
	assert_non_null(p);
	n->header = copy(s, (size_t)(p - s) + 2);
	p += 4;
	b = strstr(n->header, "boundary=\"");
	assert_non_null(b);
	b += strlen("boundary=\"");
	q = strchr(b, '"');
	assert_non_null(q);
	assert_true((size_t)(q - b) < sizeof(n->boundary));
	memcpy(n->boundary, b, (size_t)(q - b));
	n->boundary[q - b] = '\0';

	dl = (size_t)snprintf(delim, sizeof(delim), "\r\n--%s", n->boundary);
	/* preamble, then parts, each opened by a delimiter line */
	p = memmem(p, (size_t)(end - p), delim, dl);
	assert_non_null(p);
	for (;;) {
		const char *start, *next, *blank;

		p += dl;
		if (end - p >= 2 && memcmp(p, "--", 2) == 0) {
			assert_int_equal(end - p, 4); /* "--" CRLF closes the multipart */
			break;
		}
		assert_memory_equal(p, "\r\n", 2);
		start = p + 2;
		next = memmem(start, (size_t)(end - start), delim, dl);
		assert_non_null(next);
		assert_true(n->n_parts < 4);
		blank = memmem(start, (size_t)(next - start), "\r\n\r\n", 4);
		assert_non_null(blank);
		n->parts[n->n_parts].head = copy(start, (size_t)(blank - start) + 2);
		n->parts[n->n_parts].body = copy(blank + 4, (size_t)(next - blank - 4));
		n->parts[n->n_parts].body_len = (size_t)(next - blank - 4);
		n->n_parts++;
		p = next;
	}
	/* the boundary occurs in the Content-Type and the delimiters, nowhere else */
	assert_int_equal(count(s, n->out.len, n->boundary), n->n_parts + 2);
}

static void compose(const struct dsn_input *in, struct notice *n)
{
	memset(n, 0, sizeof(*n));
	strbuf_init(&n->out);
	assert_int_equal(dsn_compose(in, &n->out, &n->eight_bit), 0);
	parse(n);
	assert_int_equal(n->n_parts, 3);
	assert_printable_ascii(n->parts[0].body);
	assert_printable_ascii(n->parts[1].body);
}

static void notice_free(struct notice *n)
{
	strbuf_free(&n->out);
	free(n->header);
	for (size_t i = 0; i < n->n_parts; i++) {
		free(n->parts[i].head);
		free(n->parts[i].body);
	}
}

/* Whether text holds line (without its CRLF) as a whole line. */
static bool has_line(const char *text, const char *line)
{
	size_t len = strlen(line);

	for (const char *p = text; (p = strstr(p, line)) != NULL; p++)
		if ((p == text || p[-1] == '\n') && strncmp(p + len, "\r\n", 2) == 0)
			return true;
	return false;
}

/* The text with every line break and the indent after it as one space:
 * what a reader of the note sees, whatever the wrapping. */
static char *flatten(const char *text)
{
	char *f = copy(text, strlen(text)), *o = f;

	for (const char *p = text; *p != '\0';) {
		if (p[0] == '\r' && p[1] == '\n') {
			p += 2;
			while (*p == ' ')
				p++;
			*o++ = ' ';
		} else {
			*o++ = *p++;
		}
	}
	*o = '\0';
	return f;
}

static void assert_note_says(const struct notice *n, const char *words)
{
	char *f = flatten(n->parts[0].body);

	if (strstr(f, words) == NULL)
		fail_msg("the note does not say \"%s\":\n%s", words, f);
	free(f);
}

/* ---- tests ---- */

static void test_failure_two_recipients(void **state)
{
	struct delivery_status bob_ds = remote_status(DS_PERM, 550, "5.1.1",
		"<bob@example.org>: Recipient address rejected: User unknown in virtual mailbox table");
	struct delivery_status carol_ds;
	struct dsn_rcpt rcpts[2] = {
		{ .addr = "bob@example.org", .orcpt = "rfc822;bob@example.org",
		  .action = DSN_ACTION_FAILED, .status = &bob_ds, .remote_mta = "mx.example.org",
		  .last_attempt_ms = LAST_MS,
		  /* not delayed: no Will-Retry-Until even when given */
		  .will_retry_until_ms = EXPIRE_MS },
		{ .addr = "carol@example.net", .action = DSN_ACTION_FAILED, .status = &carol_ds },
	};
	struct dsn_input in = base_input(rcpts, 2);
	struct notice n;

	(void)state;
	ds_set_local(&carol_ds, DS_PERM, STAGE_DNS, "5.4.4", "no MX or address records for %s",
		     "example.net");
	in.envid = "QQ314159";
	compose(&in, &n);

	assert_true(has_line(n.header, "Date: Tue, 05 Mar 2024 10:05:07 +0000"));
	assert_true(has_line(n.header,
			     "From: \"Mail Delivery Subsystem\" <MAILER-DAEMON@mx.tern.example>"));
	assert_true(has_line(n.header, "To: <alice@example.com>"));
	assert_true(has_line(n.header, "Subject: Undelivered Mail Returned to Sender"));
	assert_true(has_line(n.header, "Message-ID: <00000000deadbeef.1709633107000.failure.dsn@"
				       "mx.tern.example>"));
	assert_true(has_line(n.header, "Auto-Submitted: auto-replied"));
	assert_true(has_line(n.header, "MIME-Version: 1.0"));
	assert_true(has_line(n.header,
			     "Content-Type: multipart/report; report-type=delivery-status;"));
	assert_null(strstr(n.header, "Content-Transfer-Encoding"));
	assert_false(n.eight_bit);

	assert_string_equal(n.parts[0].head, "Content-Type: text/plain; charset=us-ascii\r\n");
	assert_note_says(&n, "This is the mail system at mx.tern.example, about your message "
			     "received Tue, 05 Mar 2024 10:00:00 +0000 (queue id 00000000deadbeef).");
	assert_note_says(&n, "Your message could not be delivered to these recipients:");
	assert_note_says(&n, "<bob@example.org>: host mx.example.org said: 550 5.1.1 "
			     "<bob@example.org>: Recipient address rejected: User unknown");
	assert_note_says(&n, "<carol@example.net>: no MX or address records for example.net "
			     "(5.4.4)");
	assert_note_says(&n, "The header of your message is attached");
	assert_null(strstr(n.parts[0].body, "Your message was delivered"));

	assert_string_equal(n.parts[1].head, "Content-Type: message/delivery-status\r\n");
	assert_string_equal(n.parts[1].body,
		"Reporting-MTA: dns; mx.tern.example\r\n"
		"Original-Envelope-Id: QQ314159\r\n"
		"Arrival-Date: Tue, 05 Mar 2024 10:00:00 +0000\r\n"
		"\r\n"
		"Original-Recipient: rfc822;bob@example.org\r\n"
		"Final-Recipient: rfc822; bob@example.org\r\n"
		"Action: failed\r\n"
		"Status: 5.1.1\r\n"
		"Remote-MTA: dns; mx.example.org\r\n"
		"Diagnostic-Code: smtp; 550 5.1.1 <bob@example.org>: Recipient address\r\n"
		" rejected: User unknown in virtual mailbox table\r\n"
		"Last-Attempt-Date: Tue, 05 Mar 2024 10:04:59 +0000\r\n"
		"\r\n"
		"Final-Recipient: rfc822; carol@example.net\r\n"
		"Action: failed\r\n"
		"Status: 5.4.4\r\n"
		"Diagnostic-Code: X-Tern; no MX or address records for example.net\r\n");

	assert_string_equal(n.parts[2].head, "Content-Type: text/rfc822-headers\r\n");
	assert_string_equal(n.parts[2].body, original_header);
	notice_free(&n);
}

static void test_delay_notice(void **state)
{
	struct delivery_status ds = remote_status(DS_TEMP, 451, "4.7.1",
						  "Greylisted, please try again later");
	struct dsn_rcpt rcpt = {
		.addr = "dave@example.org", .action = DSN_ACTION_DELAYED, .status = &ds,
		.remote_mta = "mx2.example.org", .last_attempt_ms = LAST_MS,
		.will_retry_until_ms = EXPIRE_MS,
	};
	struct dsn_input in = base_input(&rcpt, 1);
	struct notice n;

	(void)state;
	compose(&in, &n);
	assert_true(has_line(n.header, "Subject: Delayed Mail (still being retried)"));
	assert_true(has_line(n.header, "Message-ID: <00000000deadbeef.1709633107000.delay.dsn@"
				       "mx.tern.example>"));
	assert_note_says(&n, "Your message has not been delivered yet to these recipients.");
	assert_note_says(&n, "<dave@example.org>: host mx2.example.org said: 451 4.7.1 "
			     "Greylisted, please try again later Still trying until "
			     "Sun, 10 Mar 2024 10:00:00 +0000.");
	/* no ENVID given: no Original-Envelope-Id; no ORCPT: no Original-Recipient */
	assert_string_equal(n.parts[1].body,
		"Reporting-MTA: dns; mx.tern.example\r\n"
		"Arrival-Date: Tue, 05 Mar 2024 10:00:00 +0000\r\n"
		"\r\n"
		"Final-Recipient: rfc822; dave@example.org\r\n"
		"Action: delayed\r\n"
		"Status: 4.7.1\r\n"
		"Remote-MTA: dns; mx2.example.org\r\n"
		"Diagnostic-Code: smtp; 451 4.7.1 Greylisted, please try again later\r\n"
		"Last-Attempt-Date: Tue, 05 Mar 2024 10:04:59 +0000\r\n"
		"Will-Retry-Until: Sun, 10 Mar 2024 10:00:00 +0000\r\n");
	notice_free(&n);
}

static void test_success_notice(void **state)
{
	/* no enhanced code in the reply: the Status says only the class */
	struct delivery_status ds = remote_status(DS_OK, 250, "", "Ok: queued as 4Vx1");
	struct dsn_rcpt rcpt = {
		.addr = "erin@example.org", .orcpt = "rfc822;erin+list@example.org",
		.action = DSN_ACTION_DELIVERED, .status = &ds, .remote_mta = "mx.example.org",
		.last_attempt_ms = LAST_MS,
	};
	struct dsn_input in = base_input(&rcpt, 1);
	struct notice n;

	(void)state;
	in.envid = "abc+2Bdef";
	compose(&in, &n);
	assert_true(has_line(n.header, "Subject: Successful Mail Delivery Report"));
	assert_true(has_line(n.header, "Message-ID: <00000000deadbeef.1709633107000.success.dsn@"
				       "mx.tern.example>"));
	assert_note_says(&n, "Your message was delivered to these recipients:");
	assert_note_says(&n, "<erin@example.org>: host mx.example.org said: 250 Ok: queued as 4Vx1");
	assert_string_equal(n.parts[1].body,
		"Reporting-MTA: dns; mx.tern.example\r\n"
		"Original-Envelope-Id: abc+2Bdef\r\n"
		"Arrival-Date: Tue, 05 Mar 2024 10:00:00 +0000\r\n"
		"\r\n"
		"Original-Recipient: rfc822;erin+list@example.org\r\n"
		"Final-Recipient: rfc822; erin@example.org\r\n"
		"Action: delivered\r\n"
		"Status: 2.0.0\r\n"
		"Remote-MTA: dns; mx.example.org\r\n"
		"Diagnostic-Code: smtp; 250 Ok: queued as 4Vx1\r\n"
		"Last-Attempt-Date: Tue, 05 Mar 2024 10:04:59 +0000\r\n");
	notice_free(&n);
}

static void test_subject_follows_the_worst_action(void **state)
{
	struct delivery_status ok = remote_status(DS_OK, 250, "2.0.0", "Ok");
	struct delivery_status later = remote_status(DS_TEMP, 452, "4.2.2", "Mailbox full");
	struct delivery_status never;
	struct dsn_rcpt rcpts[3] = {
		{ .addr = "a@example.org", .action = DSN_ACTION_DELIVERED, .status = &ok },
		{ .addr = "b@example.org", .action = DSN_ACTION_DELAYED, .status = &later },
		{ .addr = "c@example.org", .action = DSN_ACTION_FAILED, .status = &never },
	};
	struct dsn_input in = base_input(rcpts, 2);
	struct notice n;

	(void)state;
	/* a failed status with no enhanced code: Status from its class */
	ds_set_local(&never, DS_PERM, STAGE_CONNECT, NULL, "message expired");
	compose(&in, &n);
	assert_true(has_line(n.header, "Subject: Delayed Mail (still being retried)"));
	assert_note_says(&n, "delivered yet to these recipients.");
	assert_note_says(&n, "Your message was delivered to these recipients:");
	notice_free(&n);

	in.n_rcpts = 3;
	compose(&in, &n);
	assert_true(has_line(n.header, "Subject: Undelivered Mail Returned to Sender"));
	assert_true(has_line(n.parts[1].body, "Status: 5.0.0"));
	assert_true(has_line(n.parts[1].body, "Diagnostic-Code: X-Tern; message expired"));
	assert_note_says(&n, "<c@example.org>: message expired (5.0.0)");
	/* failures first, in the note and in the report the caller's order */
	assert_true(strstr(n.parts[0].body, "<c@example.org>") <
		    strstr(n.parts[0].body, "<a@example.org>"));
	assert_true(strstr(n.parts[1].body, "a@example.org") <
		    strstr(n.parts[1].body, "c@example.org"));
	notice_free(&n);
}

static void test_ret_hdrs_returns_the_header_only(void **state)
{
	struct delivery_status ds = remote_status(DS_PERM, 550, "5.1.1", "no such user");
	struct dsn_rcpt rcpt = { .addr = "bob@example.org", .action = DSN_ACTION_FAILED,
				 .status = &ds };
	struct dsn_input in = base_input(&rcpt, 1);
	static const char no_body[] = "Subject: all header\r\nX-A: 1\r\n";
	struct notice n;

	(void)state;
	compose(&in, &n);
	assert_string_equal(n.parts[2].head, "Content-Type: text/rfc822-headers\r\n");
	assert_string_equal(n.parts[2].body, original_header);
	assert_null(strstr(n.out.data, "see you."));
	notice_free(&n);

	/* no empty line: all of it is header */
	in.body = no_body;
	in.body_len = strlen(no_body);
	compose(&in, &n);
	assert_string_equal(n.parts[2].body, no_body);
	notice_free(&n);
}

static void test_ret_full_returns_the_message(void **state)
{
	struct delivery_status ds = remote_status(DS_PERM, 550, "5.1.1", "no such user");
	struct dsn_rcpt rcpt = { .addr = "bob@example.org", .action = DSN_ACTION_FAILED,
				 .status = &ds };
	struct dsn_input in = base_input(&rcpt, 1);
	struct notice n;

	(void)state;
	in.ret_full = true;
	compose(&in, &n);
	assert_string_equal(n.parts[2].head, "Content-Type: message/rfc822\r\n");
	assert_int_equal(n.parts[2].body_len, strlen(original));
	assert_string_equal(n.parts[2].body, original);
	assert_note_says(&n, "Your message is attached after the delivery report.");
	assert_false(n.eight_bit);
	notice_free(&n);
}

static void test_eight_bit_original(void **state)
{
	static const char body8[] =
		"From: Alice <alice@example.com>\r\n"
		"Subject: greetings\r\n"
		"Content-Type: text/plain; charset=utf-8\r\n"
		"Content-Transfer-Encoding: 8bit\r\n"
		"\r\n"
		"Gr\xc3\xbc\xc3\x9f""e aus K\xc3\xb6ln\r\n";
	static const char header8[] =
		"From: J\xc3\xb6rg <joerg@example.com>\r\n"
		"Subject: ASCII body\r\n"
		"\r\n"
		"plain\r\n";
	struct delivery_status ds = remote_status(DS_PERM, 550, "5.1.1", "no such user");
	struct dsn_rcpt rcpt = { .addr = "bob@example.org", .action = DSN_ACTION_FAILED,
				 .status = &ds };
	struct dsn_input in = base_input(&rcpt, 1);
	struct notice n;

	(void)state;
	in.body = body8;
	in.body_len = strlen(body8);
	in.ret_full = true;
	compose(&in, &n);
	assert_true(n.eight_bit);
	assert_string_equal(n.parts[2].head,
			    "Content-Type: message/rfc822\r\nContent-Transfer-Encoding: 8bit\r\n");
	assert_string_equal(n.parts[2].body, body8);
	assert_true(has_line(n.header, "Content-Transfer-Encoding: 8bit"));
	notice_free(&n);

	/* the same original with RET=HDRS: its header is ASCII */
	in.ret_full = false;
	compose(&in, &n);
	assert_false(n.eight_bit);
	assert_null(strstr(n.header, "Content-Transfer-Encoding"));
	assert_string_equal(n.parts[2].head, "Content-Type: text/rfc822-headers\r\n");
	notice_free(&n);

	/* UTF-8 in the header goes back 8-bit even with RET=HDRS */
	in.body = header8;
	in.body_len = strlen(header8);
	compose(&in, &n);
	assert_true(n.eight_bit);
	assert_string_equal(n.parts[2].head,
			    "Content-Type: text/rfc822-headers\r\nContent-Transfer-Encoding: 8bit\r\n");
	assert_string_equal(n.parts[2].body, "From: J\xc3\xb6rg <joerg@example.com>\r\n"
					     "Subject: ASCII body\r\n\r\n");
	notice_free(&n);
}

/* The value of a report field with its folds undone, or NULL. */
static char *field_value(const char *report, const char *name)
{
	char prefix[64];
	const char *p, *e;
	char *v, *o;

	snprintf(prefix, sizeof(prefix), "\r\n%s: ", name);
	p = strstr(report, prefix);
	if (p == NULL)
		return NULL;
	p += strlen(prefix);
	for (e = p; !(e[0] == '\r' && e[1] == '\n' && e[2] != ' '); e++)
		;
	v = o = copy(p, (size_t)(e - p));
	for (const char *q = v; *q != '\0'; q++)
		if (!(q[0] == '\r' && q[1] == '\n'))
			*o++ = *q;
		else
			q++;
	*o = '\0';
	return v;
}

static void test_remote_text_is_sanitised(void **state)
{
	static const char messy[] = "first line\r\nsecond\x01line\x7f caf\xc3\xa9 \tend ";
	char host[3001], name[3001], expect[600];
	char *v;
	struct delivery_status ds;
	struct dsn_rcpt rcpt = { .addr = "bob@example.org", .action = DSN_ACTION_FAILED,
				 .status = &ds };
	struct dsn_input in = base_input(&rcpt, 1);
	struct notice n;
	const char *line, *nl;
	static const char name_end[] = "\"\r\n <MAILER-DAEMON@mx.tern.example>\r\n";

	(void)state;
	memset(host, 'h', sizeof(host) - 1);
	host[sizeof(host) - 1] = '\0';
	memset(name, 'N', sizeof(name) - 1);
	name[sizeof(name) - 1] = '\0';
	/* a reply filling text[]: line breaks, a control, DEL, UTF-8, a tab,
	 * then a word far longer than a line */
	ds = remote_status(DS_PERM, 554, "5.7.1", messy);
	memset(ds.text + strlen(messy), 'w', sizeof(ds.text) - 1 - strlen(messy));
	ds.text[sizeof(ds.text) - 1] = '\0';
	rcpt.remote_mta = host;
	in.from_name = name;
	compose(&in, &n); /* lines within 998, note and report printable ASCII */

	v = field_value(n.parts[1].body, "Diagnostic-Code");
	assert_non_null(v);
	snprintf(expect, sizeof(expect), "smtp; 554 5.7.1 first line second?line? caf?? end %s",
		 ds.text + strlen(messy));
	assert_string_equal(v, expect);
	free(v);

	/* a 3000-byte host name: cut by a fold exactly at 998 bytes */
	line = strstr(n.parts[1].body, "Remote-MTA: dns; ");
	assert_non_null(line);
	nl = strstr(line, "\r\n");
	assert_int_equal(nl - line, 998);
	v = field_value(n.parts[1].body, "Remote-MTA");
	assert_int_equal(strlen(v), strlen("dns; ") + 3000 + 3); /* three folds' spaces */
	free(v);

	/* the configured name is cut at 200 bytes; the address folds onto its own line */
	assert_true(strncmp(n.header, "Date: ", 6) == 0);
	line = strstr(n.header, "\r\nFrom: \"");
	assert_non_null(line);
	assert_memory_equal(line + strlen("\r\nFrom: \"") + 200, name_end, strlen(name_end));
	notice_free(&n);
}

static void test_boundary_unique_against_the_content(void **state)
{
	struct delivery_status ds = remote_status(DS_PERM, 550, "5.1.1", "no such user");
	struct dsn_rcpt rcpt = { .addr = "bob@example.org", .action = DSN_ACTION_FAILED,
				 .status = &ds };
	struct dsn_input in = base_input(&rcpt, 1);
	struct notice n;
	char first[128], forged[1024];

	(void)state;
	compose(&in, &n);
	snprintf(first, sizeof(first), "%s", n.boundary);
	notice_free(&n);

	/* the same message and time, now holding the boundary the first
	 * notice used, as a forged end of the part and a forged part */
	snprintf(forged, sizeof(forged),
		 "%s"
		 "--%s\r\nContent-Type: text/plain\r\n\r\nforged part\r\n--%s--\r\n",
		 original_header, first, first);
	in.body = forged;
	in.body_len = strlen(forged);
	in.ret_full = true;
	compose(&in, &n); /* three parts, boundary nowhere else */
	assert_string_not_equal(n.boundary, first);
	assert_string_equal(n.parts[2].body, forged);
	notice_free(&n);

	/* the same from the remote's reply text */
	in.body = original;
	in.body_len = strlen(original);
	snprintf(ds.text, sizeof(ds.text), "--%s", first);
	compose(&in, &n);
	assert_string_not_equal(n.boundary, first);
	assert_non_null(strstr(n.parts[1].body, first));
	notice_free(&n);
}

static void test_display_name_and_utf8_addresses(void **state)
{
	struct delivery_status ds = remote_status(DS_PERM, 550, "5.1.1", "no such user");
	struct dsn_rcpt rcpt = { .addr = "j\xc3\xb6rg+x@example.de", .action = DSN_ACTION_FAILED,
				 .status = &ds };
	struct dsn_input in = base_input(&rcpt, 1);
	struct notice n;

	(void)state;
	in.from_name = "Mail \"Delivery\" \\ System";
	compose(&in, &n);
	assert_true(has_line(n.header, "From: \"Mail \\\"Delivery\\\" \\\\ System\" "
				       "<MAILER-DAEMON@mx.tern.example>"));
	/* a UTF-8 recipient in 7-bit utf-8-addr-xtext (RFC 6533), '+' included */
	assert_true(has_line(n.parts[1].body, "Final-Recipient: utf-8; j\\x{F6}rg\\x{2B}x@example.de"));
	assert_note_says(&n, "<j\\x{F6}rg\\x{2B}x@example.de>: the remote server said: 550 5.1.1 "
			     "no such user");
	assert_false(n.eight_bit);
	notice_free(&n);

	in.from_name = "";
	compose(&in, &n);
	assert_true(has_line(n.header, "From: <MAILER-DAEMON@mx.tern.example>"));
	notice_free(&n);

	/* RFC 2047 for a name that is not ASCII; a UTF-8 return path as it is */
	in.from_name = "Syst\xc3\xa8me de messagerie";
	in.to = "ren\xc3\xa9@example.fr";
	compose(&in, &n);
	assert_non_null(strstr(n.header, "\r\nFrom: =?utf-8?b?U3lzdMOobWUgZGUgbWVzc2FnZXJpZQ==?=\r\n"
					 " <MAILER-DAEMON@mx.tern.example>\r\n"));
	assert_true(has_line(n.header, "To: <ren\xc3\xa9@example.fr>"));
	assert_true(n.eight_bit);
	notice_free(&n);
}

static void test_invalid_input(void **state)
{
	struct delivery_status ds = remote_status(DS_PERM, 550, "5.1.1", "no such user");
	struct dsn_rcpt rcpt = { .addr = "bob@example.org", .action = DSN_ACTION_FAILED,
				 .status = &ds };
	struct dsn_input in = base_input(&rcpt, 0);
	struct strbuf out;
	bool eight_bit = true;

	(void)state;
	strbuf_init(&out);
	assert_int_equal(dsn_compose(&in, &out, &eight_bit), EINVAL);
	in.n_rcpts = 1;
	in.to = NULL;
	assert_int_equal(dsn_compose(&in, &out, &eight_bit), EINVAL);
	in.to = "";
	assert_int_equal(dsn_compose(&in, &out, &eight_bit), EINVAL);
	assert_int_equal(out.len, 0);
	assert_false(eight_bit);
	strbuf_free(&out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_failure_two_recipients),
		cmocka_unit_test(test_delay_notice),
		cmocka_unit_test(test_success_notice),
		cmocka_unit_test(test_subject_follows_the_worst_action),
		cmocka_unit_test(test_ret_hdrs_returns_the_header_only),
		cmocka_unit_test(test_ret_full_returns_the_message),
		cmocka_unit_test(test_eight_bit_original),
		cmocka_unit_test(test_remote_text_is_sanitised),
		cmocka_unit_test(test_boundary_unique_against_the_content),
		cmocka_unit_test(test_display_name_and_utf8_addresses),
		cmocka_unit_test(test_invalid_input),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
