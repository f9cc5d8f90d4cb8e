/*
 * rdata.c - see rdata.h. libunbound hands over record data with names
 * already uncompressed, so a name here is a plain run of labels.
 */
#include "dns/rdata.h"

#include <string.h>
#include <sys/socket.h>

#include "dns/resolver.h"

static bool host_char(uint8_t c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '_';
}

size_t dns_name_text(const uint8_t *rd, size_t len, char *out, size_t outlen)
{
	size_t pos = 0, o = 0;

	if (outlen < DNS_NAME_MAX + 1)
		return 0;
	for (;;) {
		uint8_t label;

		if (pos >= len)
			return 0;
		label = rd[pos++];
		if (label == 0)
			break;
		/* 0xc0: a compression pointer, 0x40/0x80: obsolete label types. */
		if (label > 63 || label > len - pos)
			return 0;
		if (o + (o > 0) + label > DNS_NAME_MAX)
			return 0;
		if (o > 0)
			out[o++] = '.';
		for (uint8_t i = 0; i < label; i++) {
			uint8_t c = rd[pos + i];

			if (!host_char(c))
				return 0;
			out[o++] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
		}
		pos += label;
	}
	out[o] = '\0';
	return pos;
}

bool dns_rdata_mx(const uint8_t *rd, size_t len, uint16_t *pref, char *name, size_t namelen)
{
	size_t used;

	if (len < 3)
		return false;
	*pref = (uint16_t)(rd[0] << 8 | rd[1]);
	used = dns_name_text(rd + 2, len - 2, name, namelen);
	return used != 0 && used == len - 2;
}

bool dns_rdata_addr(const uint8_t *rd, size_t len, int rrtype, struct ipaddr *out)
{
	memset(out, 0, sizeof(*out));
	if (rrtype == DNS_TYPE_A && len == 4)
		out->family = AF_INET;
	else if (rrtype == DNS_TYPE_AAAA && len == 16)
		out->family = AF_INET6;
	else
		return false;
	memcpy(out->bytes, rd, len);
	return true;
}

bool dns_rdata_tlsa(const uint8_t *rd, size_t len, struct dns_tlsa *out)
{
	/* Three octets of parameters and at least one of data. */
	if (len < 4)
		return false;
	out->usage = rd[0];
	out->selector = rd[1];
	out->mtype = rd[2];
	out->data = rd + 3;
	out->len = len - 3;
	return true;
}
