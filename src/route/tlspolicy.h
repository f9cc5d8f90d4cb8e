/*
 * tlspolicy.h - which TLS one connection uses (SPEC §4), from the
 * configuration: for a relay, remote.<id>.tls.implicit and
 * .tls.allow-invalid-certs; for an MX host, queue.outbound.tls.starttls
 * evaluated for that host (rule set M, mx = the host).
 *
 * tern's choice: a relay without implicit TLS uses STARTTLS when offered
 * and accepts any certificate, whatever allow-invalid-certs says (SPEC's
 * opportunistic default); allow-invalid-certs matters for implicit TLS.
 *
 * DANE (RFC 7672) tightens it host by host (route_tls_dane), from the
 * facts the planner gathered, and takes precedence over MTA-STS. Not here:
 * the memory of hosts whose handshakes failed (the connector's), the
 * handshake itself (tls/tls.h, outbound/client.c).
 */
#ifndef TERN_ROUTE_TLSPOLICY_H
#define TERN_ROUTE_TLSPOLICY_H

#include <stdbool.h>
#include <stddef.h>

#include "config/rules.h"
#include "outbound/status.h"
#include "route/plan.h"
#include "tls/tls.h"

struct config;
struct cfg_section;

/* The policy for a connection to remote (a relay) or, when remote is
 * NULL, to the MX host ctx names. */
void route_tls_policy(const struct config *cfg, const struct cfg_section *remote,
		      const struct rule_ctx *ctx, struct tls_policy *out);

/* What DANE makes of one MX host. */
enum route_dane_verdict {
	ROUTE_DANE_OFF,      /* DANE does not apply: the policy is left as it was */
	ROUTE_DANE_ON,       /* DANE governs the host (and MTA-STS does not, RFC 8461 §2) */
	ROUTE_DANE_REFUSE,   /* the host must not be used */
};

/*
 * DANE for MX host h under queue.outbound.tls.dane (ctx: set M, mx = h):
 * usable TLSA records make TLS required and matched against them;
 * records none of which is usable make TLS required, unauthenticated.
 * ROUTE_DANE_REFUSE, why filled (temporary, 4.7.5), when its TLSA lookup
 * failed or was bogus, or with `require` when h has no usable proven
 * TLSA records. With `disable`, always ROUTE_DANE_OFF.
 */
enum route_dane_verdict route_tls_dane(const struct config *cfg, const struct rule_ctx *ctx,
				       const struct route_host *h, struct tls_policy *out,
				       struct delivery_status *why);

/* What the policy does, in words for `tern route`: "STARTTLS when
 * offered, any certificate". Returns out. */
const char *route_tls_describe(const struct tls_policy *p, char *out, size_t outlen);

#endif
