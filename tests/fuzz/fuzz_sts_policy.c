/*
 * fuzz_sts_policy.c - libFuzzer harness for the MTA-STS parsers
 * (src/sts/policy.c, src/sts/cache.c): the policy file (from the network
 * and the disk cache), the _mta-sts TXT record data, and the cache file.
 * The first byte picks the parser; the rest is its input.
 *
 * Invariants, for every input:
 * - nothing is read outside the input (ASan sees the input as its own
 *   allocation of exactly its size);
 * - a policy that parses has a mode, max_age within 0..STS_MAX_AGE_MAX,
 *   at most STS_MX_MAX patterns, each NUL-terminated, non-empty, lower
 *   case, without a trailing dot, "*" only as a whole first label; a
 *   mode other than none has at least one pattern; each pattern matches
 *   itself (wildcards: with a label put in place of "*");
 * - an id that parses is 1..STS_ID_MAX letters and digits.
 */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sts/internal.h"
#include "sts/sts.h"

static void check_id(const char *id)
{
	size_t len = strlen(id);

	assert(len >= 1 && len <= STS_ID_MAX);
	for (size_t i = 0; i < len; i++)
		assert((id[i] >= 'a' && id[i] <= 'z') || (id[i] >= 'A' && id[i] <= 'Z') ||
		       (id[i] >= '0' && id[i] <= '9'));
}

static void check_policy(const struct sts_policy *p)
{
	assert(p->mode == STS_MODE_NONE || p->mode == STS_MODE_TESTING ||
	       p->mode == STS_MODE_ENFORCE);
	assert(p->max_age >= 0 && p->max_age <= STS_MAX_AGE_MAX);
	assert(p->n_mx <= STS_MX_MAX);
	assert(p->mode == STS_MODE_NONE || p->n_mx > 0);
	for (size_t i = 0; i < p->n_mx; i++) {
		const char *m = p->mx[i];
		size_t len = strnlen(m, STS_MX_LEN);
		char host[STS_MX_LEN + 8];

		assert(len > 0 && len < STS_MX_LEN && m[len - 1] != '.');
		for (size_t k = 0; k < len; k++) {
			assert(!(m[k] >= 'A' && m[k] <= 'Z'));
			assert(m[k] != '*' || (k == 0 && len > 2 && m[1] == '.'));
		}
		if (m[0] == '*') {
			host[0] = 'x';
			memcpy(host + 1, m + 1, len); /* ".rest" and the NUL */
		} else {
			memcpy(host, m, len + 1);
		}
		assert(sts_mx_match(p, host));
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sts_policy p;
	struct sts_cache_entry e;
	char id[STS_ID_MAX + 1], why[256];
	const uint8_t *rd[1];
	int rdlen[1];
	char *text;

	if (size < 1)
		return 0;
	/* An exact-size copy, so ASan catches a read past the end. */
	text = malloc(size - 1 ? size - 1 : 1);
	if (text == NULL)
		return 0;
	memcpy(text, data + 1, size - 1);
	switch (data[0] % 4) {
	case 0:
		if (sts_policy_parse(text, size - 1, &p, why, sizeof(why)))
			check_policy(&p);
		break;
	case 1:
		if (sts_txt_record_parse(text, size - 1, id, why, sizeof(why)))
			check_id(id);
		break;
	case 2:
		rd[0] = (const uint8_t *)text;
		rdlen[0] = (int)(size - 1);
		if (sts_txt_parse(rd, rdlen, 1, id, why, sizeof(why)) == STS_TXT_OK)
			check_id(id);
		break;
	case 3:
		if (sts_cache_file_parse(text, size - 1, &e, why, sizeof(why))) {
			check_id(e.id);
			check_policy(&e.policy);
			assert(e.expires == e.fetched + e.policy.max_age);
		}
		break;
	}
	free(text);
	return 0;
}
