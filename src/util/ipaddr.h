/*
 * ipaddr.h - IPv4/IPv6 addresses and CIDR prefixes as plain values.
 *
 * Addresses are kept in network byte order in 16 bytes; an IPv4 address
 * uses the first 4. Nothing here resolves names or touches sockets.
 */
#ifndef TERN_UTIL_IPADDR_H
#define TERN_UTIL_IPADDR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ipaddr {
	uint8_t family; /* AF_INET or AF_INET6; 0 = none */
	uint8_t bytes[16];
};

struct ipprefix {
	struct ipaddr addr; /* host bits cleared */
	uint8_t bits;       /* prefix length: 0..32 or 0..128 */
};

/* Parse a literal address ("192.0.2.1", "2001:db8::1"); len bytes of s,
 * no surrounding brackets or spaces. */
bool ipaddr_parse(const char *s, size_t len, struct ipaddr *out);

/* Parse "ADDR" or "ADDR/BITS"; a bare address is a full-length prefix.
 * Host bits set beyond the prefix are accepted and cleared. */
bool ipprefix_parse(const char *s, size_t len, struct ipprefix *out);

/* Does the prefix hold addr? An IPv4 prefix also holds the IPv4-mapped
 * IPv6 form (::ffff:a.b.c.d) of its addresses. */
bool ipprefix_contains(const struct ipprefix *p, const struct ipaddr *addr);

/* Text form into buf (at least 46 bytes); returns buf. */
#define IPADDR_STRLEN 46
const char *ipaddr_format(const struct ipaddr *a, char *buf, size_t size);

#endif
