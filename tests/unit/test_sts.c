/*
 * test_sts.c - MTA-STS as pure functions and files: the policy parser
 * (good, CRLF, missing fields, bad max_age, unknown keys, oversized), the
 * TXT record parser (id rules, several records, other TXT records),
 * matching MX names against patterns (one-label wildcard, case, trailing
 * dot), and the disk cache (write, read back by a new cache, a corrupt
 * file ignored).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "sts/internal.h"
#include "sts/sts.h"

static bool parse(const char *text, struct sts_policy *p, char *why)
{
	return sts_policy_parse(text, strlen(text), p, why, 200);
}

static void test_policy_good(void **state)
{
	struct sts_policy p;
	char why[200];

	(void)state;
	assert_true(parse("version: STSv1\nmode: enforce\nmx: mail.example.com\n"
			  "mx: *.Example.NET.\nmax_age: 604800\n", &p, why));
	assert_int_equal(p.mode, STS_MODE_ENFORCE);
	assert_int_equal(p.max_age, 604800);
	assert_int_equal(p.n_mx, 2);
	assert_string_equal(p.mx[0], "mail.example.com");
	assert_string_equal(p.mx[1], "*.example.net");
	/* CRLF, no final line end, spaces after the colon, unknown keys. */
	assert_true(parse("version: STSv1\r\nmode:testing\r\nfoo_bar: anything at all\r\n"
			  "mx:   mx.example.org  \r\nmax_age: 0", &p, why));
	assert_int_equal(p.mode, STS_MODE_TESTING);
	assert_int_equal(p.max_age, 0);
	assert_string_equal(p.mx[0], "mx.example.org");
	/* mode none needs no mx. */
	assert_true(parse("version: STSv1\nmode: none\nmax_age: 31557600\n", &p, why));
	assert_int_equal(p.mode, STS_MODE_NONE);
	/* A field given twice keeps its first value (tern's choice). */
	assert_true(parse("version: STSv1\nmode: testing\nmode: enforce\nmx: a.example\n"
			  "max_age: 5\n", &p, why));
	assert_int_equal(p.mode, STS_MODE_TESTING);
}

static void test_policy_invalid(void **state)
{
	static const char *const bad[] = {
		"mode: enforce\nmx: a.example\nmax_age: 1\n",                      /* no version */
		"version: STSv2\nmode: enforce\nmx: a.example\nmax_age: 1\n",      /* wrong version */
		"version: STSv1\nmx: a.example\nmax_age: 1\n",                     /* no mode */
		"version: STSv1\nmode: Enforce\nmx: a.example\nmax_age: 1\n",      /* case matters */
		"version: STSv1\nmode: enforce\nmx: a.example\n",                  /* no max_age */
		"version: STSv1\nmode: enforce\nmax_age: 1\n",                     /* no mx */
		"version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 31557601\n",
		"version: STSv1\nmode: enforce\nmx: a.example\nmax_age: -1\n",
		"version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 12345678901\n",
		"version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 1d\n",
		"version: STSv1\nmode: enforce\nmx: a..example\nmax_age: 1\n",
		"version: STSv1\nmode: enforce\nmx: *a.example\nmax_age: 1\n",
		"version: STSv1\nmode: enforce\nmx: a.*.example\nmax_age: 1\n",
		"version: STSv1\nmode enforce\nmx: a.example\nmax_age: 1\n",       /* no colon */
		"",
	};
	struct sts_policy p;
	char why[200];

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		why[0] = '\0';
		if (parse(bad[i], &p, why))
			fail_msg("accepted policy %zu: %s", i, bad[i]);
		assert_true(why[0] != '\0');
	}
}

static void test_policy_limits(void **state)
{
	size_t big = STS_BODY_MAX + 100;
	char *text = malloc(big + 1);
	struct sts_policy p;
	char why[200];
	size_t n;

	(void)state;
	assert_non_null(text);
	n = (size_t)snprintf(text, big, "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 1\n");
	while (n < big - 20)
		n += (size_t)snprintf(text + n, big - n, "x: padding padding\n");
	assert_false(sts_policy_parse(text, n, &p, why, sizeof(why)));
	assert_non_null(strstr(why, "larger"));
	/* STS_MX_MAX patterns parse; one more does not. */
	n = (size_t)snprintf(text, big, "version: STSv1\nmode: enforce\nmax_age: 1\n");
	for (int i = 0; i < STS_MX_MAX; i++)
		n += (size_t)snprintf(text + n, big - n, "mx: mx%d.example\n", i);
	assert_true(sts_policy_parse(text, n, &p, why, sizeof(why)));
	assert_int_equal(p.n_mx, STS_MX_MAX);
	n += (size_t)snprintf(text + n, big - n, "mx: one-too-many.example\n");
	assert_false(sts_policy_parse(text, n, &p, why, sizeof(why)));
	free(text);
}

/* TXT rdata: one character-string per part. */
static size_t txt_wire(uint8_t *out, const char *const *parts, size_t n)
{
	size_t len = 0;

	for (size_t i = 0; i < n; i++) {
		size_t l = strlen(parts[i]);

		out[len++] = (uint8_t)l;
		memcpy(out + len, parts[i], l);
		len += l;
	}
	return len;
}

static enum sts_txt_status txt(const char *const *records, size_t n, char *id)
{
	uint8_t wire[8][600];
	const uint8_t *rd[8];
	int rdlen[8];
	char why[200];

	for (size_t i = 0; i < n; i++) {
		rdlen[i] = (int)txt_wire(wire[i], &records[i], 1);
		rd[i] = wire[i];
	}
	return sts_txt_parse(rd, rdlen, n, id, why, sizeof(why));
}

static void test_txt_records(void **state)
{
	char id[STS_ID_MAX + 1];
	const char *one[] = { "v=STSv1; id=20160831085700Z;" };
	const char *spaced[] = { "v=STSv1 ;id=abc ; ext=va-lue;" };
	const char *mixed[] = { "v=spf1 -all", "v=STSv1; id=1", "something else" };
	const char *two[] = { "v=STSv1; id=1", "v=STSv1; id=2" };
	const char *none[] = { "v=spf1 -all", "v=STSv10; id=1" };
	const char *const bad[] = {
		"v=STSv1;",                       /* no id */
		"v=STSv1; id=",                   /* empty id */
		"v=STSv1; id=abc-def",            /* not alphanumeric */
		"v=STSv1; id=123456789012345678901234567890123", /* 33 */
		"v=STSv1; id=1; id=2",            /* two ids */
		"v=STSv1; id=1 x",                /* junk */
		"v=STSv1; =1; id=2",              /* empty name */
	};

	(void)state;
	assert_int_equal(txt(one, 1, id), STS_TXT_OK);
	assert_string_equal(id, "20160831085700Z");
	assert_int_equal(txt(spaced, 1, id), STS_TXT_OK);
	assert_string_equal(id, "abc");
	assert_int_equal(txt(mixed, 3, id), STS_TXT_OK);
	assert_string_equal(id, "1");
	assert_int_equal(txt(two, 2, id), STS_TXT_INVALID);
	assert_int_equal(txt(none, 2, id), STS_TXT_NONE);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (txt(&bad[i], 1, id) != STS_TXT_INVALID)
			fail_msg("accepted TXT record %s", bad[i]);
	{
		/* 32 characters is the most; a record split in two strings joins. */
		const char *parts[] = { "v=STSv1; id=1234567890", "1234567890123456789012" };
		uint8_t wire[100];
		const uint8_t *rd[1] = { wire };
		int rdlen[1] = { (int)txt_wire(wire, parts, 2) };
		char why[200];

		assert_int_equal(sts_txt_parse(rd, rdlen, 1, id, why, sizeof(why)), STS_TXT_OK);
		assert_string_equal(id, "12345678901234567890123456789012");
		/* a character-string running past the rdata is no record */
		rdlen[0] -= 3;
		assert_int_equal(sts_txt_parse(rd, rdlen, 1, id, why, sizeof(why)), STS_TXT_NONE);
	}
}

static void test_mx_match(void **state)
{
	struct sts_policy p;
	char why[200];

	(void)state;
	assert_true(parse("version: STSv1\nmode: enforce\nmx: mail.example.com\n"
			  "mx: *.example.net\nmax_age: 1\n", &p, why));
	assert_true(sts_mx_match(&p, "mail.example.com"));
	assert_true(sts_mx_match(&p, "MAIL.Example.COM."));
	assert_false(sts_mx_match(&p, "mail.example.com.evil"));
	assert_false(sts_mx_match(&p, "xmail.example.com"));
	assert_true(sts_mx_match(&p, "mx1.example.net"));
	assert_true(sts_mx_match(&p, "MX1.EXAMPLE.NET."));
	assert_false(sts_mx_match(&p, "a.b.example.net"));   /* one label only */
	assert_false(sts_mx_match(&p, "example.net"));
	assert_false(sts_mx_match(&p, ".example.net"));
	assert_false(sts_mx_match(&p, ""));
}

static void test_cache_round_trip(void **state)
{
	char dir[] = "/tmp/tern-test-sts-XXXXXX", path[256];
	const char *body = "version: STSv1\r\nmode: enforce\r\nmx: mx.a.example\r\nmax_age: 3600\r\n";
	const struct sts_cache_entry *e;
	struct sts_cache *c;
	struct sts_policy p;
	char why[200];
	FILE *f;

	(void)state;
	assert_non_null(mkdtemp(dir));
	assert_true(sts_policy_parse(body, strlen(body), &p, why, sizeof(why)));
	c = sts_cache_new(dir, false);
	assert_non_null(c);
	assert_null(sts_cache_get(c, "a.example"));
	sts_cache_put(c, "a.example", "id42", &p, body, strlen(body), 1700000000);
	e = sts_cache_get(c, "a.example");
	assert_non_null(e);
	assert_string_equal(e->id, "id42");
	assert_int_equal(e->expires, 1700000000 + 3600);
	sts_cache_flush(c);
	sts_cache_free(c);

	/* Files that must be ignored: garbage, a policy that does not parse,
	 * a file named for another domain, a temporary file. */
	snprintf(path, sizeof(path), "%s/b.example", dir);
	assert_non_null(f = fopen(path, "w"));
	fputs("garbage\n", f);
	fclose(f);
	snprintf(path, sizeof(path), "%s/c.example", dir);
	assert_non_null(f = fopen(path, "w"));
	fputs("tern-mta-sts 1\ndomain: c.example\nid: 1\nfetched: 5\n\nversion: STSv1\n", f);
	fclose(f);
	snprintf(path, sizeof(path), "%s/d.example", dir);
	assert_non_null(f = fopen(path, "w"));
	fputs("tern-mta-sts 1\ndomain: a.example\nid: 1\nfetched: 5\n\nversion: STSv1\nmode: none\n"
	      "max_age: 1\n", f);
	fclose(f);

	c = sts_cache_new(dir, true);
	assert_non_null(c);
	e = sts_cache_get(c, "a.example");
	assert_non_null(e);
	assert_string_equal(e->id, "id42");
	assert_int_equal(e->fetched, 1700000000);
	assert_int_equal(e->expires, 1700000000 + 3600);
	assert_int_equal(e->policy.mode, STS_MODE_ENFORCE);
	assert_string_equal(e->policy.mx[0], "mx.a.example");
	assert_null(sts_cache_get(c, "b.example"));
	assert_null(sts_cache_get(c, "c.example"));
	assert_null(sts_cache_get(c, "d.example"));
	/* read-only: a put stays in memory */
	sts_cache_put(c, "e.example", "1", &p, body, strlen(body), 1);
	assert_non_null(sts_cache_get(c, "e.example"));
	sts_cache_free(c);
	snprintf(path, sizeof(path), "%s/e.example", dir);
	assert_int_equal(access(path, F_OK), -1);

	for (const char *n = "a.example\0b.example\0c.example\0d.example\0"; *n; n += strlen(n) + 1) {
		snprintf(path, sizeof(path), "%s/%s", dir, n);
		unlink(path);
	}
	assert_int_equal(rmdir(dir), 0);
}

static void test_cache_file_parse(void **state)
{
	struct sts_cache_entry e;
	char why[200];
	const char *good = "tern-mta-sts 1\ndomain: x.example\nid: abc\nfetched: 100\n\n"
			   "version: STSv1\nmode: testing\nmx: *.x.example\nmax_age: 10\n";
	const char *const bad[] = {
		"tern-mta-sts 2\ndomain: x.example\nid: abc\nfetched: 100\n\nversion: STSv1\n",
		"tern-mta-sts 1\ndomain: ../etc\nid: abc\nfetched: 100\n\nversion: STSv1\n",
		"tern-mta-sts 1\ndomain: x.example\nid: a-b\nfetched: 100\n\nversion: STSv1\n",
		"tern-mta-sts 1\ndomain: x.example\nid: abc\nfetched: -5\n\nversion: STSv1\n",
		"tern-mta-sts 1\ndomain: x.example\nid: abc\nfetched: 100\nversion: STSv1\n",
		"tern-mta-sts 1\ndomain: x.example\nid: abc\n",
	};

	(void)state;
	assert_true(sts_cache_file_parse(good, strlen(good), &e, why, sizeof(why)));
	assert_string_equal(e.domain, "x.example");
	assert_int_equal(e.expires, 110);
	assert_int_equal(e.policy.mode, STS_MODE_TESTING);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (sts_cache_file_parse(bad[i], strlen(bad[i]), &e, why, sizeof(why)))
			fail_msg("accepted cache file %zu", i);
	/* A NUL inside a value (found by fuzz_sts_policy): the id would be
	 * checked, and kept, only up to it. */
	{
		static const char nul_id[] = "tern-mta-sts 1\ndomain: x.example\nid: \0abc\n"
					     "fetched: 100\n\nversion: STSv1\nmode: testing\n"
					     "mx: *.x.example\nmax_age: 10\n";

		assert_false(sts_cache_file_parse(nul_id, sizeof(nul_id) - 1, &e, why, sizeof(why)));
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_policy_good),
		cmocka_unit_test(test_policy_invalid),
		cmocka_unit_test(test_policy_limits),
		cmocka_unit_test(test_txt_records),
		cmocka_unit_test(test_mx_match),
		cmocka_unit_test(test_cache_round_trip),
		cmocka_unit_test(test_cache_file_parse),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
