/*
 * test_util_text.c - the text codecs the management API reads network
 * input with: base64 (the Authorization header), RFC 3339 and epoch
 * times (the list's before/after), UTF-8 validity (what JSON and the
 * metrics page may carry as it is).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "util/base64.h"
#include "util/text.h"
#include "util/timefmt.h"

/* 2026-12-04T11:22:07Z */
#define SOME_TIME_MS 1796383327000LL

static void decodes_to(const char *b64, const char *want)
{
	char out[64];
	size_t len = 0;

	assert_true(base64_decode(b64, strlen(b64), out, sizeof(out), &len));
	assert_int_equal(len, strlen(want));
	assert_memory_equal(out, want, len);
}

static void refused(const char *b64)
{
	char out[64];
	size_t len;

	assert_false(base64_decode(b64, strlen(b64), out, sizeof(out), &len));
}

static void test_base64_round_trip(void **state)
{
	static const char *const texts[] = { "", "f", "fo", "foo", "foob", "fooba", "foobar",
					     "admin:s3cret" };
	static const char *const encoded[] = { "", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=",
					       "Zm9vYmFy", "YWRtaW46czNjcmV0" };
	char buf[64];

	(void)state;
	for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
		assert_int_equal(base64_encode(texts[i], strlen(texts[i]), buf), strlen(encoded[i]));
		assert_string_equal(buf, encoded[i]);
		decodes_to(encoded[i], texts[i]);
	}
	/* Every byte value survives. */
	unsigned char all[256], back[256];
	char wide[BASE64_ENCODED_LEN(256) + 1];
	size_t len;

	for (int i = 0; i < 256; i++)
		all[i] = (unsigned char)i;
	base64_encode(all, sizeof(all), wide);
	assert_true(base64_decode(wide, strlen(wide), back, sizeof(back), &len));
	assert_int_equal(len, 256);
	assert_memory_equal(all, back, 256);
}

static void test_base64_strict(void **state)
{
	char out[3];
	size_t len;

	(void)state;
	refused("Zg");        /* padding missing */
	refused("Zg=");
	refused("Zh==");      /* bits the padding drops are not zero */
	refused("Zm9=");
	refused("Zg==Zg=="); /* padding in the middle */
	refused("Z===");
	refused("====");
	refused("Zm9v YmFy"); /* whitespace */
	refused("Zm9v\n");
	refused("Zm-v");      /* the URL alphabet is not this one */
	refused("Zm_v");
	/* Output bound: "foobar" needs 6 bytes. */
	assert_false(base64_decode("Zm9vYmFy", 8, out, sizeof(out), &len));
	assert_true(base64_decode("Zm9v", 4, out, sizeof(out), &len));
	assert_int_equal(len, 3);
}

static void parses_to(const char *s, int64_t want)
{
	int64_t ms = -1;

	assert_true(timefmt_parse(s, &ms));
	assert_int_equal(ms, want);
}

static void test_time_parse(void **state)
{
	(void)state;
	parses_to("2026-12-04T11:22:07Z", SOME_TIME_MS);
	parses_to("2026-12-04t11:22:07z", SOME_TIME_MS);
	parses_to("2026-12-04 11:22:07Z", SOME_TIME_MS);
	parses_to("2026-12-04T12:22:07+01:00", SOME_TIME_MS);
	parses_to("2026-12-04T06:52:07-04:30", SOME_TIME_MS);
	parses_to("2026-12-04T11:22:07.250Z", SOME_TIME_MS + 250);
	parses_to("2026-12-04T11:22:07.5Z", SOME_TIME_MS + 500);
	parses_to("2026-12-04T11:22:07.123456789Z", SOME_TIME_MS + 123);
	parses_to("1970-01-01T00:00:00Z", 0);
	parses_to("1969-12-31T23:59:59Z", -1000);
	parses_to("2000-02-29T00:00:00Z", 951782400000LL);
	parses_to("2016-12-31T23:59:60Z", 1483228800000LL); /* a leap second */
	parses_to("1796383327", SOME_TIME_MS);
	parses_to("0", 0);
}

static void test_time_parse_refuses(void **state)
{
	static const char *const bad[] = {
		"", "now", "-1", "+1796383327", "1796383327.5", " 1796383327",
		"99999999999999999999",
		"2026-12-04", "2026-12-04T11:22:07", "2026-12-04T11:22Z",
		"2026-13-04T11:22:07Z", "2026-00-04T11:22:07Z", "2026-12-32T11:22:07Z",
		"2026-02-29T11:22:07Z", "1900-02-29T00:00:00Z", "2026-12-04T24:00:00Z",
		"2026-12-04T11:60:07Z", "2026-12-04T11:22:61Z", "2026-12-04T11:22:07.Z",
		"2026-12-04T11:22:07+0100", "2026-12-04T11:22:07+24:00", "2026-12-04X11:22:07Z",
		"2026-12-04T11:22:07Zjunk", "26-12-04T11:22:07Z", "2026-1-04T11:22:07Z",
		"0000-01-01T00:00:00+01:00", "9999-12-31T23:59:59-00:01",
	};
	int64_t ms;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_false(timefmt_parse(bad[i], &ms));
}

static void test_time_format(void **state)
{
	char buf[TIMEFMT_RFC3339_SIZE];
	int64_t back;

	(void)state;
	assert_string_equal(timefmt_rfc3339(SOME_TIME_MS + 999, buf), "2026-12-04T11:22:07Z");
	assert_string_equal(timefmt_rfc3339(0, buf), "1970-01-01T00:00:00Z");
	assert_string_equal(timefmt_rfc3339(-1, buf), "1969-12-31T23:59:59Z");
	assert_string_equal(timefmt_rfc3339(951782400000LL, buf), "2000-02-29T00:00:00Z");
	assert_string_equal(timefmt_rfc3339(INT64_MAX, buf), "9999-12-31T23:59:59Z");
	assert_string_equal(timefmt_rfc3339(INT64_MIN, buf), "0000-01-01T00:00:00Z");
	/* Every day of four centuries formats and parses back. */
	for (int64_t day = -73048; day < 73048; day += 7) {
		int64_t ms = day * 86400000LL + 45296000; /* 12:34:56 */

		assert_true(timefmt_parse(timefmt_rfc3339(ms, buf), &back));
		assert_int_equal(back, ms);
	}
}

static void test_utf8_valid(void **state)
{
	(void)state;
	assert_true(text_utf8_valid("", 0));
	assert_true(text_utf8_valid("plain ascii", 11));
	assert_true(text_utf8_valid("caf\xc3\xa9", 5));
	assert_true(text_utf8_valid("\xe2\x82\xac", 3));          /* U+20AC */
	assert_true(text_utf8_valid("\xf0\x9f\x93\xa7", 4));      /* U+1F4E7 */
	assert_true(text_utf8_valid("\xf4\x8f\xbf\xbf", 4));      /* U+10FFFF */
	assert_true(text_utf8_valid("a\0b", 3));
	assert_false(text_utf8_valid("caf\xe9", 4));              /* Latin-1 */
	assert_false(text_utf8_valid("\xc3", 1));                 /* cut short */
	assert_false(text_utf8_valid("\xe2\x82", 2));
	assert_false(text_utf8_valid("\xc0\xaf", 2));             /* overlong '/' */
	assert_false(text_utf8_valid("\xe0\x80\xaf", 3));
	assert_false(text_utf8_valid("\xed\xa0\x80", 3));         /* a surrogate */
	assert_false(text_utf8_valid("\xf4\x90\x80\x80", 4));     /* past U+10FFFF */
	assert_false(text_utf8_valid("\xf8\x88\x80\x80\x80", 5)); /* 5-byte form */
	assert_false(text_utf8_valid("\x80", 1));                 /* a lone continuation */
	assert_false(text_utf8_valid("\xc3\x28", 2));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_base64_round_trip),
		cmocka_unit_test(test_base64_strict),
		cmocka_unit_test(test_time_parse),
		cmocka_unit_test(test_time_parse_refuses),
		cmocka_unit_test(test_time_format),
		cmocka_unit_test(test_utf8_valid),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
