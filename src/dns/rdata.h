/*
 * rdata.h - the record data tern reads from DNS answers (RFC 1035): MX,
 * A, AAAA and TLSA. Every length is checked; a record that does not parse is
 * refused, never read past its end.
 */
#ifndef TERN_DNS_RDATA_H
#define TERN_DNS_RDATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/ipaddr.h"

/* Longest host name in text form, without the trailing dot (RFC 1035). */
#define DNS_NAME_MAX 253

/* An uncompressed wire-format name at rd (len bytes available) as
 * lower-case text without the trailing dot ("" for the root) in out
 * (at least DNS_NAME_MAX + 1 bytes). Labels may hold letters, digits,
 * '-' and '_' only: anything else is no host name. Returns the bytes the
 * name takes, or 0 when it is not a valid name. */
size_t dns_name_text(const uint8_t *rd, size_t len, char *out, size_t outlen);

/* MX: preference and exchange ("" for a null MX, RFC 7505). */
bool dns_rdata_mx(const uint8_t *rd, size_t len, uint16_t *pref, char *name, size_t namelen);

/* TLSA (RFC 6698): certificate usage, selector, matching type and the
 * association data, which points into rd. */
struct dns_tlsa {
	uint8_t usage, selector, mtype;
	const uint8_t *data;
	size_t len;
};
bool dns_rdata_tlsa(const uint8_t *rd, size_t len, struct dns_tlsa *out);

/* A (rrtype 1) or AAAA (28). */
bool dns_rdata_addr(const uint8_t *rd, size_t len, int rrtype, struct ipaddr *out);

#endif
