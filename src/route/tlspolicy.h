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
 * This is the step MTA-STS and DANE will tighten, host by host. Not here:
 * the memory of hosts whose handshakes failed (the connector's), the
 * handshake itself (tls/tls.h, outbound/client.c).
 */
#ifndef TERN_ROUTE_TLSPOLICY_H
#define TERN_ROUTE_TLSPOLICY_H

#include <stddef.h>

#include "config/rules.h"
#include "tls/tls.h"

struct config;
struct cfg_section;

/* The policy for a connection to remote (a relay) or, when remote is
 * NULL, to the MX host ctx names. */
void route_tls_policy(const struct config *cfg, const struct cfg_section *remote,
		      const struct rule_ctx *ctx, struct tls_policy *out);

/* What the policy does, in words for `tern route`: "STARTTLS when
 * offered, any certificate". Returns out. */
const char *route_tls_describe(const struct tls_policy *p, char *out, size_t outlen);

#endif
