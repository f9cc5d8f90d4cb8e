/*
 * explain.c - `tern route`; see explain.h.
 *
 * Every recipient's plan is started at once and the loop runs until all
 * have come back; then they are printed in the order given. The MX order
 * printed is one draw: hosts of equal preference are shuffled anew for
 * every attempt, and the output says so.
 *
 * MTA-STS: the policy is looked up as delivery would (the TXT record, the
 * cache in <queue.path>/mta-sts/, a fetch), but the cache on disk is only
 * read: `tern route` changes nothing.
 */
#include "route/explain.h"

#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/event.h>

#include "config/settings.h"
#include "dns/resolver.h"
#include "queue/message.h"
#include "route/nexthop.h"
#include "route/plan.h"
#include "route/tlspolicy.h"
#include "sts/sts.h"
#include "util/timefmt.h"

struct pending {
	struct route_planner *planner; /* until the plan is back */
	struct route_plan *plan;
	size_t *left;
	struct event_base *base;
};

static void plan_done(void *arg, struct route_plan *plan)
{
	struct pending *pd = arg;

	pd->planner = NULL;
	pd->plan = plan;
	if (--*pd->left == 0)
		event_base_loopbreak(pd->base);
}

static const char *policy_word(int64_t p)
{
	return p == CFG_POLICY_REQUIRE ? "require" : p == CFG_POLICY_DISABLE ? "disable" : "optional";
}

/* The source-ip list for one family, as delivery would draw from it. */
static void print_sources(FILE *out, const struct config *cfg, const struct rule_ctx *ctx, int family)
{
	enum cfg_key key = family == AF_INET6 ? CFG_QUEUE_OUTBOUND_SOURCE_IP_V6
					      : CFG_QUEUE_OUTBOUND_SOURCE_IP_V4;
	const struct cfg_value *v = config_eval(cfg, key, ctx);
	char ip[IPADDR_STRLEN];

	if (v == NULL || v->none || v->n_items == 0) {
		fputs("the system's choice", out);
		return;
	}
	for (size_t i = 0; i < v->n_items; i++)
		fprintf(out, "%s%s", i > 0 ? " | " : "", ipaddr_format(&v->items[i].addr, ip, sizeof(ip)));
	if (v->n_items > 1)
		fputs(" (one at random per connection)", out);
}

/* DANE's verdict on MX host h, with the TLS policy it leads to in tls. */
static enum route_dane_verdict host_dane(const struct config *cfg, const struct rule_ctx *base_ctx,
					 const struct route_host *h, struct tls_policy *tls,
					 struct delivery_status *refused)
{
	struct rule_ctx ctx = *base_ctx;
	struct route_conn_vars vars;

	route_conn_ctx(&ctx, h->name, NULL, NULL, &vars);
	route_tls_policy(cfg, NULL, &ctx, tls);
	return route_tls_dane(cfg, &ctx, h, tls, refused);
}

/* What DANE found for an MX host, and what its verdict makes of the
 * connection's TLS (tls, refused: as host_dane left them). */
static void print_dane(FILE *out, const struct route_host *h, enum route_dane_verdict verdict,
		       const struct tls_policy *tls, const struct delivery_status *refused)
{
	char text[96];

	switch (verdict) {
	case ROUTE_DANE_REFUSE:
		fprintf(out, "    dane: %s -> not used: %s %s\n", h->dane_why, refused->enhanced,
			refused->text);
		break;
	case ROUTE_DANE_ON:
		fprintf(out, "    dane: %s -> %s\n", h->dane_why,
			route_tls_describe(tls, text, sizeof(text)));
		break;
	case ROUTE_DANE_OFF: /* the TLS is starttls's and MTA-STS's, shown above */
		fprintf(out, "    dane: %s\n", h->dane_why);
		break;
	}
}

/* The MTA-STS policy the plan carries, on one line. */
static void print_sts(FILE *out, const struct route_plan *plan)
{
	const struct sts_result *r = plan->sts;
	char fetched[40], expires[40];

	if (plan->sts_want == CFG_POLICY_DISABLE) {
		fputs("  mta-sts: not applied (queue.outbound.tls.mta-sts is disable)\n", out);
		return;
	}
	if (r == NULL) {
		fputs("  mta-sts: not looked up\n", out);
		return;
	}
	if (!r->found) {
		fprintf(out, "  mta-sts: no policy (%s)\n", r->why);
		return;
	}
	fprintf(out, "  mta-sts: policy id %s, mode %s, mx", r->id, sts_mode_name(r->policy.mode));
	for (size_t i = 0; i < r->policy.n_mx; i++)
		fprintf(out, "%s%s", i > 0 ? " | " : " ", r->policy.mx[i]);
	if (r->policy.n_mx == 0)
		fputs(" (none)", out);
	fprintf(out, "; %s %s, expires %s", r->source == STS_SOURCE_FETCHED ? "fetched" : "cached, fetched",
		timefmt_rfc3339(r->fetched * 1000, fetched), timefmt_rfc3339(r->expires * 1000, expires));
	if (r->why[0] != '\0')
		fprintf(out, " (in force after: %s)", r->why);
	fputc('\n', out);
}

/* Whether the plan's MTA-STS policy lets a host be tried, in words.
 * dane_governs: DANE decides for the host, so MTA-STS does not. */
static const char *sts_host_word(const struct route_plan *plan, const char *host,
				 bool dane_governs)
{
	const struct sts_result *r = plan->sts;

	if (r == NULL || !r->found || r->policy.mode == STS_MODE_NONE)
		return "";
	if (dane_governs)
		return " [MTA-STS: not applied, DANE takes precedence]";
	if (sts_mx_match(&r->policy, host))
		return r->policy.mode == STS_MODE_ENFORCE
			? " [MTA-STS: matches; STARTTLS and a verified certificate required]"
			: " [MTA-STS: matches]";
	return r->policy.mode == STS_MODE_ENFORCE ? " [MTA-STS: does not match; skipped]"
						  : " [MTA-STS: does not match; tried anyway (testing)]";
}

static void print_host(FILE *out, const struct config *cfg, const struct rule_ctx *base_ctx,
		       const struct route_plan *plan, size_t i)
{
	const struct route_host *h = &plan->hosts[i];
	struct tls_policy tls;
	struct delivery_status refused;
	enum route_dane_verdict dane = plan->dnssec ? host_dane(cfg, base_ctx, h, &tls, &refused)
						    : ROUTE_DANE_OFF;
	char ip[IPADDR_STRLEN];

	fprintf(out, "  host %zu: %s", i + 1, h->name);
	if (h->preference >= 0)
		fprintf(out, " (preference %d)", h->preference);
	else if (plan->implicit_mx)
		fputs(" (implicit MX: the domain has no MX records)", out);
	fputs(sts_host_word(plan, h->name, dane == ROUTE_DANE_ON), out);
	fputc('\n', out);
	if (h->n_addrs == 0) {
		fprintf(out, "    no address: %s %s (%s)\n", h->none.enhanced, h->none.text,
			h->none.cls == DS_PERM ? "permanent" : "temporary");
		return;
	}
	for (size_t k = 0; k < h->n_addrs; k++) {
		struct rule_ctx ctx = *base_ctx;
		struct route_conn_vars vars;

		route_conn_ctx(&ctx, h->name, &h->addrs[k], NULL, &vars);
		ipaddr_format(&h->addrs[k], ip, sizeof(ip));
		fprintf(out, h->addrs[k].family == AF_INET6 ? "    address %zu: [%s]:%d from " :
			"    address %zu: %s:%d from ", k + 1, ip, plan->port);
		print_sources(out, cfg, &ctx, h->addrs[k].family);
		fputc('\n', out);
	}
	if (h->n_found > h->n_addrs)
		fprintf(out, "    (%zu more not tried: limits.multihomed)\n", h->n_found - h->n_addrs);
	if (plan->dnssec)
		print_dane(out, h, dane, &tls, &refused);
}

static void print_plan(FILE *out, const struct config *cfg, const char *hostname,
		       const struct message *msg, size_t idx, const struct route_plan *plan)
{
	const struct rcpt *r = &msg->rcpts[idx];
	const struct cfg_value *helo;
	struct rule_ctx ctx;
	struct tls_policy tls;
	char tls_text[96];

	route_rule_ctx(&ctx, msg, r->domain, r->domain_len);
	fprintf(out, "recipient <%s>\n", r->addr);
	fprintf(out, "  sender: <%s>\n", msg->sender);
	if (plan->remote != NULL) {
		const struct cfg_section *rem = plan->remote;

		fprintf(out, "  next-hop: remote \"%s\" (%s, %s port %d)\n", rem->id,
			cfg_section_get(rem, CFG_REMOTE_PROTOCOL)->str,
			cfg_section_get(rem, CFG_REMOTE_ADDRESS)->str, plan->port);
	} else {
		fprintf(out, "  next-hop: the MX hosts of %s (queue.outbound.next-hop has no value)\n",
			plan->domain);
	}
	helo = config_eval(cfg, CFG_QUEUE_OUTBOUND_HOSTNAME, &ctx);
	fprintf(out, "  ehlo-name: %s\n", helo != NULL && !helo->none && helo->len > 0 ? helo->str : hostname);
	fprintf(out, "  ip-strategy: %s\n", cfg_words_ip_strategy[plan->ip_strategy]);
	if (plan->remote == NULL) {
		fprintf(out, "  limits: mx %lld, multihomed %lld\n", (long long)plan->limit_mx,
			(long long)plan->limit_multihomed);
		/* tls.starttls and tls.dane may depend on mx: shown for the first host. */
		if (plan->n_hosts > 0)
			route_conn_ctx(&ctx, plan->hosts[0].name, NULL, NULL, NULL);
		route_tls_policy(cfg, NULL, &ctx, &tls);
		fprintf(out, "  tls: starttls %s (%s), mta-sts %s, dane %s\n",
			policy_word(config_eval(cfg, CFG_QUEUE_OUTBOUND_TLS_STARTTLS, &ctx)->num),
			route_tls_describe(&tls, tls_text, sizeof(tls_text)),
			policy_word(config_eval(cfg, CFG_QUEUE_OUTBOUND_TLS_MTA_STS, &ctx)->num),
			policy_word(config_eval(cfg, CFG_QUEUE_OUTBOUND_TLS_DANE, &ctx)->num));
		route_rule_ctx(&ctx, msg, r->domain, r->domain_len);
		print_sts(out, plan);
	} else {
		fprintf(out, "  limits: multihomed %lld\n", (long long)plan->limit_multihomed);
		route_tls_policy(cfg, plan->remote, &ctx, &tls);
		fprintf(out, "  tls: implicit %s, allow-invalid-certs %s (%s)\n",
			cfg_section_get(plan->remote, CFG_REMOTE_TLS_IMPLICIT)->num ? "true" : "false",
			cfg_section_get(plan->remote, CFG_REMOTE_TLS_ALLOW_INVALID_CERTS)->num ? "true" : "false",
			route_tls_describe(&tls, tls_text, sizeof(tls_text)));
	}
	if (plan->failed) {
		fprintf(out, "  result: %s %s: %s\n", plan->fail.cls == DS_PERM ? "bounce" : "retry later",
			plan->fail.enhanced, plan->fail.text);
		return;
	}
	if (plan->remote == NULL && !plan->implicit_mx)
		fprintf(out, "  mx: %zu record%s, %s%zu tried (equal preferences in random order, "
			"drawn anew for every attempt)\n", plan->n_mx_records,
			plan->n_mx_records == 1 ? "" : "s",
			plan->mx_secure ? "DNSSEC-validated, " : "", plan->n_hosts);
	for (size_t i = 0; i < plan->n_hosts; i++)
		print_host(out, cfg, &ctx, plan, i);
}

static bool plan_has_address(const struct route_plan *plan)
{
	for (size_t i = 0; !plan->failed && i < plan->n_hosts; i++)
		if (plan->hosts[i].n_addrs > 0)
			return true;
	return false;
}

int route_explain(const struct config *cfg, const char *sender, int n_rcpts, char **rcpts,
		  FILE *out)
{
	struct event_base *base = event_base_new();
	struct resolver *res = NULL;
	struct sts *sts = NULL;
	char sts_dir[4096];
	struct message *msg = message_new(sender, strlen(sender));
	struct pending *pd = calloc((size_t)n_rcpts, sizeof(*pd));
	const char *hostname = config_get(cfg, CFG_SERVER_HOSTNAME)->str;
	size_t left = 0;
	char err[256];
	int rc = 0;

	if (base == NULL || msg == NULL || pd == NULL) {
		fprintf(stderr, "tern: out of memory\n");
		rc = 2;
		goto done;
	}
	if ((res = resolver_new(base, cfg, err, sizeof(err))) == NULL) {
		fprintf(stderr, "tern: %s\n", err);
		rc = 2;
		goto done;
	}
	snprintf(sts_dir, sizeof(sts_dir), "%s/mta-sts", config_get(cfg, CFG_QUEUE_PATH)->str);
	if ((sts = sts_new(base, res, sts_dir, true, err, sizeof(err))) == NULL) {
		fprintf(stderr, "tern: %s\n", err);
		rc = 2;
		goto done;
	}
	for (int i = 0; i < n_rcpts; i++) {
		const char *a = rcpts[i];
		size_t len = strlen(a);

		if (len >= 2 && a[0] == '<' && a[len - 1] == '>') {
			a++;
			len -= 2;
		}
		if (message_add_rcpt(msg, a, len) == NULL) {
			fprintf(stderr, "tern: out of memory\n");
			rc = 2;
			goto done;
		}
	}
	for (int i = 0; i < n_rcpts; i++) {
		const struct rcpt *r = &msg->rcpts[i];
		const struct cfg_section *hop = route_next_hop(cfg, msg, r->domain, r->domain_len);
		struct rule_ctx ctx;

		route_rule_ctx(&ctx, msg, r->domain, r->domain_len);
		pd[i].left = &left;
		pd[i].base = base;
		pd[i].planner = route_plan_start(res, base, sts, cfg, hop, r->domain, &ctx, plan_done,
						 &pd[i]);
		if (pd[i].planner == NULL) {
			fprintf(stderr, "tern: out of memory\n");
			rc = 2;
			goto done;
		}
		left++;
	}
	if (left > 0)
		event_base_dispatch(base);
	for (int i = 0; i < n_rcpts; i++) {
		if (i > 0)
			fputc('\n', out);
		print_plan(out, cfg, hostname, msg, (size_t)i, pd[i].plan);
		if (!plan_has_address(pd[i].plan))
			rc = 1;
	}
done:
	for (int i = 0; pd != NULL && i < n_rcpts; i++) {
		route_plan_cancel(pd[i].planner); /* only after an early failure */
		route_plan_free(pd[i].plan);
	}
	free(pd);
	message_free(msg);
	sts_free(sts);
	resolver_free(res);
	if (base != NULL)
		event_base_free(base);
	return rc;
}
