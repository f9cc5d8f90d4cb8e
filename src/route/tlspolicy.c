/*
 * tlspolicy.c - see tlspolicy.h.
 */
#include "route/tlspolicy.h"

#include <stdio.h>

#include "config/settings.h"

void route_tls_policy(const struct config *cfg, const struct cfg_section *remote,
		      const struct rule_ctx *ctx, struct tls_policy *out)
{
	out->use = TLS_USE_OFFERED;
	out->verify = TLS_VERIFY_NONE;
	if (remote != NULL) {
		if (cfg_section_get(remote, CFG_REMOTE_TLS_IMPLICIT)->num) {
			out->use = TLS_USE_IMPLICIT;
			if (!cfg_section_get(remote, CFG_REMOTE_TLS_ALLOW_INVALID_CERTS)->num)
				out->verify = TLS_VERIFY_NAME;
		}
		return;
	}
	switch (config_eval(cfg, CFG_QUEUE_OUTBOUND_TLS_STARTTLS, ctx)->num) {
	case CFG_POLICY_REQUIRE:
		out->use = TLS_USE_REQUIRED;
		out->verify = TLS_VERIFY_NAME;
		break;
	case CFG_POLICY_DISABLE:
		out->use = TLS_USE_NEVER;
		break;
	default:
		break;
	}
}

const char *route_tls_describe(const struct tls_policy *p, char *out, size_t outlen)
{
	static const char *const uses[] = {
		[TLS_USE_NEVER] = "never STARTTLS",
		[TLS_USE_OFFERED] = "STARTTLS when offered",
		[TLS_USE_REQUIRED] = "STARTTLS required",
		[TLS_USE_IMPLICIT] = "TLS on connect",
	};

	if (p->use == TLS_USE_NEVER)
		snprintf(out, outlen, "%s", uses[p->use]);
	else
		snprintf(out, outlen, "%s, %s", uses[p->use],
			 p->verify == TLS_VERIFY_NAME ? "certificate verified for the host name"
						      : "any certificate");
	return out;
}
