/*
 * fuzz_admin_input.c - libFuzzer harness for what the management API
 * (src/admin/http_api.c) decodes from a request before it trusts it: the
 * base64 of an Authorization header (util/base64.c), the before/after
 * times of a list (util/timefmt.c) and the UTF-8 check that decides
 * whether a string goes into JSON as it is (util/text.c).
 *
 * Invariants, for every input:
 * - base64_decode accepts exactly the canonical encodings: whatever it
 *   accepts encodes back to the very same text, into an output bound it
 *   never crosses (ASan sees one byte too many), and the length it
 *   reports is what the text's length and padding say;
 * - timefmt_parse of the input as a C string either refuses it or gives
 *   a time whose RFC 3339 form parses back to the same second (the
 *   milliseconds are dropped by the format), for every input that is not
 *   a bare number: whatever the offset, a time it accepts lies within
 *   the years 0000-9999 the format can write;
 * - text_utf8_valid agrees with a decoder written the other way round:
 *   by the Unicode table of well-formed byte sequences (Table 3-7).
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/base64.h"
#include "util/text.h"
#include "util/timefmt.h"

static void fail(int line, const char *what)
{
	fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, line, what);
	abort();
}

#define check(ok) ((ok) ? (void)0 : fail(__LINE__, #ok))

static void check_base64(const uint8_t *data, size_t size)
{
	size_t cap = size / 4 * 3, len = 0;
	unsigned char *out = malloc(cap > 0 ? cap : 1);
	char *again;

	check(out != NULL);
	if (base64_decode((const char *)data, size, out, cap, &len)) {
		check(len <= cap && len + 2 >= cap);
		again = malloc(BASE64_ENCODED_LEN(len) + 1);
		check(again != NULL);
		check(base64_encode(out, len, again) == size);
		check(memcmp(again, data, size) == 0);
		free(again);
		/* One byte short of room is refused, never overrun. */
		if (len > 0) {
			unsigned char *tight = malloc(len - 1 > 0 ? len - 1 : 1);
			size_t n;

			check(tight != NULL);
			check(!base64_decode((const char *)data, size, tight, len - 1, &n));
			free(tight);
		}
	}
	free(out);
}

static void check_time(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1), buf[TIMEFMT_RFC3339_SIZE];
	int64_t ms, back;
	bool number = size > 0;

	check(s != NULL);
	memcpy(s, data, size);
	s[size] = '\0';
	for (size_t i = 0; i < size; i++)
		number &= data[i] >= '0' && data[i] <= '9';
	if (timefmt_parse(s, &ms) && !number) {
		check(strlen(timefmt_rfc3339(ms, buf)) == TIMEFMT_RFC3339_SIZE - 1);
		check(timefmt_parse(buf, &back));
		check(back == ms - ((ms % 1000) + 1000) % 1000);
	}
	free(s);
}

/* Well-formed UTF-8 by Table 3-7 of the Unicode standard. */
static bool utf8_by_table(const uint8_t *p, size_t n)
{
	size_t i = 0;

	while (i < n) {
		uint8_t c = p[i];
		uint8_t lo = 0x80, hi = 0xbf;
		size_t k;

		if (c <= 0x7f) {
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf)
			k = 1;
		else if (c >= 0xe0 && c <= 0xef)
			k = 2, lo = c == 0xe0 ? 0xa0 : 0x80, hi = c == 0xed ? 0x9f : 0xbf;
		else if (c >= 0xf0 && c <= 0xf4)
			k = 3, lo = c == 0xf0 ? 0x90 : 0x80, hi = c == 0xf4 ? 0x8f : 0xbf;
		else
			return false;
		if (i + k >= n || p[i + 1] < lo || p[i + 1] > hi)
			return false;
		for (size_t j = 2; j <= k; j++)
			if (p[i + j] < 0x80 || p[i + j] > 0xbf)
				return false;
		i += k + 1;
	}
	return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	check_base64(data, size);
	check_time(data, size);
	check(text_utf8_valid((const char *)data, size) == utf8_by_table(data, size));
	return 0;
}
