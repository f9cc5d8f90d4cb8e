/*
 * resolver.h - asynchronous DNS on the event loop, through libunbound.
 *
 * One resolver per process, made from the resolver.* settings: the name
 * servers of /etc/resolv.conf (resolver.type = "system") or the ones
 * listed in resolver.custom, plus the hosts file. libunbound keeps the
 * cache (every answer for its TTL, negative answers too) and runs the
 * network side in a thread of its own; its answers reach the loop
 * through one file descriptor, so nothing here blocks the loop.
 *
 * Every query is bounded by resolver.timeout per try and resolver.attempts
 * tries; when they run out the answer is DNS_TEMPFAIL. The callback of a
 * query is always called from the loop, never inside resolver_query, and
 * exactly once unless the query is cancelled first.
 *
 * Why libunbound rather than c-ares: it is a full validating resolver, so
 * the same library will give DANE (issue 5) its DNSSEC-validated TLSA
 * answers, and it caches by TTL without more code here.
 */
#ifndef TERN_DNS_RESOLVER_H
#define TERN_DNS_RESOLVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct config;
struct resolver;
struct dns_query;

#define DNS_TYPE_A    1
#define DNS_TYPE_MX   15
#define DNS_TYPE_TXT  16   /* MTA-STS: _mta-sts.<domain> */
#define DNS_TYPE_AAAA 28
#define DNS_TYPE_TLSA 52

enum dns_status {
	DNS_OK,       /* records of the type asked for */
	DNS_NODATA,   /* the name exists, without records of that type */
	DNS_NXDOMAIN, /* the name does not exist */
	DNS_TEMPFAIL, /* SERVFAIL, REFUSED, time-out, local trouble: ask again later */
};

/* One answer, valid only during the callback. rdata[i] is the i-th
 * record's data in wire format (names uncompressed), rdlen[i] its length. */
struct dns_answer {
	enum dns_status status;
	const char *qname;
	int qtype;
	size_t n;
	const uint8_t *const *rdata;
	const int *rdlen;
	uint32_t ttl;
	bool secure;        /* DNSSEC-validated (only from resolver_query_validated) */
	bool bogus;         /* DNS_TEMPFAIL because DNSSEC validation failed */
	char why[160];      /* for DNS_TEMPFAIL and DNS_NXDOMAIN: what happened, for logs */
};

typedef void (*dns_cb)(void *arg, const struct dns_answer *ans);

/* Returns NULL with a reason in err (a setting that cannot work, a
 * resolv.conf that cannot be read). */
struct resolver *resolver_new(struct event_base *base, const struct config *cfg, char *err,
			      size_t errlen);
/* Ask for name's records of rrtype. NULL only when out of memory. */
struct dns_query *resolver_query(struct resolver *r, const char *name, int rrtype, dns_cb cb,
				 void *arg);
/*
 * The same, answered by the validating context: `secure` says whether
 * the answer was proven by DNSSEC from resolver.dnssec.trust-anchor, and
 * a bogus answer is DNS_TEMPFAIL with `bogus` set. Without a trust
 * anchor (resolver_validates false) every answer is insecure.
 */
struct dns_query *resolver_query_validated(struct resolver *r, const char *name, int rrtype,
					   dns_cb cb, void *arg);
bool resolver_validates(const struct resolver *r);
/* The callback will not be called. */
void resolver_cancel(struct dns_query *q);
/* Queries still open are cancelled without their callbacks. */
void resolver_free(struct resolver *r);

const char *dns_status_name(enum dns_status s);
const char *dns_type_name(int rrtype);

#endif
