/*
 * nexthop.h - where a recipient's mail goes next: queue.outbound.next-hop
 * evaluated per recipient domain (SPEC §3.1).
 */
#ifndef TERN_ROUTE_NEXTHOP_H
#define TERN_ROUTE_NEXTHOP_H

#include <stddef.h>

#include "config/rules.h"
#include "queue/message.h"

struct config;
struct cfg_section;

/* The variables known for a recipient domain (set R of SPEC §2). Strings
 * are borrowed from msg and domain. */
void route_rule_ctx(struct rule_ctx *ctx, const struct message *msg, const char *domain,
		    size_t domain_len);

/* The [remote."<id>"] the domain's mail goes to, or NULL for delivery to
 * the domain's MX hosts. */
const struct cfg_section *route_next_hop(const struct config *cfg, const struct message *msg,
					 const char *domain, size_t domain_len);

#endif
