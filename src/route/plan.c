/*
 * plan.c - building a route_plan from the DNS; see plan.h.
 *
 * A planner lives from route_plan_start until its callback or
 * route_plan_cancel. It has at most one MX query and then one A and/or
 * one AAAA query per host open; `pending` counts the address queries
 * still out, and the plan is handed over when it reaches zero. Plans that
 * need no DNS (an IP literal) are handed over from a zero timer, so the
 * callback never runs inside route_plan_start.
 *
 * With DANE facts wanted (plan->dnssec), every query goes to the
 * validating resolver and each host of a proven MX set has a TLSA query
 * too, counted in `pending` like the address queries; the hosts' DANE
 * state is settled once everything has answered (settle_dane), because
 * it depends on the address answers being proven as well.
 *
 * The MTA-STS lookup, when there is one, runs beside the DNS work: the
 * plan is handed over when both are done (hand_over waits for the
 * lookup; the lookup's callback hands over when the DNS work already
 * finished). A plan that failed on DNS does not wait for it.
 */
#include "route/plan.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "config/settings.h"
#include "dns/rdata.h"
#include "sts/sts.h"
#include "util/log.h"

struct host_lookup {
	struct route_planner *p;
	size_t host;
	int family;
	struct dns_query *q;
	struct ipaddr *found;
	size_t n_found;
	enum dns_status status;
	bool secure;
	char why[160];
};

struct tlsa_lookup {
	struct route_planner *p;
	size_t host;
	struct dns_query *q;
	bool asked;
	enum dns_status status;
	bool secure, bogus;
	size_t n_records;              /* in the answer, usable or not */
	char why[160];
};

struct route_planner {
	struct route_plan *plan;
	struct resolver *res;
	struct dns_query *mx_query;
	struct host_lookup *lookups;   /* two per host: [2*i] A, [2*i+1] AAAA */
	struct tlsa_lookup *tlsas;     /* one per host when plan->dnssec */
	size_t pending;
	struct event *done_ev;
	struct sts_lookup *sts_lookup; /* until the MTA-STS policy is known */
	bool dns_done;                 /* the DNS work is done; the policy is awaited */
	route_plan_cb cb;
	void *arg;
};

void route_plan_free(struct route_plan *plan)
{
	if (plan == NULL)
		return;
	arena_free(&plan->arena);
	free(plan);
}

static void planner_free(struct route_planner *p)
{
	if (p->done_ev != NULL)
		event_free(p->done_ev);
	free(p->lookups);
	free(p->tlsas);
	free(p);
}

void route_plan_cancel(struct route_planner *p)
{
	if (p == NULL)
		return;
	resolver_cancel(p->mx_query);
	sts_lookup_cancel(p->sts_lookup);
	if (p->lookups != NULL)
		for (size_t i = 0; i < 2 * p->plan->n_hosts; i++)
			resolver_cancel(p->lookups[i].q);
	if (p->tlsas != NULL)
		for (size_t i = 0; i < p->plan->n_hosts; i++)
			resolver_cancel(p->tlsas[i].q);
	route_plan_free(p->plan);
	planner_free(p);
}

static void settle_dane(struct route_planner *p);
static void sts_check_require(struct route_planner *p);

static void hand_over(struct route_planner *p)
{
	struct route_plan *plan = p->plan;
	route_plan_cb cb = p->cb;
	void *arg = p->arg;

	if (p->sts_lookup != NULL && !plan->failed) {
		p->dns_done = true;
		return;
	}
	sts_lookup_cancel(p->sts_lookup);
	p->sts_lookup = NULL;
	sts_check_require(p);
	if (p->tlsas != NULL && !plan->failed)
		settle_dane(p);
	planner_free(p);
	cb(arg, plan);
}

static void done_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	hand_over(arg);
}

static void hand_over_later(struct route_planner *p)
{
	struct timeval now = { 0, 0 };

	evtimer_add(p->done_ev, &now);
}

static void plan_fail(struct route_planner *p, enum ds_class cls, const char *enhanced,
		      const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static void plan_fail(struct route_planner *p, enum ds_class cls, const char *enhanced,
		      const char *fmt, ...)
{
	char text[sizeof(p->plan->fail.text)];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	p->plan->failed = true;
	ds_set_local(&p->plan->fail, cls, STAGE_DNS, enhanced, "%s", text);
}

/* ---- addresses of each host ---- */

/* Every lookup of host i has answered: its addresses in strategy order. */
static void host_settle(struct route_planner *p, size_t i)
{
	struct route_plan *plan = p->plan;
	struct route_host *h = &plan->hosts[i];
	struct host_lookup *l4 = &p->lookups[2 * i], *l6 = &p->lookups[2 * i + 1];
	const struct host_lookup *temp = NULL;
	size_t limit = (size_t)plan->limit_multihomed;

	h->n_found = l4->n_found + l6->n_found;
	h->addrs = arena_alloc(&plan->arena, (limit ? limit : 1) * sizeof(*h->addrs));
	if (h->addrs != NULL)
		h->n_addrs = route_order_addrs(l4->found, l4->n_found, l6->found, l6->n_found,
					       plan->ip_strategy, limit, h->addrs);
	if (h->n_addrs > 0)
		return;
	if (h->addrs == NULL) {
		ds_set_local(&h->none, DS_TEMP, STAGE_DNS, "4.3.0", "out of memory");
		return;
	}
	if (l4->status == DNS_TEMPFAIL)
		temp = l4;
	else if (l6->status == DNS_TEMPFAIL)
		temp = l6;
	if (temp != NULL) {
		ds_set_local(&h->none, DS_TEMP, STAGE_DNS, "4.4.3", "%s lookup for %s failed: %s",
			     temp->family == AF_INET ? "A" : "AAAA", h->name, temp->why);
		return;
	}
	/* Both answered, and neither had an address: the name is of no use. */
	ds_set_local(&h->none, DS_PERM, STAGE_DNS, "5.4.4", "%s has no %s record%s", h->name,
		     plan->ip_strategy == CFG_IPV4_ONLY ? "A" :
		     plan->ip_strategy == CFG_IPV6_ONLY ? "AAAA" : "A or AAAA",
		     plan->ip_strategy == CFG_IPV4_ONLY || plan->ip_strategy == CFG_IPV6_ONLY
		     ? " (ip-strategy allows one family only)" : "");
}

/* The lookup of the same host for the other family. */
static struct host_lookup *sibling(const struct host_lookup *l)
{
	return &l->p->lookups[2 * l->host + (l->family == AF_INET ? 1 : 0)];
}

static void address_cb(void *arg, const struct dns_answer *ans)
{
	struct host_lookup *l = arg;
	struct route_planner *p = l->p;
	struct arena *a = &p->plan->arena;

	l->q = NULL;
	l->status = ans->status;
	l->secure = ans->secure;
	snprintf(l->why, sizeof(l->why), "%s", ans->why);
	if (ans->status == DNS_OK && (l->found = arena_alloc(a, ans->n * sizeof(*l->found))) != NULL) {
		for (size_t i = 0; i < ans->n; i++)
			if (dns_rdata_addr(ans->rdata[i], (size_t)ans->rdlen[i], ans->qtype,
					   &l->found[l->n_found]))
				l->n_found++;
	}
	if (ans->status == DNS_OK && l->found == NULL) {
		l->status = DNS_TEMPFAIL;
		snprintf(l->why, sizeof(l->why), "out of memory");
	}
	if (ans->status == DNS_OK && l->n_found == 0)
		l->status = DNS_NODATA;
	/* The host is settled when its other family's lookup is done too. */
	if (sibling(l)->q == NULL)
		host_settle(p, l->host);
	if (--p->pending == 0)
		hand_over(p);
}

/* Every lookup of a plan goes to the validating resolver when DANE facts
 * are wanted, so that their answers say whether they are proven. */
static struct dns_query *ask(struct route_planner *p, const char *name, int rrtype, dns_cb cb,
			     void *arg)
{
	return p->plan->dnssec ? resolver_query_validated(p->res, name, rrtype, cb, arg)
			       : resolver_query(p->res, name, rrtype, cb, arg);
}

/* ---- DANE: the TLSA records of each host ---- */

bool route_tlsa_usable(const struct dns_tlsa *t)
{
	if ((t->usage != 2 && t->usage != 3) || t->selector > 1)
		return false;
	switch (t->mtype) {
	case 0: return true;             /* the whole certificate or key */
	case 1: return t->len == 32;     /* SHA2-256 */
	case 2: return t->len == 64;     /* SHA2-512 */
	}
	return false;
}

static void tlsa_cb(void *arg, const struct dns_answer *ans)
{
	struct tlsa_lookup *l = arg;
	struct route_planner *p = l->p;
	struct route_plan *plan = p->plan;
	struct route_host *h = &plan->hosts[l->host];

	l->q = NULL;
	l->status = ans->status;
	l->secure = ans->secure;
	l->bogus = ans->bogus;
	snprintf(l->why, sizeof(l->why), "%s", ans->why);
	if (ans->status == DNS_OK && ans->secure) {
		l->n_records = ans->n;
		h->tlsa = arena_alloc(&plan->arena, ans->n * sizeof(*h->tlsa));
		for (size_t i = 0; h->tlsa != NULL && i < ans->n; i++) {
			struct dns_tlsa t;
			uint8_t *data;

			if (!dns_rdata_tlsa(ans->rdata[i], (size_t)ans->rdlen[i], &t) ||
			    !route_tlsa_usable(&t))
				continue;
			if ((data = arena_alloc(&plan->arena, t.len)) == NULL) {
				h->tlsa = NULL;
				break;
			}
			memcpy(data, t.data, t.len);
			t.data = data;
			h->tlsa[h->n_tlsa++] = t;
		}
		if (h->tlsa == NULL) {
			h->n_tlsa = 0;
			l->status = DNS_TEMPFAIL;
			snprintf(l->why, sizeof(l->why), "out of memory");
		}
	}
	if (--p->pending == 0)
		hand_over(p);
}

/* A host's DANE state, once all its lookups have answered (RFC 7672
 * §2.2): TLSA records count only when they and the host's addresses are
 * proven; a failed or bogus TLSA lookup makes the host unusable, since
 * an attacker could be hiding the records. */
static void settle_dane(struct route_planner *p)
{
	struct route_plan *plan = p->plan;

	for (size_t i = 0; i < plan->n_hosts; i++) {
		struct route_host *h = &plan->hosts[i];
		const struct tlsa_lookup *t = &p->tlsas[i];
		const struct host_lookup *l4 = &p->lookups[2 * i], *l6 = &p->lookups[2 * i + 1];
		bool addrs_secure = (l4->n_found == 0 || l4->secure) && (l6->n_found == 0 || l6->secure);

		h->dane = ROUTE_DANE_NONE;
		if (!t->asked) {
			snprintf(h->dane_why, sizeof(h->dane_why), "no TLSA lookup (%s)",
				 plan->mx_secure ? "an address literal" : "the MX records are not DNSSEC-signed");
		} else if (t->status == DNS_TEMPFAIL) {
			h->dane = ROUTE_DANE_FAILED;
			snprintf(h->dane_why, sizeof(h->dane_why), "TLSA lookup for _25._tcp.%s failed: %.100s",
				 h->name, t->why);
		} else if (!t->secure) {
			snprintf(h->dane_why, sizeof(h->dane_why), "_25._tcp.%s: %s, not DNSSEC-signed",
				 h->name, t->status == DNS_OK ? "TLSA records" : "no TLSA records");
		} else if (t->status != DNS_OK) {
			snprintf(h->dane_why, sizeof(h->dane_why), "_25._tcp.%s: no TLSA records (proven)",
				 h->name);
		} else if (!addrs_secure) {
			snprintf(h->dane_why, sizeof(h->dane_why),
				 "_25._tcp.%s: TLSA records, but the host's addresses are not DNSSEC-signed",
				 h->name);
		} else if (h->n_tlsa == 0) {
			h->dane = ROUTE_DANE_UNUSABLE;
			snprintf(h->dane_why, sizeof(h->dane_why),
				 "_25._tcp.%s: %zu TLSA record%s, none usable for SMTP", h->name,
				 t->n_records, t->n_records == 1 ? "" : "s");
		} else {
			h->dane = ROUTE_DANE_USABLE;
			snprintf(h->dane_why, sizeof(h->dane_why), "_25._tcp.%s: %zu usable TLSA record%s",
				 h->name, h->n_tlsa, h->n_tlsa == 1 ? "" : "s");
		}
		if (h->dane != ROUTE_DANE_USABLE)
			h->n_tlsa = 0;
	}
}

/* A literal needs no lookup: "192.0.2.1", "2001:db8::1", or the address
 * of a domain literal ("[192.0.2.1]", "[ipv6:2001:db8::1]"). */
static bool literal_address(const char *name, struct ipaddr *out)
{
	size_t len = strlen(name);

	if (len > 2 && name[0] == '[' && name[len - 1] == ']') {
		name++;
		len -= 2;
		if (len > 5 && strncmp(name, "ipv6:", 5) == 0) {
			name += 5;
			len -= 5;
			return ipaddr_parse(name, len, out) && out->family == AF_INET6;
		}
		return ipaddr_parse(name, len, out) && out->family == AF_INET;
	}
	return ipaddr_parse(name, len, out);
}

static bool add_host(struct route_plan *plan, const char *name, int preference)
{
	struct route_host *h = &plan->hosts[plan->n_hosts];

	memset(h, 0, sizeof(*h));
	h->preference = preference;
	h->name = arena_strdup(&plan->arena, name);
	if (h->name == NULL)
		return false;
	plan->n_hosts++;
	return true;
}

/* RFC 7672 §2.2.1: TLSA records of an MX host are looked up only when
 * its MX set is proven; the base name is the host name. */
static void lookup_tlsa(struct route_planner *p, size_t i)
{
	struct tlsa_lookup *l = &p->tlsas[i];
	char qname[DNS_NAME_MAX + 16];

	l->p = p;
	l->host = i;
	l->asked = true;
	snprintf(qname, sizeof(qname), "_25._tcp.%s", p->plan->hosts[i].name);
	l->q = ask(p, qname, DNS_TYPE_TLSA, tlsa_cb, l);
	if (l->q == NULL) {
		l->status = DNS_TEMPFAIL;
		snprintf(l->why, sizeof(l->why), "out of memory");
		return;
	}
	p->pending++;
}

/* Look up every host's addresses; hosts that are literals are settled now. */
static void lookup_hosts(struct route_planner *p)
{
	struct route_plan *plan = p->plan;

	p->lookups = calloc(2 * plan->n_hosts, sizeof(*p->lookups));
	if (plan->dnssec)
		p->tlsas = calloc(plan->n_hosts, sizeof(*p->tlsas));
	if (p->lookups == NULL || (plan->dnssec && p->tlsas == NULL)) {
		plan_fail(p, DS_TEMP, "4.3.0", "out of memory");
		hand_over_later(p);
		return;
	}
	for (size_t i = 0; i < plan->n_hosts; i++) {
		struct route_host *h = &plan->hosts[i];
		struct ipaddr lit;

		for (int k = 0; k < 2; k++) {
			struct host_lookup *l = &p->lookups[2 * i + k];

			l->p = p;
			l->host = i;
			l->family = k == 0 ? AF_INET : AF_INET6;
			l->status = DNS_NODATA;
		}
		if (literal_address(h->name, &lit)) {
			/* Written by the operator or the sender: used whatever the strategy. */
			h->addrs = arena_alloc(&plan->arena, sizeof(*h->addrs));
			if (h->addrs != NULL) {
				h->addrs[0] = lit;
				h->n_addrs = h->n_found = 1;
			} else {
				ds_set_local(&h->none, DS_TEMP, STAGE_DNS, "4.3.0", "out of memory");
			}
			continue;
		}
		for (int k = 0; k < 2; k++) {
			struct host_lookup *l = &p->lookups[2 * i + k];

			if (!route_strategy_wants(plan->ip_strategy, l->family))
				continue;
			l->q = ask(p, h->name, k == 0 ? DNS_TYPE_A : DNS_TYPE_AAAA, address_cb, l);
			if (l->q == NULL) {
				l->status = DNS_TEMPFAIL;
				snprintf(l->why, sizeof(l->why), "out of memory");
				continue;
			}
			p->pending++;
		}
		if (p->lookups[2 * i].q == NULL && p->lookups[2 * i + 1].q == NULL)
			host_settle(p, i);
		if (p->tlsas != NULL && plan->mx_secure)
			lookup_tlsa(p, i);
	}
	if (p->pending == 0)
		hand_over_later(p);
}

/* ---- MX ---- */

static void mx_cb(void *arg, const struct dns_answer *ans)
{
	struct route_planner *p = arg;
	struct route_plan *plan = p->plan;
	struct route_mx *mx = NULL;
	size_t n = 0, kept;

	p->mx_query = NULL;
	plan->mx_secure = ans->secure && (ans->status == DNS_OK || ans->status == DNS_NODATA);
	switch (ans->status) {
	case DNS_TEMPFAIL:
		plan_fail(p, DS_TEMP, "4.4.3", "MX lookup for %s failed: %s", plan->domain, ans->why);
		hand_over(p);
		return;
	case DNS_NXDOMAIN:
		plan_fail(p, DS_PERM, "5.1.2", "the domain %s does not exist (NXDOMAIN)",
			  plan->domain);
		hand_over(p);
		return;
	case DNS_NODATA:
		break;
	case DNS_OK:
		mx = arena_alloc(&plan->arena, ans->n * sizeof(*mx));
		for (size_t i = 0; mx != NULL && i < ans->n; i++) {
			char name[DNS_NAME_MAX + 1];
			uint16_t pref;

			if (!dns_rdata_mx(ans->rdata[i], (size_t)ans->rdlen[i], &pref, name, sizeof(name))) {
				log_warn("route: %s: an MX record that is no host name is ignored",
					 plan->domain);
				continue;
			}
			mx[n].preference = pref;
			if ((mx[n].name = arena_strdup(&plan->arena, name)) != NULL)
				n++;
		}
		if (mx == NULL) {
			plan_fail(p, DS_TEMP, "4.3.0", "out of memory");
			hand_over(p);
			return;
		}
		if (n == 0) {
			plan_fail(p, DS_TEMP, "4.4.3", "the MX records of %s name no usable host",
				  plan->domain);
			hand_over(p);
			return;
		}
		break;
	}
	if (n == 0) {
		/* RFC 5321 §5.1: no MX records, the domain is its own mail host. */
		plan->implicit_mx = true;
		plan->hosts = arena_alloc(&plan->arena, sizeof(*plan->hosts));
		if (plan->hosts == NULL || !add_host(plan, plan->domain, -1)) {
			plan_fail(p, DS_TEMP, "4.3.0", "out of memory");
			hand_over(p);
			return;
		}
		lookup_hosts(p);
		return;
	}
	plan->n_mx_records = n;
	kept = route_order_mx(mx, n, (size_t)plan->limit_mx);
	if (kept == (size_t)-1) {
		plan_fail(p, DS_PERM, "5.1.10", "the domain %s accepts no mail (null MX, RFC 7505)",
			  plan->domain);
		hand_over(p);
		return;
	}
	plan->hosts = arena_alloc(&plan->arena, kept * sizeof(*plan->hosts));
	for (size_t i = 0; plan->hosts != NULL && i < kept; i++)
		if (!add_host(plan, mx[i].name, mx[i].preference))
			break;
	if (plan->n_hosts < kept) {
		plan_fail(p, DS_TEMP, "4.3.0", "out of memory");
		hand_over(p);
		return;
	}
	lookup_hosts(p);
}

/* ---- MTA-STS ---- */

static void sts_done(void *arg, const struct sts_result *res)
{
	struct route_planner *p = arg;
	struct sts_result *copy = arena_alloc(&p->plan->arena, sizeof(*copy));

	p->sts_lookup = NULL;
	if (copy != NULL)
		*copy = *res;
	p->plan->sts = copy;
	if (p->dns_done)
		hand_over(p);
}

/* A plan made under tls.mta-sts = require, for a domain without a usable
 * policy, has no host to try: it waits for one (SPEC §4), never bounces. */
static void sts_check_require(struct route_planner *p)
{
	const struct route_plan *plan = p->plan;
	const struct sts_result *r = plan->sts;

	if (plan->failed || plan->sts_want != CFG_POLICY_REQUIRE)
		return;
	if (r == NULL)
		plan_fail(p, DS_TEMP, "4.7.5", "%s has no usable MTA-STS policy (%s)", plan->domain,
			  "the lookup could not be made");
	else if (!r->found)
		plan_fail(p, DS_TEMP, "4.7.5", "%s has no usable MTA-STS policy (%.300s)",
			  plan->domain, r->why);
	else if (r->policy.mode == STS_MODE_NONE)
		plan_fail(p, DS_TEMP, "4.7.5", "%s has no usable MTA-STS policy (its mode is none)",
			  plan->domain);
}

/* Look the domain's policy up beside the MX records, unless disabled. */
static void sts_start(struct route_planner *p, struct sts *sts, const struct config *cfg,
		      const struct rule_ctx *ctx)
{
	struct route_plan *plan = p->plan;

	plan->sts_want = config_eval(cfg, CFG_QUEUE_OUTBOUND_TLS_MTA_STS, ctx)->num;
	if (plan->sts_want == CFG_POLICY_DISABLE || sts == NULL)
		return;
	p->sts_lookup = sts_lookup_start(sts, plan->domain,
					 config_eval(cfg, CFG_QUEUE_OUTBOUND_TIMEOUT_MTA_STS, ctx)->num,
					 sts_done, p);
}

/* A recipient domain that DNS could ever know: letters, digits, '-', '_'
 * in dot-separated labels of 1..63, at most 253 in all. */
static bool domain_syntax_ok(const char *d)
{
	size_t len = strlen(d), label = 0;

	if (len == 0 || len > DNS_NAME_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = d[i];

		if (c == '.') {
			if (label == 0)
				return false;
			label = 0;
			continue;
		}
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '_') || ++label > 63)
			return false;
	}
	return label > 0;
}

struct route_planner *route_plan_start(struct resolver *res, struct event_base *base,
				       struct sts *sts,
				       const struct config *cfg, const struct cfg_section *remote,
				       const char *domain, const struct rule_ctx *ctx,
				       route_plan_cb cb, void *arg)
{
	struct route_planner *p = calloc(1, sizeof(*p));
	struct route_plan *plan = calloc(1, sizeof(*plan));
	struct ipaddr lit;

	if (p == NULL || plan == NULL || (p->done_ev = evtimer_new(base, done_cb, p)) == NULL) {
		free(p);
		free(plan);
		return NULL;
	}
	arena_init(&plan->arena);
	p->plan = plan;
	p->res = res;
	p->cb = cb;
	p->arg = arg;
	plan->remote = remote;
	plan->domain = arena_strdup(&plan->arena, domain);
	plan->ip_strategy = config_eval(cfg, CFG_QUEUE_OUTBOUND_IP_STRATEGY, ctx)->num;
	plan->limit_mx = config_eval(cfg, CFG_QUEUE_OUTBOUND_LIMITS_MX, ctx)->num;
	plan->limit_multihomed = config_eval(cfg, CFG_QUEUE_OUTBOUND_LIMITS_MULTIHOMED, ctx)->num;
	plan->sts_want = CFG_POLICY_DISABLE; /* until sts_start: relays and literals keep it */
	plan->hosts = arena_alloc(&plan->arena, sizeof(*plan->hosts));
	if (plan->domain == NULL || plan->hosts == NULL) {
		route_plan_cancel(p);
		return NULL;
	}
	if (remote != NULL) {
		/* A relay is used as named: no MX lookup for it (SPEC §3.1). */
		plan->port = (int)cfg_section_get(remote, CFG_REMOTE_PORT)->num;
		if (!add_host(plan, cfg_section_get(remote, CFG_REMOTE_ADDRESS)->str, -1)) {
			route_plan_cancel(p);
			return NULL;
		}
		lookup_hosts(p);
		return p;
	}
	plan->port = ROUTE_MX_PORT;
	if (literal_address(domain, &lit) && domain[0] == '[') {
		if (!add_host(plan, domain, -1)) {
			route_plan_cancel(p);
			return NULL;
		}
		lookup_hosts(p);
		return p;
	}
	if (!domain_syntax_ok(domain)) {
		plan_fail(p, DS_PERM, "5.1.2", "\"%s\" is not a domain name that DNS can know",
			  domain);
		hand_over_later(p);
		return p;
	}
	plan->dnssec = resolver_validates(res) &&
		       config_eval(cfg, CFG_QUEUE_OUTBOUND_TLS_DANE, ctx)->num != CFG_POLICY_DISABLE;
	sts_start(p, sts, cfg, ctx);
	p->mx_query = ask(p, domain, DNS_TYPE_MX, mx_cb, p);
	if (p->mx_query == NULL) {
		route_plan_cancel(p);
		return NULL;
	}
	return p;
}
