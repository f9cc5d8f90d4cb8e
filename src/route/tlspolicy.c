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

enum route_dane_verdict route_tls_dane(const struct config *cfg, const struct rule_ctx *ctx,
				       const struct route_host *h, struct tls_policy *out,
				       struct delivery_status *why)
{
	int64_t dane = config_eval(cfg, CFG_QUEUE_OUTBOUND_TLS_DANE, ctx)->num;

	if (dane == CFG_POLICY_DISABLE)
		return ROUTE_DANE_OFF;
	switch (h->dane) {
	case ROUTE_DANE_USABLE:
		out->use = TLS_USE_REQUIRED;
		out->verify = TLS_VERIFY_DANE;
		out->tlsa = h->tlsa;
		out->n_tlsa = h->n_tlsa;
		return ROUTE_DANE_ON;
	case ROUTE_DANE_UNUSABLE:
		out->use = TLS_USE_REQUIRED;
		out->verify = TLS_VERIFY_NONE;
		return ROUTE_DANE_ON;
	case ROUTE_DANE_FAILED:
		ds_set_local(why, DS_TEMP, STAGE_TLS, "4.7.5", "DANE: %s; %s is not used", h->dane_why,
			     h->name);
		return ROUTE_DANE_REFUSE;
	case ROUTE_DANE_NONE:
		break;
	}
	if (dane != CFG_POLICY_REQUIRE)
		return ROUTE_DANE_OFF;
	ds_set_local(why, DS_TEMP, STAGE_TLS, "4.7.5",
		     "DANE is required, but %s has no usable DNSSEC-validated TLSA records (%s)",
		     h->name, h->dane_why[0] != '\0' ? h->dane_why : "not looked up");
	return ROUTE_DANE_REFUSE;
}

const char *route_tls_describe(const struct tls_policy *p, char *out, size_t outlen)
{
	static const char *const uses[] = {
		[TLS_USE_NEVER] = "never STARTTLS",
		[TLS_USE_OFFERED] = "STARTTLS when offered",
		[TLS_USE_REQUIRED] = "STARTTLS required",
		[TLS_USE_IMPLICIT] = "TLS on connect",
	};

	static const char *const verifies[] = {
		[TLS_VERIFY_NONE] = "any certificate",
		[TLS_VERIFY_NAME] = "certificate verified for the host name",
		[TLS_VERIFY_DANE] = "certificate matched against the TLSA records (DANE)",
	};

	if (p->use == TLS_USE_NEVER)
		snprintf(out, outlen, "%s", uses[p->use]);
	else
		snprintf(out, outlen, "%s, %s", uses[p->use], verifies[p->verify]);
	return out;
}
