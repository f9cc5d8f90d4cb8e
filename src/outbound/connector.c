/*
 * connector.c - pools of outbound connections per next hop.
 *
 * A pool is one destination: a relay ([remote."<id>"]) or, for delivery
 * by MX, one recipient domain. Pools live in a hash table and are freed
 * when they have neither connections nor waiting deliveries, so a queue
 * that reaches many domains keeps only the ones it is working on.
 *
 * Invariants, per pool:
 *   - at most `limit` connections exist (planning, connecting, busy or
 *     idle): remote.<id>.concurrency for a relay, MX_DOMAIN_CONCURRENCY for
 *     a domain;
 *   - a delivery is in exactly one place: the pool's FIFO wait list, or
 *     bound to one connection as its current transaction;
 *   - a connection that becomes ready or finishes a transaction takes the
 *     next waiting delivery (reuse); with none it stays idle for
 *     IDLE_KEEP_MS, then QUITs;
 *   - new connections are opened only while more deliveries wait than
 *     connections are being set up, so a burst opens `limit` connections
 *     and a trickle reuses one.
 *
 * Every new connection first gets a plan (route/plan.h): the hosts and
 * addresses to try, in order. It walks the plan: a failed connect moves to
 * the host's next address, any other failure before the transaction
 * (greeting, EHLO, AUTH) to the next host (SPEC §3.3, §3.4). Each attempt
 * draws its own source address. When the plan runs out and no connection
 * of the pool is up, the waiting deliveries fail at once with what went
 * wrong (no reconnect loop against a dead destination): permanently only
 * when every host failed permanently (SPEC §3.5), and never permanently
 * for a relay: tern does not bounce mail because its own relay refused
 * to talk to it.
 *
 * TLS: every connection gets its policy from route/tlspolicy.h (SPEC §4).
 * When opportunistic STARTTLS fails or stalls (client_tls_failed), the
 * connection tries the same address again at once in clear, and the host
 * and address are remembered (tls_fallback.h) for TLS_FALLBACK_HOLD_MS, so
 * that connections to them meanwhile skip STARTTLS. A required TLS never
 * falls back: its failure is the host's, temporary. The process's one
 * TLS client context is the connector's.
 *
 * MTA-STS (SPEC §4, the policy comes with the plan): under `enforce`, MX
 * hosts that do not match the policy are skipped without a connection
 * (a temporary 4.7.5 failure for the walk), and the ones that match
 * require STARTTLS with a certificate verified for the host name, with
 * no fallback to clear; under `testing` each violation is logged as a
 * warning and delivery goes on as without a policy. The log line's tls=
 * says which policy a session ran under (" mta-sts=enforce").
 */
#include "outbound/connector.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "config/settings.h"
#include "dns/resolver.h"
#include "outbound/client.h"
#include "outbound/tls_fallback.h"
#include "route/nexthop.h"
#include "route/plan.h"
#include "route/tlspolicy.h"
#include "server/server.h"
#include "sts/sts.h"
#include "spool/spool.h"
#include "util/clock.h"
#include "util/log.h"
#include "util/text.h"

#define IDLE_KEEP_MS 2000
/* Most connections to one recipient domain's MX hosts at once (Postfix's
 * default_destination_concurrency_limit is the same). */
#define MX_DOMAIN_CONCURRENCY 20
#define POOL_BUCKETS_MIN 64
/* tern's choice: how long a host whose TLS handshake failed is spoken to
 * in clear (SPEC §4 leaves it open). */
#define TLS_FALLBACK_HOLD_MS (60 * 60 * 1000)

struct pool;

struct conn {
	struct pool *pool;
	struct route_planner *planning;
	struct route_plan *plan;
	size_t host_i, addr_i;       /* where in the plan */
	/* failures met while walking the plan */
	bool any_temp, any_perm;
	struct delivery_status temp, perm;
	char last_relay[160];        /* the last host[address]:port tried */
	char last_tls[TLS_SUMMARY_MAX]; /* and the TLS of its session, if any */
	struct tls_policy tls;       /* of the current attempt */
	enum sts_mode sts_mode;      /* the MTA-STS policy it runs under (NONE: no policy) */
	bool in_clear;               /* the current address again, after a failed handshake */
	struct client *client;
	struct ipaddr remote_ip, local_ip;
	struct delivery *busy;       /* current transaction, or NULL */
	struct client_txn txn;
	struct event *idle_timer;
	bool ready;
	struct conn *next;
};

struct pool {
	struct connector *cn;
	const struct cfg_section *remote; /* the relay, or NULL: delivery by MX */
	const struct config *cfg;         /* the configuration remote belongs to */
	char *domain;                     /* MX: the recipient domain */
	uint64_t hash;
	size_t limit;
	struct delivery *wait_head, *wait_tail;
	size_t n_waiting;
	struct conn *conns;
	size_t n_conns, n_connecting;
	struct pool *next;                /* hash chain */
};

struct connector {
	struct server *srv;
	struct pool **buckets;
	size_t n_buckets, n_pools;
	size_t busy;
	bool stopping;
	struct tls_client *tls;               /* the process's TLS client context */
	struct tls_fallback *tls_fallback;    /* hosts spoken to in clear for now */
};

static const char *pool_name(const struct pool *p)
{
	return p->remote != NULL ? p->remote->id : p->domain;
}

static const char *pool_kind(const struct pool *p)
{
	return p->remote != NULL ? "remote" : "domain";
}

static void pump(struct pool *p);
static void conn_try(struct conn *c);

/* ---- the pool table ---- */

static uint64_t pool_hash(const struct cfg_section *remote, const char *domain)
{
	return remote != NULL ? text_hash(remote->id, strlen(remote->id)) ^ 0x5bd1e995u
			      : text_hash(domain, strlen(domain));
}

static bool pool_is(const struct pool *p, const struct cfg_section *remote, const char *domain)
{
	return remote != NULL ? p->remote == remote
			      : p->remote == NULL && strcmp(p->domain, domain) == 0;
}

static void table_grow(struct connector *cn)
{
	size_t n = cn->n_buckets ? cn->n_buckets * 2 : POOL_BUCKETS_MIN;
	struct pool **b = calloc(n, sizeof(*b));

	if (b == NULL)
		return; /* longer chains, still correct */
	for (size_t i = 0; i < cn->n_buckets; i++) {
		while (cn->buckets[i] != NULL) {
			struct pool *p = cn->buckets[i];

			cn->buckets[i] = p->next;
			p->next = b[p->hash & (n - 1)];
			b[p->hash & (n - 1)] = p;
		}
	}
	free(cn->buckets);
	cn->buckets = b;
	cn->n_buckets = n;
}

static struct pool *pool_get(struct connector *cn, const struct cfg_section *remote,
			     const char *domain)
{
	uint64_t h = pool_hash(remote, domain);
	struct pool *p;

	if (cn->n_buckets == 0 || cn->n_pools >= 2 * cn->n_buckets)
		table_grow(cn);
	if (cn->n_buckets == 0)
		return NULL;
	for (p = cn->buckets[h & (cn->n_buckets - 1)]; p != NULL; p = p->next)
		if (p->hash == h && pool_is(p, remote, domain))
			return p;
	p = calloc(1, sizeof(*p));
	if (p == NULL)
		return NULL;
	if (remote == NULL && (p->domain = strdup(domain)) == NULL) {
		free(p);
		return NULL;
	}
	p->cn = cn;
	p->remote = remote;
	p->cfg = cn->srv->cfg;
	p->hash = h;
	p->limit = remote != NULL ? (size_t)cfg_section_get(remote, CFG_REMOTE_CONCURRENCY)->num
				  : MX_DOMAIN_CONCURRENCY;
	p->next = cn->buckets[h & (cn->n_buckets - 1)];
	cn->buckets[h & (cn->n_buckets - 1)] = p;
	cn->n_pools++;
	return p;
}

/* Free the pool when nothing uses it. Callers do nothing with p after. */
static void pool_release_if_unused(struct pool *p)
{
	struct connector *cn = p->cn;

	if (p->conns != NULL || p->n_waiting > 0 || cn->stopping)
		return;
	for (struct pool **pp = &cn->buckets[p->hash & (cn->n_buckets - 1)]; *pp != NULL;
	     pp = &(*pp)->next) {
		if (*pp == p) {
			*pp = p->next;
			break;
		}
	}
	cn->n_pools--;
	free(p->domain);
	free(p);
}

/* ---- finishing deliveries ---- */

static void delivery_finish(struct connector *cn, struct delivery *d)
{
	cn->busy--;
	d->done(d->arg, d);
}

static void fail_delivery(struct connector *cn, struct delivery *d, const struct delivery_status *why)
{
	for (size_t i = 0; i < d->n_rcpts; i++)
		d->status[i] = *why;
	delivery_finish(cn, d);
}

static struct delivery *wait_pop(struct pool *p)
{
	struct delivery *d = p->wait_head;

	if (d != NULL) {
		p->wait_head = d->next;
		if (p->wait_head == NULL)
			p->wait_tail = NULL;
		d->next = NULL;
		p->n_waiting--;
	}
	return d;
}

static void fail_waiting(struct pool *p, const struct delivery_status *why, const char *relay,
			 const char *tls)
{
	struct delivery *d;

	while ((d = wait_pop(p)) != NULL) {
		snprintf(d->relay, sizeof(d->relay), "%s", relay);
		snprintf(d->tls, sizeof(d->tls), "%s", tls);
		fail_delivery(p->cn, d, why);
	}
}

/* The rule variables of set R for the delivery at the head of the line:
 * connection-level settings follow the delivery that opens the
 * connection. */
static void head_ctx(const struct pool *p, struct rule_ctx *ctx)
{
	const struct delivery *d = p->wait_head;

	memset(ctx, 0, sizeof(*ctx));
	if (d != NULL) {
		const struct rcpt *r = &d->msg->rcpts[d->rcpt_index[0]];

		route_rule_ctx(ctx, d->msg, r->domain, r->domain_len);
	}
}

/* ---- connections ---- */

static void conn_free(struct conn *c, bool polite)
{
	struct pool *p = c->pool;

	for (struct conn **pp = &p->conns; *pp != NULL; pp = &(*pp)->next) {
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	}
	p->n_conns--;
	if (!c->ready)
		p->n_connecting--;
	if (c->idle_timer != NULL)
		event_free(c->idle_timer);
	route_plan_cancel(c->planning);
	route_plan_free(c->plan);
	if (c->client != NULL) {
		if (polite)
			client_quit(c->client);
		else
			client_free(c->client);
	}
	free(c);
}

static const struct route_host *conn_host(const struct conn *c)
{
	return &c->plan->hosts[c->host_i];
}

/* "mx1.example.org[192.0.2.1]:25", or the relay's id for a relay. */
static void conn_relay_text(const struct conn *c, char *out, size_t outlen)
{
	const struct pool *p = c->pool;
	char ip[IPADDR_STRLEN];

	snprintf(out, outlen, "%.100s[%s]:%d", p->remote != NULL ? p->remote->id : conn_host(c)->name,
		 ipaddr_format(&c->remote_ip, ip, sizeof(ip)), c->plan->port);
}

/* ---- MTA-STS, host by host ---- */

static void note_failure(struct conn *c, const struct delivery_status *why);

/* The client's TLS summary, and the MTA-STS policy the session ran under
 * when there is one: "TLSv1.3:... verified=yes mta-sts=enforce". */
static void conn_tls_text(const struct conn *c, const struct client *cl, char *out, size_t outlen)
{
	size_t n;

	client_tls_summary(cl, out, outlen);
	n = strlen(out);
	if (c->sts_mode != STS_MODE_NONE && n > 0)
		snprintf(out + n, outlen - n, " mta-sts=%s", sts_mode_name(c->sts_mode));
}

/* May h be tried under the plan's MTA-STS policy? Under enforce a host
 * that matches none of the mx patterns is skipped (noted as a temporary
 * failure); under testing it is tried, and the violation logged. */
static bool conn_sts_allows(struct conn *c, const struct route_host *h)
{
	const struct sts_result *r = c->plan->sts;
	struct delivery_status why;

	if (r == NULL || !r->found || r->policy.mode == STS_MODE_NONE ||
	    sts_mx_match(&r->policy, h->name))
		return true;
	if (r->policy.mode == STS_MODE_TESTING) {
		log_warn("domain %s: MTA-STS testing: MX host %s does not match the policy (id %s); "
			 "tried anyway", c->plan->domain, h->name, r->id);
		return true;
	}
	ds_set_local(&why, DS_TEMP, STAGE_CONNECT, "4.7.5",
		     "MTA-STS: MX host %s does not match the policy of %s (mode enforce, id %s); "
		     "not tried", h->name, c->plan->domain, r->id);
	log_warn("domain %s: %s", c->plan->domain, why.text);
	note_failure(c, &why);
	return false;
}

/* The policy of a connection to a host the plan's MTA-STS policy
 * enforces: STARTTLS and a certificate verified for the host name, as
 * with starttls = require (and so never the fallback to clear). This
 * overrides starttls = disable: tls.mta-sts = disable is the way out. */
static void conn_sts_tighten(struct conn *c, struct tls_policy *policy)
{
	const struct sts_result *r = c->plan->sts;

	c->sts_mode = r != NULL && r->found ? r->policy.mode : STS_MODE_NONE;
	if (c->sts_mode == STS_MODE_ENFORCE) {
		policy->use = TLS_USE_REQUIRED;
		policy->verify = TLS_VERIFY_NAME;
	}
}

/* A session is up under a testing policy: log what enforce would have
 * refused (TLS not used, a certificate not verified). */
static void conn_sts_report(const struct conn *c, const struct client *cl)
{
	const struct tls_info *info = client_tls_info(cl);
	char tls[TLS_SUMMARY_MAX];

	if (c->sts_mode != STS_MODE_TESTING || (info != NULL && info->verified))
		return;
	client_tls_summary(cl, tls, sizeof(tls));
	if (info == NULL)
		log_warn("domain %s: MTA-STS testing: %s: TLS not used (%s); delivering anyway",
			 c->plan->domain, c->last_relay, tls);
	else
		log_warn("domain %s: MTA-STS testing: %s: certificate not verified (%s); delivering "
			 "anyway", c->plan->domain, c->last_relay, tls);
}

/* A TLS failure under enforce: the reason says MTA-STS required it. */
static const struct delivery_status *conn_sts_blame(const struct conn *c,
						    const struct delivery_status *why,
						    struct delivery_status *out)
{
	if (c->sts_mode != STS_MODE_ENFORCE || why->stage != STAGE_TLS)
		return why;
	*out = *why;
	snprintf(out->text, sizeof(out->text), "MTA-STS (enforce): %.480s", why->text);
	return out;
}

/* Tell the delivery where it went, for the log line and the retry rule. */
static void stamp_delivery(const struct conn *c, struct delivery *d)
{
	snprintf(d->relay, sizeof(d->relay), "%s", c->last_relay);
	conn_tls_text(c, c->client, d->tls, sizeof(d->tls));
	snprintf(d->mx, sizeof(d->mx), "%s", conn_host(c)->name);
	d->remote_ip = c->remote_ip;
	d->local_ip = c->local_ip;
}

/* The next waiting delivery whose body is at hand, or NULL. Deliveries
 * travel without a body when the queue's memory budget was spent: it is
 * read from the spool now; one that cannot be read is deferred. */
static struct delivery *take_ready_delivery(struct pool *p)
{
	struct delivery *d;

	while ((d = wait_pop(p)) != NULL) {
		struct delivery_status why;

		if (d->body != NULL || (d->body = spool_read_body(p->cn->srv->spool, d->msg)) != NULL)
			return d;
		ds_set_local(&why, DS_TEMP, STAGE_DATA, "4.3.0",
			     "cannot read the message from the spool: %s", strerror(errno));
		snprintf(d->relay, sizeof(d->relay), "%s", pool_name(p));
		fail_delivery(p->cn, d, &why);
	}
	return NULL;
}

static void conn_take_next(struct conn *c)
{
	struct delivery *d = take_ready_delivery(c->pool);
	struct timeval keep = { IDLE_KEEP_MS / 1000, (IDLE_KEEP_MS % 1000) * 1000 };

	if (d == NULL) {
		evtimer_add(c->idle_timer, &keep);
		return;
	}
	evtimer_del(c->idle_timer);
	c->busy = d;
	memset(&c->txn, 0, sizeof(c->txn));
	c->txn.msg = d->msg;
	c->txn.rcpt_index = d->rcpt_index;
	c->txn.n_rcpts = d->n_rcpts;
	c->txn.body = d->body;
	c->txn.results = d->status;
	c->txn.owner_data = d;
	if (client_send(c->client, &c->txn) != 0) {
		/* Not idle after all: put it back first in line. */
		c->busy = NULL;
		d->next = c->pool->wait_head;
		c->pool->wait_head = d;
		if (c->pool->wait_tail == NULL)
			c->pool->wait_tail = d;
		c->pool->n_waiting++;
	}
}

static void idle_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	struct pool *p = c->pool;

	(void)fd;
	(void)what;
	conn_free(c, true);
	pool_release_if_unused(p);
}

static int64_t stage_timeout(const struct connector *cn, const struct pool *p, enum cfg_key key,
			     const struct rule_ctx *ctx)
{
	int64_t ms = config_eval(cn->srv->cfg, key, ctx)->num;
	const struct cfg_value *cap = p->remote != NULL ? cfg_section_get(p->remote, CFG_REMOTE_TIMEOUT)
							: NULL;

	if (cap != NULL && !cap->none && cap->num < ms)
		ms = cap->num;
	return ms;
}

static void client_event_cb(void *arg, struct client *cl, enum client_event ev,
			    const struct delivery_status *why);
static void client_txn_cb(void *arg, struct client *cl, struct client_txn *txn);

static const struct client_callbacks conn_callbacks = { client_event_cb, client_txn_cb };

static void sockaddr_from(const struct ipaddr *ip, int port, struct sockaddr_storage *ss,
			  socklen_t *len)
{
	memset(ss, 0, sizeof(*ss));
	if (ip->family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)ss;

		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)port);
		memcpy(&sin->sin_addr, ip->bytes, 4);
		*len = sizeof(*sin);
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)port);
		memcpy(&sin6->sin6_addr, ip->bytes, 16);
		*len = sizeof(*sin6);
	}
}

/* DANE for a connection to MX host h (rule set M in ctx); relays are
 * exempt. */
static enum route_dane_verdict conn_dane_tighten(const struct conn *c, const struct rule_ctx *ctx,
						 const struct route_host *h,
						 struct tls_policy *policy)
{
	struct delivery_status refused;

	if (c->pool->remote != NULL)
		return ROUTE_DANE_OFF;
	return route_tls_dane(c->pool->cn->srv->cfg, ctx, h, policy, &refused);
}

/* Connect c to the plan's current host and address. Rules are evaluated
 * with the connection's real mx, remote-ip and local-ip (sets M and H). */
static bool conn_connect(struct conn *c)
{
	struct pool *p = c->pool;
	struct connector *cn = p->cn;
	const struct route_host *h = conn_host(c);
	const struct ipaddr *addr = &h->addrs[c->addr_i];
	const struct cfg_value *helo;
	struct route_conn_vars vars;
	struct client_target t;
	struct rule_ctx ctx;
	static const enum cfg_key stage_keys[STAGE_DNS] = {
		[STAGE_CONNECT] = CFG_QUEUE_OUTBOUND_TIMEOUT_CONNECT,
		[STAGE_GREETING] = CFG_QUEUE_OUTBOUND_TIMEOUT_GREETING,
		[STAGE_TLS] = CFG_QUEUE_OUTBOUND_TIMEOUT_TLS,
		[STAGE_EHLO] = CFG_QUEUE_OUTBOUND_TIMEOUT_EHLO,
		[STAGE_MAIL_FROM] = CFG_QUEUE_OUTBOUND_TIMEOUT_MAIL_FROM,
		[STAGE_RCPT_TO] = CFG_QUEUE_OUTBOUND_TIMEOUT_RCPT_TO,
		[STAGE_DATA] = CFG_QUEUE_OUTBOUND_TIMEOUT_DATA,
	};

	head_ctx(p, &ctx);
	route_conn_ctx(&ctx, h->name, addr, NULL, &vars);
	memset(&t, 0, sizeof(t));
	route_pick_source(cn->srv->cfg, &ctx, addr->family, &t.source);
	route_conn_ctx(&ctx, NULL, NULL, &t.source, &vars);
	c->remote_ip = *addr;
	c->local_ip = t.source;

	t.host = p->remote != NULL ? p->remote->id : h->name;
	sockaddr_from(addr, c->plan->port, &t.addr, &t.addr_len);
	t.lmtp = p->remote != NULL &&
		 cfg_section_get(p->remote, CFG_REMOTE_PROTOCOL)->num == CFG_PROTO_LMTP;
	helo = config_eval(cn->srv->cfg, CFG_QUEUE_OUTBOUND_HOSTNAME, &ctx);
	t.helo_name = helo != NULL && !helo->none && helo->len > 0 ? helo->str : cn->srv->hostname;
	for (int s = 0; s < STAGE_DNS; s++)
		t.timeout_ms[s] = stage_timeout(cn, p, stage_keys[s], &ctx);
	route_tls_policy(cn->srv->cfg, p->remote, &ctx, &t.tls.policy);
	if (conn_dane_tighten(c, &ctx, h, &t.tls.policy) != ROUTE_DANE_ON)
		conn_sts_tighten(c, &t.tls.policy);
	if (t.tls.policy.use == TLS_USE_OFFERED &&
	    (c->in_clear ||
	     tls_fallback_in_effect(cn->tls_fallback, h->name, addr, clock_wall_ms()))) {
		t.tls.policy.use = TLS_USE_NEVER;
		t.tls.after_failure = true;
	}
	t.tls.name = h->name;
	t.tls.ctx = cn->tls;
	c->tls = t.tls.policy;
	c->last_tls[0] = '\0';
	if (p->remote != NULL) {
		const struct cfg_value *user = cfg_section_get(p->remote, CFG_REMOTE_AUTH_USERNAME);
		const struct cfg_value *secret = cfg_section_get(p->remote, CFG_REMOTE_AUTH_SECRET);

		if (user != NULL && !user->none && secret != NULL && !secret->none) {
			t.auth_user = user->str;
			t.auth_secret = secret->str;
		}
	}
	conn_relay_text(c, c->last_relay, sizeof(c->last_relay));
	c->client = client_connect(cn->srv->base, &t, &conn_callbacks, c);
	return c->client != NULL;
}

static bool pool_has_ready(const struct pool *p)
{
	for (const struct conn *c = p->conns; c != NULL; c = c->next)
		if (c->ready)
			return true;
	return false;
}

static void note_failure(struct conn *c, const struct delivery_status *why)
{
	if (why->cls == DS_PERM) {
		c->any_perm = true;
		c->perm = *why;
	} else {
		c->any_temp = true;
		c->temp = *why;
	}
}

/* The plan ran out without a session: report, then let the pool decide. */
static void conn_give_up(struct conn *c, const struct delivery_status *plan_fail)
{
	struct pool *p = c->pool;
	struct delivery_status status;
	char relay[160], tls[TLS_SUMMARY_MAX];

	snprintf(tls, sizeof(tls), "%s", c->last_tls);
	if (plan_fail != NULL)
		status = *plan_fail;
	else if (c->any_temp || !c->any_perm)
		status = c->temp;
	else
		status = c->perm;
	if (!c->any_temp && !c->any_perm && plan_fail == NULL)
		ds_set_local(&status, DS_TEMP, STAGE_CONNECT, "4.4.1", "no host to connect to");
	/* tern never bounces mail because its own relay would not talk to it. */
	if (p->remote != NULL && status.cls == DS_PERM)
		status.cls = DS_TEMP;
	snprintf(relay, sizeof(relay), "%s", c->last_relay[0] != '\0' ? c->last_relay
				   : p->remote != NULL ? p->remote->id : "none");
	if (plan_fail != NULL)
		log_warn("%s %s: %s", pool_kind(p), pool_name(p), plan_fail->text);
	conn_free(c, false);
	/* Unless a connection to the destination is up, fail what waits now.
	 * Opening a replacement here would retry a dead destination in a
	 * tight loop; the queue's retry schedule paces the next try. */
	if (pool_has_ready(p))
		pump(p);
	else
		fail_waiting(p, &status, relay, tls);
	pool_release_if_unused(p);
}

/* May the current host be used at all? DANE may forbid it (a failed
 * TLSA lookup, or `dane = require` without records); where DANE does not
 * govern it, an MTA-STS policy that does not name it. A refusal is logged
 * and noted. */
static bool conn_host_allowed(struct conn *c, const struct route_host *h)
{
	struct route_conn_vars vars;
	struct tls_policy scratch = { 0 };
	struct delivery_status refused;
	struct rule_ctx ctx;

	if (c->pool->remote != NULL)
		return true;
	head_ctx(c->pool, &ctx);
	route_conn_ctx(&ctx, h->name, NULL, NULL, &vars);
	switch (route_tls_dane(c->pool->cn->srv->cfg, &ctx, h, &scratch, &refused)) {
	case ROUTE_DANE_REFUSE:
		log_warn("%s %s: %s", pool_kind(c->pool), pool_name(c->pool), refused.text);
		note_failure(c, &refused);
		return false;
	case ROUTE_DANE_ON:
		return true;
	case ROUTE_DANE_OFF:
		break;
	}
	return conn_sts_allows(c, h);
}

/* Walk the plan from the current host and address to the next one that
 * can be tried; give up at its end. */
static void conn_try(struct conn *c)
{
	const struct route_plan *plan = c->plan;

	if (c->pool->n_waiting == 0 || c->pool->cn->stopping) {
		/* Others took the work meanwhile: nothing to connect for. */
		struct pool *p = c->pool;

		conn_free(c, false);
		pool_release_if_unused(p);
		return;
	}
	while (c->host_i < plan->n_hosts) {
		const struct route_host *h = &plan->hosts[c->host_i];

		if (h->n_addrs == 0) {
			log_warn("%s %s: %s", pool_kind(c->pool), pool_name(c->pool), h->none.text);
			note_failure(c, &h->none);
		} else if (c->addr_i == 0 && !c->in_clear && !conn_host_allowed(c, h)) {
			/* skipped: DANE or MTA-STS refused it */
		} else if (c->addr_i < h->n_addrs) {
			if (conn_connect(c))
				return;
			log_error("%s %s: cannot start a connection: out of memory", pool_kind(c->pool),
				  pool_name(c->pool));
			ds_set_local(&c->temp, DS_TEMP, STAGE_CONNECT, "4.3.0", "out of memory");
			c->any_temp = true;
			c->addr_i++;
			c->in_clear = false;
			continue;
		}
		c->host_i++;
		c->addr_i = 0;
	}
	conn_give_up(c, NULL);
}

static void plan_cb(void *arg, struct route_plan *plan)
{
	struct conn *c = arg;

	c->planning = NULL;
	c->plan = plan;
	if (plan->failed)
		conn_give_up(c, &plan->fail);
	else
		conn_try(c);
}

/* Opportunistic TLS failed or stalled at the current address: the same
 * address again at once, in clear, and in clear from now on for
 * TLS_FALLBACK_HOLD_MS (SPEC §4). */
static void conn_retry_in_clear(struct conn *c, const struct delivery_status *why)
{
	const struct route_host *h = conn_host(c);
	struct pool *p = c->pool;

	log_warn("%s %s: %s: %s; delivering in clear, and without STARTTLS to %s for %d min",
		 pool_kind(p), pool_name(p), c->last_relay, why->text, h->name,
		 TLS_FALLBACK_HOLD_MS / 60000);
	tls_fallback_note(p->cn->tls_fallback, h->name, &h->addrs[c->addr_i], clock_wall_ms());
	client_free(c->client);
	c->client = NULL;
	c->in_clear = true;
	conn_try(c);
}

static void client_event_cb(void *arg, struct client *cl, enum client_event ev,
			    const struct delivery_status *why)
{
	struct conn *c = arg;
	struct pool *p = c->pool;
	struct delivery_status sts_why;

	switch (ev) {
	case CLIENT_READY:
		c->ready = true;
		p->n_connecting--;
		conn_sts_report(c, cl);
		conn_take_next(c);
		return;
	case CLIENT_FAILED:
		conn_tls_text(c, cl, c->last_tls, sizeof(c->last_tls));
		why = conn_sts_blame(c, why, &sts_why);
		if (client_tls_failed(cl) && c->tls.use == TLS_USE_OFFERED) {
			conn_retry_in_clear(c, why);
			return;
		}
		/* A local failure (a source address that cannot be bound, no
		 * sockets left) is the operator's to fix: an error, not a warning. */
		if (!why->remote && strncmp(why->enhanced, "4.3.", 4) == 0)
			log_error("%s %s: %s failed: %s", pool_kind(p), pool_name(p),
				  ds_stage_name(why->stage), why->text);
		else
			log_warn("%s %s: %s failed: %s", pool_kind(p), pool_name(p),
				 ds_stage_name(why->stage), why->text);
		client_free(c->client);
		c->client = NULL;
		note_failure(c, why);
		c->in_clear = false;
		/* A refused or timed-out connect moves to the host's next
		 * address; a host that answered and failed, to the next host. */
		if (why->stage == STAGE_CONNECT) {
			c->addr_i++;
		} else {
			c->host_i++;
			c->addr_i = 0;
		}
		conn_try(c);
		return;
	case CLIENT_CLOSED:
		c->client = NULL;
		client_free(cl);
		conn_free(c, false);
		pump(p);
		pool_release_if_unused(p);
		return;
	}
}

static void client_txn_cb(void *arg, struct client *cl, struct client_txn *txn)
{
	struct conn *c = arg;
	struct delivery *d = txn->owner_data;

	(void)cl;
	c->busy = NULL;
	stamp_delivery(c, d);
	delivery_finish(c->pool->cn, d);
	if (client_is_idle(c->client) && !c->pool->cn->stopping)
		conn_take_next(c);
}

/* A new connection for p: it plans first, then connects. */
static bool conn_open(struct pool *p)
{
	struct connector *cn = p->cn;
	struct conn *c = calloc(1, sizeof(*c));
	struct rule_ctx ctx;

	if (c == NULL)
		return false;
	c->pool = p;
	c->idle_timer = evtimer_new(cn->srv->base, idle_timeout_cb, c);
	c->next = p->conns;
	p->conns = c;
	p->n_conns++;
	p->n_connecting++;
	head_ctx(p, &ctx);
	if (c->idle_timer != NULL)
		c->planning = route_plan_start(cn->srv->resolver, cn->srv->base, cn->srv->sts,
					       cn->srv->cfg,
					       p->remote, p->remote != NULL ? "" : p->domain, &ctx,
					       plan_cb, c);
	if (c->planning == NULL) {
		conn_free(c, false);
		return false;
	}
	return true;
}

/* ---- pools ---- */

static void pump(struct pool *p)
{
	if (p->cn->stopping)
		return;
	for (struct conn *c = p->conns; c != NULL && p->n_waiting > 0; c = c->next)
		if (c->ready && c->busy == NULL && client_is_idle(c->client))
			conn_take_next(c);
	while (p->n_waiting > p->n_connecting && p->n_conns < p->limit) {
		if (!conn_open(p)) {
			struct delivery_status why;

			ds_set_local(&why, DS_TEMP, STAGE_CONNECT, "4.3.0",
				     "cannot start a connection to %s: out of resources", pool_name(p));
			log_error("%s %s: %s", pool_kind(p), pool_name(p), why.text);
			if (p->n_conns == 0)
				fail_waiting(p, &why, pool_name(p), "");
			return;
		}
	}
}

void connector_deliver(struct connector *cn, const struct cfg_section *remote, struct delivery *d)
{
	const struct rcpt *r = &d->msg->rcpts[d->rcpt_index[0]];
	struct pool *p = cn->stopping ? NULL : pool_get(cn, remote, r->domain);
	struct delivery_status why;

	cn->busy++;
	d->next = NULL;
	snprintf(d->relay, sizeof(d->relay), "%s", remote != NULL ? remote->id : "none");
	d->tls[0] = '\0';
	if (p == NULL) {
		ds_set_local(&why, DS_TEMP, STAGE_CONNECT, "4.3.0", "%s",
			     cn->stopping ? "tern is stopping" : "out of memory");
		fail_delivery(cn, d, &why);
		return;
	}
	if (p->wait_tail != NULL)
		p->wait_tail->next = d;
	else
		p->wait_head = d;
	p->wait_tail = d;
	p->n_waiting++;
	pump(p);
}

size_t connector_busy(const struct connector *cn)
{
	return cn->busy;
}

bool connector_uses_config(const struct connector *cn, const struct config *cfg)
{
	for (size_t b = 0; b < cn->n_buckets; b++)
		for (const struct pool *p = cn->buckets[b]; p != NULL; p = p->next)
			if (p->remote != NULL && p->cfg == cfg)
				return true;
	return false;
}

void connector_visit(const struct connector *cn,
		     void (*cb)(void *arg, const char *kind, const char *name, size_t connections,
				size_t waiting),
		     void *arg)
{
	for (size_t b = 0; b < cn->n_buckets; b++)
		for (const struct pool *p = cn->buckets[b]; p != NULL; p = p->next)
			cb(arg, pool_kind(p), pool_name(p), p->n_conns, p->n_waiting);
}

struct connector *connector_new(struct server *srv)
{
	struct connector *cn = calloc(1, sizeof(*cn));
	char err[256];

	if (cn == NULL)
		return NULL;
	cn->srv = srv;
	table_grow(cn);
	cn->tls_fallback = tls_fallback_new(TLS_FALLBACK_HOLD_MS);
	cn->tls = tls_client_new(err, sizeof(err));
	if (cn->tls == NULL)
		log_error("%s", err);
	if (cn->buckets == NULL || cn->tls_fallback == NULL || cn->tls == NULL) {
		tls_client_free(cn->tls);
		tls_fallback_free(cn->tls_fallback);
		free(cn->buckets);
		free(cn);
		return NULL;
	}
	return cn;
}

void connector_stop(struct connector *cn)
{
	struct delivery_status why;

	cn->stopping = true;
	/* code 0, local: the queue leaves these recipients as they were. */
	ds_set_local(&why, DS_TEMP, STAGE_CONNECT, "4.3.2", "tern is stopping");
	for (size_t b = 0; b < cn->n_buckets; b++) {
		for (struct pool *p = cn->buckets[b]; p != NULL; p = p->next) {
			fail_waiting(p, &why, pool_name(p), "");
			while (p->conns != NULL) {
				struct conn *c = p->conns;
				struct delivery *d = c->busy;

				/* The loop has stopped: no time for a QUIT exchange. */
				c->busy = NULL;
				conn_free(c, false);
				if (d != NULL)
					fail_delivery(cn, d, &why);
			}
		}
	}
}

void connector_free(struct connector *cn)
{
	if (cn == NULL)
		return;
	connector_stop(cn);
	for (size_t b = 0; b < cn->n_buckets; b++) {
		while (cn->buckets[b] != NULL) {
			struct pool *p = cn->buckets[b];

			cn->buckets[b] = p->next;
			free(p->domain);
			free(p);
		}
	}
	free(cn->buckets);
	tls_client_free(cn->tls);
	tls_fallback_free(cn->tls_fallback);
	free(cn);
}
