/*
 * nexthop.c - the next-hop decision; see nexthop.h.
 *
 * next-hop was validated at load: a value names a remote that exists, so
 * the lookup here cannot fail for a loaded config.
 */
#include "route/nexthop.h"

#include <string.h>

#include "config/settings.h"

void route_rule_ctx(struct rule_ctx *ctx, const struct message *msg, const char *domain,
		    size_t domain_len)
{
	const char *at = strrchr(msg->sender_lower, '@');

	memset(ctx, 0, sizeof(*ctx));
	ctx->var[RULE_VAR_SENDER].ptr = msg->sender_lower;
	ctx->var[RULE_VAR_SENDER].len = strlen(msg->sender_lower);
	if (at != NULL) {
		ctx->var[RULE_VAR_SENDER_DOMAIN].ptr = at + 1;
		ctx->var[RULE_VAR_SENDER_DOMAIN].len = strlen(at + 1);
	}
	ctx->var[RULE_VAR_RCPT_DOMAIN].ptr = domain;
	ctx->var[RULE_VAR_RCPT_DOMAIN].len = domain_len;
	/* tern has no priority source yet (MT-PRIORITY is not offered): 0. */
	ctx->var[RULE_VAR_PRIORITY].ptr = "0";
	ctx->var[RULE_VAR_PRIORITY].len = 1;
	ctx->priority = 0;
}

const struct cfg_section *route_next_hop(const struct config *cfg, const struct message *msg,
					 const char *domain, size_t domain_len)
{
	struct rule_ctx ctx;
	const struct cfg_value *v;

	route_rule_ctx(&ctx, msg, domain, domain_len);
	v = config_eval(cfg, CFG_QUEUE_OUTBOUND_NEXT_HOP, &ctx);
	if (v == NULL || v->none)
		return NULL;
	return config_section_find(cfg, CFG_GROUP_REMOTE, v->str, v->len);
}
