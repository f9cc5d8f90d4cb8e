/*
 * test_smtp_parse.c - the inbound command parser: verbs, HELO names, MAIL
 * and RCPT paths with every parameter, xtext, BDAT, and the bounds.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "inbound/smtp_parse.h"
#include "queue/message.h"

#define ALL_EXT (SMTP_EXT_SIZE | SMTP_EXT_8BITMIME | SMTP_EXT_SMTPUTF8 | SMTP_EXT_DSN | \
		 SMTP_EXT_CHUNKING | SMTP_EXT_REQUIRETLS | SMTP_EXT_PIPELINING)

static void cmd(const char *line, enum smtp_verb verb, const char *arg)
{
	struct smtp_cmd c;

	smtp_parse_command(line, strlen(line), &c);
	assert_int_equal(c.verb, verb);
	assert_int_equal(c.arg_len, strlen(arg));
	assert_memory_equal(c.arg, arg, c.arg_len);
}

static void test_verbs(void **state)
{
	(void)state;
	cmd("EHLO client.example", SMTP_EHLO, "client.example");
	cmd("ehlo   client.example  ", SMTP_EHLO, "client.example");
	cmd("HeLo x", SMTP_HELO, "x");
	cmd("LHLO x", SMTP_LHLO, "x");
	cmd("MAIL FROM:<a@b>", SMTP_MAIL, "FROM:<a@b>");
	cmd("rcpt TO:<a@b> NOTIFY=NEVER", SMTP_RCPT, "TO:<a@b> NOTIFY=NEVER");
	cmd("DATA", SMTP_DATA, "");
	cmd("BDAT 10 LAST", SMTP_BDAT, "10 LAST");
	cmd("RSET", SMTP_RSET, "");
	cmd("NOOP hello", SMTP_NOOP, "hello");
	cmd("QUIT", SMTP_QUIT, "");
	cmd("VRFY postmaster", SMTP_VRFY, "postmaster");
	cmd("HELP", SMTP_HELP, "");
	cmd("EXPN list", SMTP_EXPN, "list");
	cmd("STARTTLS", SMTP_STARTTLS, "");
	cmd("AUTH PLAIN", SMTP_AUTH, "PLAIN");
	cmd("ETRN x", SMTP_ETRN, "x");
	cmd("TURN", SMTP_TURN, "");
	cmd("", SMTP_UNKNOWN, "");
	cmd("DATAX", SMTP_UNKNOWN, "");
	cmd("DAT", SMTP_UNKNOWN, "");
	cmd("MAIL:FROM", SMTP_UNKNOWN, "");
	cmd("GET / HTTP/1.1", SMTP_UNKNOWN, "/ HTTP/1.1");
}

static void test_verb_with_nul(void **state)
{
	static const char line[] = "DA\0A";
	struct smtp_cmd c;

	(void)state;
	smtp_parse_command(line, sizeof(line) - 1, &c);
	assert_int_equal(c.verb, SMTP_UNKNOWN);
}

static void test_helo(void **state)
{
	const char *name;
	size_t len;
	char big[SMTP_HELO_MAX + 2];

	(void)state;
	assert_null(smtp_parse_helo("mx.example.com", 14, &name, &len));
	assert_int_equal(len, 14);
	assert_null(smtp_parse_helo("[192.0.2.1] extra", 17, &name, &len));
	assert_int_equal(len, 11);
	assert_string_equal(smtp_parse_helo("", 0, &name, &len), "501 5.5.4 Syntax: EHLO hostname");
	memset(big, 'a', sizeof(big));
	assert_null(smtp_parse_helo(big, SMTP_HELO_MAX, &name, &len));
	assert_non_null(smtp_parse_helo(big, SMTP_HELO_MAX + 1, &name, &len));
}

static const char *mail(const char *arg, unsigned ext, struct smtp_mail *m)
{
	return smtp_parse_mail(arg, strlen(arg), ext, m);
}

static void test_mail_paths(void **state)
{
	struct smtp_mail m;

	(void)state;
	assert_null(mail("FROM:<user@example.com>", ALL_EXT, &m));
	assert_int_equal(m.addr_len, 16);
	assert_memory_equal(m.addr, "user@example.com", 16);
	assert_false(m.has_size);
	assert_int_equal(m.body, MSG_BODY_7BIT);
	assert_int_equal(m.ret, MSG_RET_NONE);
	assert_null(m.envid);

	/* the null reverse-path */
	assert_null(mail("FROM:<>", ALL_EXT, &m));
	assert_int_equal(m.addr_len, 0);
	assert_null(mail("FROM:<> SIZE=10", ALL_EXT, &m));
	assert_int_equal(m.addr_len, 0);
	assert_int_equal(m.size, 10);
	/* lenient: a space after the colon, lower case */
	assert_null(mail("from: <a@b.c>", ALL_EXT, &m));
	assert_memory_equal(m.addr, "a@b.c", 5);
	/* a source route is dropped */
	assert_null(mail("FROM:<@relay.example,@r2.example:user@example.com>", ALL_EXT, &m));
	assert_int_equal(m.addr_len, 16);
	assert_memory_equal(m.addr, "user@example.com", 16);
	/* quoted local parts, with '>' and spaces inside */
	assert_null(mail("FROM:<\"odd >name\"@example.com>", ALL_EXT, &m));
	assert_int_equal(m.addr_len, 23);
	assert_null(mail("FROM:<\"a\\\"b\"@example.com>", ALL_EXT, &m));
	/* address literals */
	assert_null(mail("FROM:<u@[192.0.2.1]>", ALL_EXT, &m));
	assert_null(mail("FROM:<u@[IPv6:2001:db8::1]>", ALL_EXT, &m));
	assert_non_null(mail("FROM:<u@[2001:db8::1]>", ALL_EXT, &m));
	assert_non_null(mail("FROM:<u@[IPv6:192.0.2.1]>", ALL_EXT, &m));
	assert_non_null(mail("FROM:<u@[999.0.0.1]>", ALL_EXT, &m));
	/* dots in local parts are taken as they come */
	assert_null(mail("FROM:<john..doe.@example.com>", ALL_EXT, &m));
}

static void test_mail_bad_paths(void **state)
{
	static const char *const syntax[] = {
		"", "FROM:", "FROM:user@example.com", "FROM:<user@example.com",
		"FROM:<<user@example.com>>", "TO:<a@b>", "FROM:<a@b>x", "FROM <a@b>",
		"FROM:<a@b>\tSIZE=1", "FROM:<\"unterminated@b>",
	};
	static const char *const bad_addr[] = {
		"FROM:<user>", "FROM:<@example.com>", "FROM:<user@>", "FROM:<user@exa mple.com>",
		"FROM:<us er@example.com>", "FROM:<user@example..com>", "FROM:<user@.example.com>",
		"FROM:<user@example.com.>", "FROM:<a@b@c>", "FROM:<user@exa(mple.com>",
		"FROM:<@route:>", "FROM:<u@[]>",
	};
	struct smtp_mail m;
	char buf[600];

	(void)state;
	for (size_t i = 0; i < sizeof(syntax) / sizeof(syntax[0]); i++)
		assert_string_equal(mail(syntax[i], ALL_EXT, &m),
				    "501 5.5.4 Syntax: MAIL FROM:<address> [parameters]");
	for (size_t i = 0; i < sizeof(bad_addr) / sizeof(bad_addr[0]); i++) {
		const char *r = mail(bad_addr[i], ALL_EXT, &m);

		assert_non_null(r);
		assert_memory_equal(r, "501 5.", 6);
	}
	assert_string_equal(mail("FROM:<user@exam\x01ple.com>", ALL_EXT, &m),
			    "501 5.5.4 Syntax: MAIL FROM:<address> [parameters]");
	assert_non_null(mail("FROM:<user@exam\x7fple.com>", ALL_EXT, &m));

	/* 256 bytes of address is the most */
	strcpy(buf, "FROM:<");
	memset(buf + 6, 'a', 240);
	memcpy(buf + 246, "@example.com>", 14); /* 240 + 12 = 252 */
	assert_null(mail(buf, ALL_EXT, &m));
	memset(buf + 6, 'a', 250);
	memcpy(buf + 256, "@example.com>", 14); /* 262 */
	assert_string_equal(mail(buf, ALL_EXT, &m), "501 5.1.7 Bad sender address syntax");
	/* a domain label of 64 */
	strcpy(buf, "FROM:<a@");
	memset(buf + 8, 'b', 64);
	strcpy(buf + 72, ".com>");
	assert_non_null(mail(buf, ALL_EXT, &m));
	buf[8 + 30] = '.';
	assert_null(mail(buf, ALL_EXT, &m));
}

static void test_mail_utf8(void **state)
{
	struct smtp_mail m;

	(void)state;
	assert_string_equal(mail("FROM:<j\xc3\xb8rn@example.com>", ALL_EXT, &m),
			    "553 5.6.7 Non-ASCII address requires SMTPUTF8");
	assert_null(mail("FROM:<j\xc3\xb8rn@example.com> SMTPUTF8", ALL_EXT, &m));
	assert_true(m.smtputf8);
	assert_null(mail("FROM:<u@b\xc3\xbc" "cher.example> SMTPUTF8", ALL_EXT, &m));
	/* malformed UTF-8 is refused even with SMTPUTF8 */
	assert_string_equal(mail("FROM:<j\xc3rn@example.com> SMTPUTF8", ALL_EXT, &m),
			    "501 5.1.7 Bad sender address syntax");
	assert_non_null(mail("FROM:<j\xc0\xafrn@example.com> SMTPUTF8", ALL_EXT, &m));
	assert_non_null(mail("FROM:<j\xed\xa0\x80rn@example.com> SMTPUTF8", ALL_EXT, &m));
	assert_non_null(mail("FROM:<j\xf4\x90\x80\x80@example.com> SMTPUTF8", ALL_EXT, &m));
	assert_null(mail("FROM:<j\xf0\x9f\x98\x80@example.com> SMTPUTF8", ALL_EXT, &m));
}

static void test_mail_params(void **state)
{
	struct smtp_mail m;

	(void)state;
	assert_null(mail("FROM:<a@b.c> SIZE=12345 BODY=8BITMIME SMTPUTF8 RET=HDRS "
			 "ENVID=QQ+2Bx AUTH=<>", ALL_EXT, &m));
	assert_true(m.has_size);
	assert_int_equal(m.size, 12345);
	assert_int_equal(m.body, MSG_BODY_8BITMIME);
	assert_true(m.smtputf8);
	assert_int_equal(m.ret, MSG_RET_HDRS);
	assert_int_equal(m.envid_len, 6);
	assert_memory_equal(m.envid, "QQ+2Bx", 6);
	assert_null(mail("FROM:<a@b.c>  size=0  body=7bit ret=full", ALL_EXT, &m));
	assert_int_equal(m.size, 0);
	assert_int_equal(m.body, MSG_BODY_7BIT);
	assert_int_equal(m.ret, MSG_RET_FULL);
	assert_null(mail("FROM:<a@b.c> BODY=BINARYMIME", ALL_EXT, &m));
	assert_int_equal(m.body, MSG_BODY_BINARYMIME);
	assert_null(mail("FROM:<a@b.c> REQUIRETLS", ALL_EXT, &m));
	assert_true(m.requiretls);
	assert_null(mail("FROM:<a@b.c> SIZE=18446744073709551615", ALL_EXT, &m));
	assert_int_equal(m.size, UINT64_MAX);
	assert_null(mail("FROM:<a@b.c> AUTH=user+40example.com", ALL_EXT, &m));
	assert_null(mail("FROM:<a@b.c> ", ALL_EXT, &m));
}

static void test_mail_bad_params(void **state)
{
	static const struct {
		const char *arg;
		unsigned ext;
		const char *reply;
	} cases[] = {
		{ "FROM:<a@b.c> SIZE=18446744073709551616", ALL_EXT, "501 5.5.4 Bad SIZE value" },
		{ "FROM:<a@b.c> SIZE=-1", ALL_EXT, "501 5.5.4 Bad SIZE value" },
		{ "FROM:<a@b.c> SIZE=1k", ALL_EXT, "501 5.5.4 Bad SIZE value" },
		{ "FROM:<a@b.c> SIZE", ALL_EXT, "501 5.5.4 Bad parameter syntax" },
		{ "FROM:<a@b.c> SIZE=", ALL_EXT, "501 5.5.4 Bad parameter syntax" },
		{ "FROM:<a@b.c> SIZE=1 SIZE=2", ALL_EXT, "501 5.5.4 Duplicate parameter" },
		{ "FROM:<a@b.c> BODY=9BIT", ALL_EXT, "501 5.5.4 Bad BODY value" },
		{ "FROM:<a@b.c> BODY=BINARYMIME", ALL_EXT & ~SMTP_EXT_CHUNKING,
		  "555 5.5.4 BODY=BINARYMIME requires CHUNKING" },
		{ "FROM:<a@b.c> SMTPUTF8=yes", ALL_EXT, "501 5.5.4 Bad parameter syntax" },
		{ "FROM:<a@b.c> RET=ALL", ALL_EXT, "501 5.5.4 Bad RET value" },
		{ "FROM:<a@b.c> RET=FULL", ALL_EXT & ~SMTP_EXT_DSN, "555 5.5.4 Unsupported parameter" },
		{ "FROM:<a@b.c> ENVID=a+2b", ALL_EXT, "501 5.5.4 Bad ENVID value" },
		{ "FROM:<a@b.c> ENVID=a+2", ALL_EXT, "501 5.5.4 Bad ENVID value" },
		{ "FROM:<a@b.c> ENVID=x", ALL_EXT & ~SMTP_EXT_DSN, "555 5.5.4 Unsupported parameter" },
		{ "FROM:<a@b.c> REQUIRETLS", ALL_EXT & ~SMTP_EXT_REQUIRETLS,
		  "555 5.5.4 Unsupported parameter" },
		{ "FROM:<a@b.c> X-FOO=1", ALL_EXT, "555 5.5.4 Unsupported parameter" },
		{ "FROM:<a@b.c> SIZE=1", 0, "555 5.5.4 Unsupported parameter" },
		{ "FROM:<a@b.c> AUTH=<>", 0, "555 5.5.4 Unsupported parameter" },
		{ "FROM:<a@b.c> -X=1", ALL_EXT, "501 5.5.4 Bad parameter syntax" },
		{ "FROM:<a@b.c> =1", ALL_EXT, "501 5.5.4 Bad parameter syntax" },
		{ "FROM:<a@b.c> X_Y=1", ALL_EXT, "501 5.5.4 Bad parameter syntax" },
		{ "FROM:<a@b.c> SIZE=1=2", ALL_EXT, "501 5.5.4 Bad parameter syntax" },
		{ "FROM:<a@b.c> BODY=8BIT\x01MIME", ALL_EXT, "501 5.5.4 Bad parameter syntax" },
		{ "FROM:<a@b.c> ENVID=\xc3\xa9", ALL_EXT, "501 5.5.4 Bad parameter syntax" },
	};
	struct smtp_mail m;
	char envid[200] = "FROM:<a@b.c> ENVID=";

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *r = mail(cases[i].arg, cases[i].ext, &m);

		if (r == NULL || strcmp(r, cases[i].reply) != 0)
			fail_msg("%s: got %s, want %s", cases[i].arg, r ? r : "ok", cases[i].reply);
	}
	/* ENVID: at most 100 characters, counted decoded */
	memset(envid + 19, 'x', 100);
	assert_null(mail(envid, ALL_EXT, &m));
	envid[119] = 'x';
	assert_string_equal(mail(envid, ALL_EXT, &m), "501 5.5.4 ENVID too long");
	for (int i = 0; i < 33; i++)
		memcpy(envid + 19 + 3 * i, "+2B", 3);
	envid[19 + 99] = '\0';
	assert_null(mail(envid, ALL_EXT, &m));
}

static const char *rcpt(const char *arg, unsigned ext, bool utf8, struct smtp_rcpt *r)
{
	return smtp_parse_rcpt(arg, strlen(arg), ext, utf8, r);
}

static void test_rcpt(void **state)
{
	struct smtp_rcpt r;

	(void)state;
	assert_null(rcpt("TO:<User@Example.COM>", ALL_EXT, false, &r));
	assert_int_equal(r.addr_len, 16);
	assert_memory_equal(r.addr, "User@Example.COM", 16);
	assert_int_equal(r.notify, 0);
	assert_null(r.orcpt);
	assert_null(rcpt("to: <a@b.c> NOTIFY=never", ALL_EXT, false, &r));
	assert_int_equal(r.notify, RCPT_NOTIFY_NEVER);
	assert_null(rcpt("TO:<a@b.c> NOTIFY=SUCCESS,FAILURE,DELAY", ALL_EXT, false, &r));
	assert_int_equal(r.notify, RCPT_NOTIFY_SUCCESS | RCPT_NOTIFY_FAILURE | RCPT_NOTIFY_DELAY);
	assert_null(rcpt("TO:<a@b.c> NOTIFY=delay ORCPT=rfc822;a+40b.c", ALL_EXT, false, &r));
	assert_int_equal(r.notify, RCPT_NOTIFY_DELAY);
	assert_int_equal(r.orcpt_len, 14);
	assert_memory_equal(r.orcpt, "rfc822;a+40b.c", 14);
	assert_null(rcpt("TO:<@hop.example:a@b.c>", ALL_EXT, false, &r));
	assert_memory_equal(r.addr, "a@b.c", 5);
	assert_null(rcpt("TO:<j\xc3\xb8rn@b.c>", ALL_EXT, true, &r));
}

static void test_rcpt_errors(void **state)
{
	static const struct {
		const char *arg;
		const char *reply;
	} cases[] = {
		{ "TO:<>", "501 5.1.3 Bad recipient address syntax" },
		{ "TO:<postmaster>", "501 5.1.3 Bad recipient address syntax" },
		{ "TO:a@b.c", "501 5.5.4 Syntax: RCPT TO:<address> [parameters]" },
		{ "FROM:<a@b.c>", "501 5.5.4 Syntax: RCPT TO:<address> [parameters]" },
		{ "TO:<a@b.c", "501 5.5.4 Syntax: RCPT TO:<address> [parameters]" },
		{ "TO:<a@b.c> NOTIFY=NEVER,DELAY", "501 5.5.4 Bad NOTIFY value" },
		{ "TO:<a@b.c> NOTIFY=SUCCESS,", "501 5.5.4 Bad NOTIFY value" },
		{ "TO:<a@b.c> NOTIFY=,SUCCESS", "501 5.5.4 Bad NOTIFY value" },
		{ "TO:<a@b.c> NOTIFY=SOMETIMES", "501 5.5.4 Bad NOTIFY value" },
		{ "TO:<a@b.c> NOTIFY", "501 5.5.4 Bad parameter syntax" },
		{ "TO:<a@b.c> NOTIFY=NEVER NOTIFY=NEVER", "501 5.5.4 Duplicate parameter" },
		{ "TO:<a@b.c> ORCPT=a@b.c", "501 5.5.4 Bad ORCPT value" },
		{ "TO:<a@b.c> ORCPT=;a@b.c", "501 5.5.4 Bad ORCPT value" },
		{ "TO:<a@b.c> ORCPT=rfc822;", "501 5.5.4 Bad ORCPT value" },
		{ "TO:<a@b.c> ORCPT=rfc822;a+4", "501 5.5.4 Bad ORCPT value" },
		{ "TO:<a@b.c> ORCPT=rf(c;a", "501 5.5.4 Bad ORCPT value" },
		{ "TO:<a@b.c> SIZE=1", "555 5.5.4 Unsupported parameter" },
		{ "TO:<j\xc3\xb8rn@b.c>", "553 5.6.7 Non-ASCII address requires SMTPUTF8" },
	};
	struct smtp_rcpt r;
	char orcpt[600] = "TO:<a@b.c> ORCPT=rfc822;";

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *got = rcpt(cases[i].arg, ALL_EXT, false, &r);

		if (got == NULL || strcmp(got, cases[i].reply) != 0)
			fail_msg("%s: got %s, want %s", cases[i].arg, got ? got : "ok", cases[i].reply);
	}
	assert_string_equal(rcpt("TO:<a@b.c> NOTIFY=NEVER", ALL_EXT & ~SMTP_EXT_DSN, false, &r),
			    "555 5.5.4 Unsupported parameter");
	/* ORCPT: 500 characters at most */
	memset(orcpt + 24, 'x', 493);
	assert_null(rcpt(orcpt, ALL_EXT, false, &r));
	assert_int_equal(r.orcpt_len, 500);
	orcpt[24 + 493] = 'x';
	assert_string_equal(rcpt(orcpt, ALL_EXT, false, &r), "501 5.5.4 Bad ORCPT value");
}

static void test_bdat(void **state)
{
	uint64_t n;
	bool last;

	(void)state;
	assert_null(smtp_parse_bdat("100", 3, &n, &last));
	assert_int_equal(n, 100);
	assert_false(last);
	assert_null(smtp_parse_bdat("0 LAST", 6, &n, &last));
	assert_int_equal(n, 0);
	assert_true(last);
	assert_null(smtp_parse_bdat("7  last", 7, &n, &last));
	assert_true(last);
	assert_non_null(smtp_parse_bdat("", 0, &n, &last));
	assert_non_null(smtp_parse_bdat("LAST", 4, &n, &last));
	assert_non_null(smtp_parse_bdat("10 LAST X", 9, &n, &last));
	assert_non_null(smtp_parse_bdat("10 FIRST", 8, &n, &last));
	assert_non_null(smtp_parse_bdat("-1", 2, &n, &last));
	assert_non_null(smtp_parse_bdat("0x10", 4, &n, &last));
	assert_non_null(smtp_parse_bdat("99999999999999999999", 20, &n, &last));
	assert_null(smtp_parse_bdat("18446744073709551615", 20, &n, &last));
}

static void test_xtext(void **state)
{
	(void)state;
	assert_true(smtp_xtext_valid("", 0));
	assert_true(smtp_xtext_valid("abc+2B+3Dxyz!~", 14));
	assert_false(smtp_xtext_valid("a=b", 3));
	assert_false(smtp_xtext_valid("a b", 3));
	assert_false(smtp_xtext_valid("+2b", 3));
	assert_false(smtp_xtext_valid("+G0", 3));
	assert_false(smtp_xtext_valid("+", 1));
	assert_false(smtp_xtext_valid("+0", 2));
	assert_false(smtp_xtext_valid("\xc3\xa9", 2));
}

static void test_text_safe(void **state)
{
	(void)state;
	assert_true(smtp_text_safe("mx.example.com", 14));
	assert_true(smtp_text_safe("[192.0.2.1]", 11));
	assert_true(smtp_text_safe("user+tag@example.com", 20));
	assert_false(smtp_text_safe("", 0));
	assert_false(smtp_text_safe("a b", 3));
	assert_false(smtp_text_safe("a(b", 3));
	assert_false(smtp_text_safe("a)b", 3));
	assert_false(smtp_text_safe("a;b", 3));
	assert_false(smtp_text_safe("a\r\nX-Evil: 1", 13));
	assert_false(smtp_text_safe("caf\xc3\xa9", 5));
	assert_false(smtp_text_safe("\"q\"", 3));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_verbs),
		cmocka_unit_test(test_verb_with_nul),
		cmocka_unit_test(test_helo),
		cmocka_unit_test(test_mail_paths),
		cmocka_unit_test(test_mail_bad_paths),
		cmocka_unit_test(test_mail_utf8),
		cmocka_unit_test(test_mail_params),
		cmocka_unit_test(test_mail_bad_params),
		cmocka_unit_test(test_rcpt),
		cmocka_unit_test(test_rcpt_errors),
		cmocka_unit_test(test_bdat),
		cmocka_unit_test(test_xtext),
		cmocka_unit_test(test_text_safe),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
