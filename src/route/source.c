/*
 * source.c - the source address of each outbound connection and the
 * connection's rule variables (SPEC §3.3).
 *
 * A source address is drawn for every connection, not once per host or
 * per process, so connections to one busy destination spread over all
 * the listed addresses. The bind itself happens in the outbound client,
 * which fails the connection, loudly, when the address cannot be bound:
 * tern never falls back to another address in silence.
 */
#include <string.h>
#include <sys/socket.h>

#include "config/settings.h"
#include "route/plan.h"
#include "util/random.h"

void route_pick_source(const struct config *cfg, const struct rule_ctx *ctx, int family,
		       struct ipaddr *out)
{
	enum cfg_key key = family == AF_INET6 ? CFG_QUEUE_OUTBOUND_SOURCE_IP_V6
					      : CFG_QUEUE_OUTBOUND_SOURCE_IP_V4;
	const struct cfg_value *v = config_eval(cfg, key, ctx);

	memset(out, 0, sizeof(*out));
	if (v == NULL || v->none || v->n_items == 0)
		return;
	*out = v->items[random_below(v->n_items)].addr;
}

void route_conn_ctx(struct rule_ctx *ctx, const char *mx, const struct ipaddr *remote,
		    const struct ipaddr *local, struct route_conn_vars *buf)
{
	if (mx != NULL) {
		ctx->var[RULE_VAR_MX].ptr = mx;
		ctx->var[RULE_VAR_MX].len = strlen(mx);
	}
	if (remote != NULL && remote->family != 0) {
		ctx->remote_ip = *remote;
		ipaddr_format(remote, buf->remote_ip, sizeof(buf->remote_ip));
		ctx->var[RULE_VAR_REMOTE_IP].ptr = buf->remote_ip;
		ctx->var[RULE_VAR_REMOTE_IP].len = strlen(buf->remote_ip);
	}
	if (local != NULL && local->family != 0) {
		ctx->local_ip = *local;
		ipaddr_format(local, buf->local_ip, sizeof(buf->local_ip));
		ctx->var[RULE_VAR_LOCAL_IP].ptr = buf->local_ip;
		ctx->var[RULE_VAR_LOCAL_IP].len = strlen(buf->local_ip);
	}
}
