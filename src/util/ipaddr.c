/*
 * ipaddr.c - IPv4/IPv6 addresses and CIDR prefixes; see ipaddr.h.
 *
 * Text is never trusted to be NUL-terminated: every parse copies at most a
 * fixed number of bytes into a stack buffer (refusing anything longer)
 * before handing it to inet_pton, which then sees exactly the caller's
 * bytes. inet_pton's own rules decide what an address is (dotted quads of
 * four decimal parts only, no zone ids), so "10.1" or "fe80::1%eth0" are
 * refused rather than guessed at.
 *
 * Invariant kept for every struct ipprefix this file produces: the host
 * bits beyond the prefix length are zero, so containment is a masked
 * compare of the address alone.
 */
#include "util/ipaddr.h"

#include <arpa/inet.h>
#include <string.h>
#include <sys/socket.h>

/* Longest text form of an address (INET6_ADDRSTRLEN counts the NUL). */
#define IPADDR_TEXT_MAX (INET6_ADDRSTRLEN - 1)

static const uint8_t v4_mapped_prefix[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

bool ipaddr_parse(const char *s, size_t len, struct ipaddr *out)
{
	char buf[IPADDR_TEXT_MAX + 1];
	struct ipaddr a;

	if (s == NULL || len == 0 || len > IPADDR_TEXT_MAX)
		return false;
	/* A NUL inside the text would let inet_pton see a shorter address. */
	if (memchr(s, '\0', len) != NULL)
		return false;
	memcpy(buf, s, len);
	buf[len] = '\0';

	memset(&a, 0, sizeof(a));
	if (memchr(buf, ':', len) != NULL) {
		if (inet_pton(AF_INET6, buf, a.bytes) != 1)
			return false;
		a.family = AF_INET6;
	} else {
		if (inet_pton(AF_INET, buf, a.bytes) != 1)
			return false;
		a.family = AF_INET;
	}
	*out = a;
	return true;
}

/* Prefix length: 1 to 3 decimal digits, no sign, no leading zero. */
static bool parse_bits(const char *s, size_t len, unsigned max, uint8_t *out)
{
	unsigned v = 0;

	if (len == 0 || len > 3 || (len > 1 && s[0] == '0'))
		return false;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (unsigned)(s[i] - '0');
	}
	if (v > max)
		return false;
	*out = (uint8_t)v;
	return true;
}

bool ipprefix_parse(const char *s, size_t len, struct ipprefix *out)
{
	struct ipprefix p;
	const char *slash;
	size_t addr_len, nbytes;
	unsigned max;

	if (s == NULL)
		return false;
	slash = memchr(s, '/', len);
	addr_len = slash != NULL ? (size_t)(slash - s) : len;

	memset(&p, 0, sizeof(p));
	if (!ipaddr_parse(s, addr_len, &p.addr))
		return false;
	max = p.addr.family == AF_INET ? 32 : 128;
	if (slash == NULL) {
		p.bits = (uint8_t)max;
	} else if (!parse_bits(slash + 1, len - addr_len - 1, max, &p.bits)) {
		return false;
	}

	/* Clear host bits: the partial byte, then every byte after it. */
	nbytes = max / 8;
	if (p.bits % 8 != 0)
		p.addr.bytes[p.bits / 8] &= (uint8_t)(0xff << (8 - p.bits % 8));
	for (size_t i = (p.bits + 7u) / 8; i < nbytes; i++)
		p.addr.bytes[i] = 0;
	*out = p;
	return true;
}

/* Do the first bits bits of a and b agree? */
static bool prefix_equal(const uint8_t *a, const uint8_t *b, unsigned bits)
{
	unsigned whole = bits / 8, rest = bits % 8;

	if (memcmp(a, b, whole) != 0)
		return false;
	if (rest == 0)
		return true;
	uint8_t mask = (uint8_t)(0xff << (8 - rest));
	return (a[whole] & mask) == (b[whole] & mask);
}

bool ipprefix_contains(const struct ipprefix *p, const struct ipaddr *addr)
{
	uint8_t mapped[16];

	if (p == NULL || addr == NULL || p->addr.family == 0 || addr->family == 0)
		return false;
	if (p->addr.family == addr->family)
		return prefix_equal(p->addr.bytes, addr->bytes, p->bits);
	if (p->addr.family == AF_INET && addr->family == AF_INET6) {
		/* ::ffff:a.b.c.d is how a dual-stack socket shows an IPv4 peer. */
		if (memcmp(addr->bytes, v4_mapped_prefix, sizeof(v4_mapped_prefix)) != 0)
			return false;
		return prefix_equal(p->addr.bytes, addr->bytes + 12, p->bits);
	}
	if (p->addr.family == AF_INET6 && addr->family == AF_INET) {
		/* The mirror case: a prefix written as ::ffff:10.0.0.0/104
		 * holds the plain IPv4 address 10.1.2.3 too. */
		memcpy(mapped, v4_mapped_prefix, sizeof(v4_mapped_prefix));
		memcpy(mapped + 12, addr->bytes, 4);
		return prefix_equal(p->addr.bytes, mapped, p->bits);
	}
	return false;
}

const char *ipaddr_format(const struct ipaddr *a, char *buf, size_t size)
{
	if (buf == NULL || size == 0)
		return buf;
	buf[0] = '\0';
	if (a == NULL || (a->family != AF_INET && a->family != AF_INET6))
		return buf;
	if (size > (size_t)INET6_ADDRSTRLEN)
		size = INET6_ADDRSTRLEN;
	if (inet_ntop(a->family, a->bytes, buf, (socklen_t)size) == NULL)
		buf[0] = '\0';
	return buf;
}
