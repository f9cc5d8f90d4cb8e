/*
 * fuzz_rdata.c - libFuzzer harness for the DNS record data tern reads
 * (src/dns/rdata.c): names, MX, A and AAAA. The input is one record's
 * data, whatever a name server sent.
 *
 * Invariants, for every input:
 * - nothing is read outside the input (ASan sees the input as its own
 *   allocation of exactly its size);
 * - a name that parses is NUL-terminated, at most DNS_NAME_MAX characters,
 *   lower-case letters, digits, '-', '_' and single dots between labels of
 *   1..63, no leading or trailing dot; the count of bytes used is within
 *   the input and the name re-encodes to exactly those bytes, up to case;
 * - an MX parses exactly when its name ends at the end of the data;
 * - A parses exactly for 4 bytes, AAAA for 16, and copies them;
 * - TLSA parses exactly from 4 bytes on, its data inside the input, and
 *   a record judged usable has a digest of its matching type's length.
 */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "dns/rdata.h"
#include "dns/resolver.h"
#include "route/plan.h"

static void check_name(const char *name, const uint8_t *wire, size_t used)
{
	size_t len = strlen(name), pos = 0, label_start = 0;

	assert(len <= DNS_NAME_MAX);
	if (len == 0) {
		/* the root: a single zero byte */
		assert(used == 1 && wire[0] == 0);
		return;
	}
	assert(name[0] != '.' && name[len - 1] != '.');
	/* Re-encode and compare with the bytes consumed. */
	for (size_t i = 0; i <= len; i++) {
		if (i == len || name[i] == '.') {
			size_t l = i - label_start;

			assert(l >= 1 && l <= 63);
			assert(wire[pos] == l);
			for (size_t k = 0; k < l; k++) {
				char c = name[label_start + k];
				uint8_t w = wire[pos + 1 + k];

				assert((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_');
				assert(w == (uint8_t)c || (c >= 'a' && c <= 'z' && w == (uint8_t)(c - 32)));
			}
			pos += 1 + l;
			label_start = i + 1;
			if (i == len)
				break;
		}
	}
	assert(wire[pos] == 0);
	assert(used == pos + 1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *copy = malloc(size ? size : 1);
	char name[DNS_NAME_MAX + 1];
	struct ipaddr addr;
	struct dns_tlsa tlsa;
	uint16_t pref;
	size_t used;

	if (copy == NULL)
		return 0;
	memcpy(copy, data, size);
	used = dns_name_text(copy, size, name, sizeof(name));
	if (used != 0) {
		assert(used <= size);
		check_name(name, copy, used);
	}
	if (dns_rdata_mx(copy, size, &pref, name, sizeof(name))) {
		assert(size >= 3 && pref == (uint16_t)(copy[0] << 8 | copy[1]));
		assert(dns_name_text(copy + 2, size - 2, name, sizeof(name)) == size - 2);
	} else if (size >= 3) {
		assert(dns_name_text(copy + 2, size - 2, name, sizeof(name)) != size - 2);
	}
	assert(dns_rdata_addr(copy, size, DNS_TYPE_A, &addr) == (size == 4));
	if (size == 4)
		assert(addr.family == AF_INET && memcmp(addr.bytes, copy, 4) == 0);
	assert(dns_rdata_addr(copy, size, DNS_TYPE_AAAA, &addr) == (size == 16));
	if (size == 16)
		assert(addr.family == AF_INET6 && memcmp(addr.bytes, copy, 16) == 0);
	if (dns_rdata_tlsa(copy, size, &tlsa)) {
		assert(size >= 4 && tlsa.data == copy + 3 && tlsa.len == size - 3);
		assert(tlsa.usage == copy[0] && tlsa.selector == copy[1] && tlsa.mtype == copy[2]);
		if (route_tlsa_usable(&tlsa))
			assert((tlsa.usage == 2 || tlsa.usage == 3) && tlsa.selector <= 1 &&
			       (tlsa.mtype == 0 || (tlsa.mtype == 1 && tlsa.len == 32) ||
				(tlsa.mtype == 2 && tlsa.len == 64)));
	} else {
		assert(size < 4);
	}
	free(copy);
	return 0;
}
