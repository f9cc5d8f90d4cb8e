/*
 * plan.h - where one connection attempt goes: the hosts of a next hop and
 * their addresses, in the order they are tried (SPEC §3.2, §3.3).
 *
 * For a relay ([remote."<id>"]) the plan has one host, the relay's
 * address. For delivery by MX it has the domain's MX hosts sorted by
 * preference (equal preferences shuffled anew for every plan), at most
 * queue.outbound.limits.mx of them, or the domain itself when it has no
 * MX records (implicit MX, RFC 5321 §5.1). Each host has its addresses
 * in the order of queue.outbound.ip-strategy, at most
 * queue.outbound.limits.multihomed of them. A plan that has no host to
 * try says why in `fail`: a null MX (5.1.10), a domain that does not
 * exist (5.1.2), a DNS failure (4.4.3, retried).
 *
 * The planner asks the resolver for everything at once (the MX records,
 * then A and AAAA of every host in parallel) and calls back once, from
 * the event loop, with a plan the callee then owns.
 *
 * MTA-STS (SPEC §4): for delivery by MX, unless queue.outbound.tls.mta-sts
 * is `disable`, the domain's policy is looked up (sts/sts.h) alongside the
 * MX records, and the plan waits for both. The plan carries what was
 * found; the connector applies it host by host. With `require`, a domain
 * without a usable policy (none found, or mode none) gets a failed plan,
 * temporarily (4.7.5). Relays are never subject to MTA-STS: a relay is
 * not the recipient domain's MX.
 */
#ifndef TERN_ROUTE_PLAN_H
#define TERN_ROUTE_PLAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "config/rules.h"
#include "dns/rdata.h"
#include "dns/resolver.h"
#include "outbound/status.h"
#include "util/arena.h"
#include "util/ipaddr.h"

struct config;
struct cfg_section;
struct sts;
struct sts_result;

#define ROUTE_MX_PORT 25

/* DANE (RFC 7672) for one MX host, from DNSSEC-validated lookups. */
enum route_dane {
	ROUTE_DANE_NONE,      /* DANE does not apply: not looked up (a relay, no trust
				 anchor, tls.dane disabled), or no secure TLSA records */
	ROUTE_DANE_USABLE,    /* secure TLSA records, some usable: TLS, matched against them */
	ROUTE_DANE_UNUSABLE,  /* secure TLSA records, none usable for SMTP: TLS required,
				 the certificate unchecked (RFC 7672 §2.2) */
	ROUTE_DANE_FAILED,    /* the TLSA lookup failed or was bogus: host not used */
};

struct route_host {
	const char *name;          /* MX exchange, the domain itself, or the relay's address */
	int preference;            /* from the MX record; -1 for implicit MX and relays */
	struct ipaddr *addrs;      /* in the order they are tried */
	size_t n_addrs;
	size_t n_found;            /* addresses the DNS gave, before the multihomed limit */
	/* When n_addrs is 0: why (class DS_PERM when the name has no usable
	 * address records, DS_TEMP when a lookup failed). */
	struct delivery_status none;
	enum route_dane dane;
	struct dns_tlsa *tlsa;     /* ROUTE_DANE_USABLE: the usable records */
	size_t n_tlsa;
	char dane_why[160];        /* what the DANE lookups found, for logs and tern route */
};

struct route_plan {
	struct arena arena;        /* everything below lives in it */
	const struct cfg_section *remote; /* the relay, or NULL for MX delivery */
	const char *domain;        /* recipient domain */
	int port;
	int64_t ip_strategy;       /* enum cfg_ip_strategy */
	int64_t limit_mx, limit_multihomed;
	bool implicit_mx;          /* no MX records: the domain is its own host */
	size_t n_mx_records;       /* usable MX records found, before limits.mx */
	bool dnssec;               /* lookups were validated: DANE could apply */
	bool mx_secure;            /* the MX answer (or its NODATA) was DNSSEC-proven */
	struct route_host *hosts;
	size_t n_hosts;
	bool failed;               /* no host to try; fail says why */
	struct delivery_status fail;
	/* MTA-STS, delivery by MX only: queue.outbound.tls.mta-sts for the
	 * domain (enum cfg_policy; disable for relays and literals) and what
	 * the lookup found (NULL when not looked up). */
	int64_t sts_want;
	const struct sts_result *sts;
};

struct route_planner;
/* plan is the callee's, to free with route_plan_free. */
typedef void (*route_plan_cb)(void *arg, struct route_plan *plan);

/* Plan for remote (a relay) or, when remote is NULL, for domain's MX
 * hosts. ctx holds the variables of set R (sender, rcpt-domain, ...) that
 * ip-strategy, the limits and tls.mta-sts are evaluated with; it is not
 * kept. sts: MTA-STS lookups (NULL: none, as if no policy were published).
 * NULL when out of memory.
 *
 * DANE facts: for delivery by MX, when the resolver validates and
 * queue.outbound.tls.dane (evaluated with ctx, mx empty) is not
 * "disable", the MX and address lookups are validated, and every host of
 * a DNSSEC-proven MX set gets its TLSA records `_25._tcp.<host>` looked
 * up as well. The plan only states what DNS said (route_host.dane);
 * whether a host must use DANE is the connection's policy. */
struct route_planner *route_plan_start(struct resolver *res, struct event_base *base,
				       struct sts *sts,
				       const struct config *cfg, const struct cfg_section *remote,
				       const char *domain, const struct rule_ctx *ctx,
				       route_plan_cb cb, void *arg);
/* The callback will not be called. */
void route_plan_cancel(struct route_planner *p);
void route_plan_free(struct route_plan *plan);

/* ---- the policy steps, pure functions (also used by the unit tests) ---- */

struct route_mx {
	uint16_t preference;
	const char *name;          /* "" for a null MX record */
};

/*
 * Order MX records for one attempt: by preference, records of equal
 * preference shuffled, then cut to limit. Returns the number kept, or
 * (size_t)-1 when the set is a null MX (RFC 7505: a single record whose
 * exchange is "."). A "." record beside real ones is dropped.
 */
size_t route_order_mx(struct route_mx *mx, size_t n, size_t limit);

/*
 * The addresses of one host in the order they are tried: by strategy
 * (enum cfg_ip_strategy), the preferred family's addresses first in
 * resolver order, then the other family's (the -then- modes), at most
 * limit in all. out has room for limit. Returns the count.
 */
size_t route_order_addrs(const struct ipaddr *v4, size_t n4, const struct ipaddr *v6, size_t n6,
			 int64_t strategy, size_t limit, struct ipaddr *out);

/* Can tern match a certificate against this TLSA record for SMTP? Only
 * DANE-TA(2) and DANE-EE(3) with a known selector and matching type, and
 * a digest of the right length (RFC 7672 §3.1). */
bool route_tlsa_usable(const struct dns_tlsa *t);

/* Does the strategy look up A, and AAAA? */
bool route_strategy_wants(int64_t strategy, int family);

/*
 * The source address for one connection to a host of the given family:
 * picked uniformly at random from queue.outbound.source-ip.v4 or .v6,
 * evaluated with ctx (set M: mx is the host connected to). family 0 in
 * out when the list is empty (the system chooses).
 */
void route_pick_source(const struct config *cfg, const struct rule_ctx *ctx, int family,
		       struct ipaddr *out);

/* ctx's mx, remote-ip and local-ip variables (sets M and H) for one
 * connection; text buffers are the caller's and must outlive ctx's use. */
struct route_conn_vars {
	char remote_ip[IPADDR_STRLEN];
	char local_ip[IPADDR_STRLEN];
};
void route_conn_ctx(struct rule_ctx *ctx, const char *mx, const struct ipaddr *remote,
		    const struct ipaddr *local, struct route_conn_vars *buf);

#endif
