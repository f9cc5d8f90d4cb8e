/*
 * connector.c - pools of outbound connections per remote host.
 *
 * Invariants, per pool (one [remote."<id>"]):
 *   - at most `concurrency` connections exist (connecting, busy or idle);
 *   - a delivery is in exactly one place: the pool's FIFO wait list, or
 *     bound to one connection as its current transaction;
 *   - a connection that becomes ready or finishes a transaction takes the
 *     next waiting delivery (reuse); with none it stays idle for
 *     IDLE_KEEP_MS, then QUITs;
 *   - new connections are opened only while more deliveries wait than
 *     connections are being set up, so a burst opens `concurrency`
 *     connections and a trickle reuses one.
 * A failure before the transaction (connect, greeting, EHLO, AUTH) moves
 * that connection to the host's next address; when no address is left and
 * no connection of the pool is up, the waiting deliveries are deferred
 * with that failure at once (no reconnect loop against a dead host). Failures before a transaction are always
 * temporary for a relay: tern never bounces mail because its own relay
 * refused to talk to it.
 *
 * Relay host names are resolved with libevent's evdns (hosts file, then
 * the system's name servers), cached for ADDR_CACHE_MS.
 */
#include "outbound/connector.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>

#include "config/settings.h"
#include "outbound/client.h"
#include "route/nexthop.h"
#include "server/server.h"
#include "spool/spool.h"
#include "util/clock.h"
#include "util/log.h"

#define IDLE_KEEP_MS 2000
#define ADDR_CACHE_MS 60000
#define MAX_ADDRS 16

struct pool;

struct conn {
	struct pool *pool;
	struct client *client;
	struct delivery *busy;   /* current transaction, or NULL */
	struct client_txn txn;
	struct event *idle_timer;
	size_t addr_index;       /* which of the pool's addresses */
	bool ready;
	struct conn *next;
};

struct pool {
	struct connector *cn;
	const struct cfg_section *remote;
	struct sockaddr_storage addrs[MAX_ADDRS];
	socklen_t addr_lens[MAX_ADDRS];
	size_t n_addrs;
	int64_t resolved_at;
	struct evdns_getaddrinfo_request *resolving;
	struct delivery *wait_head, *wait_tail;
	size_t n_waiting;
	struct conn *conns;
	size_t n_conns, n_connecting;
	struct pool *next;
};

struct connector {
	struct server *srv;
	struct evdns_base *dns;
	struct pool *pools;
	size_t busy;
	bool stopping;
};

static const char *remote_id(const struct pool *p)
{
	return p->remote->id;
}

static void pump(struct pool *p);

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

static void fail_waiting(struct pool *p, const struct delivery_status *why)
{
	struct delivery *d;

	while ((d = wait_pop(p)) != NULL) {
		if (d->relay[0] == '\0')
			snprintf(d->relay, sizeof(d->relay), "%s", remote_id(p));
		fail_delivery(p->cn, d, why);
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
	if (c->client != NULL) {
		if (polite)
			client_quit(c->client);
		else
			client_free(c->client);
	}
	free(c);
}

static void relay_text(struct conn *c, struct delivery *d)
{
	const struct sockaddr_storage *sa = &c->pool->addrs[c->addr_index];
	int port = sa->ss_family == AF_INET6 ? ntohs(((const struct sockaddr_in6 *)sa)->sin6_port)
					     : ntohs(((const struct sockaddr_in *)sa)->sin_port);

	snprintf(d->relay, sizeof(d->relay), "%s[%s]:%d", remote_id(c->pool),
		 client_peer_text(c->client), port);
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
		snprintf(d->relay, sizeof(d->relay), "%s", remote_id(p));
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

	(void)fd;
	(void)what;
	conn_free(c, true);
}

static int64_t stage_timeout(const struct connector *cn, const struct pool *p, enum cfg_key key,
			     const struct rule_ctx *ctx)
{
	int64_t ms = config_eval(cn->srv->cfg, key, ctx)->num;
	const struct cfg_value *cap = cfg_section_get(p->remote, CFG_REMOTE_TIMEOUT);

	if (cap != NULL && !cap->none && cap->num < ms)
		ms = cap->num;
	return ms;
}

static void client_event_cb(void *arg, struct client *cl, enum client_event ev,
			    const struct delivery_status *why);
static void client_txn_cb(void *arg, struct client *cl, struct client_txn *txn);

static const struct client_callbacks conn_callbacks = { client_event_cb, client_txn_cb };

/* Connect c to the pool's address c->addr_index. */
static bool conn_connect(struct conn *c)
{
	struct pool *p = c->pool;
	struct connector *cn = p->cn;
	const struct cfg_value *user = cfg_section_get(p->remote, CFG_REMOTE_AUTH_USERNAME);
	const struct cfg_value *secret = cfg_section_get(p->remote, CFG_REMOTE_AUTH_SECRET);
	const struct cfg_value *helo, *addr;
	struct client_target t;
	struct rule_ctx ctx;
	const struct delivery *first = p->wait_head;
	static const enum cfg_key stage_keys[STAGE_COUNT] = {
		[STAGE_CONNECT] = CFG_QUEUE_OUTBOUND_TIMEOUT_CONNECT,
		[STAGE_GREETING] = CFG_QUEUE_OUTBOUND_TIMEOUT_GREETING,
		[STAGE_TLS] = CFG_QUEUE_OUTBOUND_TIMEOUT_TLS,
		[STAGE_EHLO] = CFG_QUEUE_OUTBOUND_TIMEOUT_EHLO,
		[STAGE_MAIL_FROM] = CFG_QUEUE_OUTBOUND_TIMEOUT_MAIL_FROM,
		[STAGE_RCPT_TO] = CFG_QUEUE_OUTBOUND_TIMEOUT_RCPT_TO,
		[STAGE_DATA] = CFG_QUEUE_OUTBOUND_TIMEOUT_DATA,
	};

	/* Rules are evaluated for the first waiting delivery's sender and
	 * domain; the relay's address stands in for the mx variable. */
	memset(&ctx, 0, sizeof(ctx));
	if (first != NULL) {
		const struct rcpt *r = &first->msg->rcpts[first->rcpt_index[0]];
		route_rule_ctx(&ctx, first->msg, r->domain, r->domain_len);
	}
	addr = cfg_section_get(p->remote, CFG_REMOTE_ADDRESS);
	ctx.var[RULE_VAR_MX].ptr = addr->str;
	ctx.var[RULE_VAR_MX].len = addr->len;

	memset(&t, 0, sizeof(t));
	t.host = remote_id(p);
	memcpy(&t.addr, &p->addrs[c->addr_index], p->addr_lens[c->addr_index]);
	t.addr_len = p->addr_lens[c->addr_index];
	t.lmtp = cfg_section_get(p->remote, CFG_REMOTE_PROTOCOL)->num == CFG_PROTO_LMTP;
	helo = config_eval(cn->srv->cfg, CFG_QUEUE_OUTBOUND_HOSTNAME, &ctx);
	t.helo_name = helo != NULL && !helo->none && helo->len > 0 ? helo->str : cn->srv->hostname;
	for (int s = 0; s < STAGE_COUNT; s++)
		t.timeout_ms[s] = stage_timeout(cn, p, stage_keys[s], &ctx);
	if (user != NULL && !user->none && secret != NULL && !secret->none) {
		t.auth_user = user->str;
		t.auth_secret = secret->str;
	}
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

static void client_event_cb(void *arg, struct client *cl, enum client_event ev,
			    const struct delivery_status *why)
{
	struct conn *c = arg;
	struct pool *p = c->pool;
	struct delivery_status status;

	(void)cl;
	switch (ev) {
	case CLIENT_READY:
		c->ready = true;
		p->n_connecting--;
		conn_take_next(c);
		return;
	case CLIENT_FAILED:
		status = *why;
		if (status.cls == DS_PERM)
			status.cls = DS_TEMP;
		log_warn("remote %s: %s failed: %s", remote_id(p), ds_stage_name(why->stage), why->text);
		client_free(c->client);
		c->client = NULL;
		if (c->addr_index + 1 < p->n_addrs && !p->cn->stopping) {
			c->addr_index++;
			if (conn_connect(c))
				return;
		}
		conn_free(c, false);
		/* The host is failing: unless a connection to it is up, defer what
		 * waits now. Opening a replacement here would retry a dead host in
		 * a tight loop; the queue's retry schedule paces the next try. */
		if (pool_has_ready(p))
			pump(p);
		else
			fail_waiting(p, &status);
		return;
	case CLIENT_CLOSED:
		c->client = NULL;
		client_free(cl);
		conn_free(c, false);
		pump(p);
		return;
	}
}

static void client_txn_cb(void *arg, struct client *cl, struct client_txn *txn)
{
	struct conn *c = arg;
	struct delivery *d = txn->owner_data;

	(void)cl;
	c->busy = NULL;
	relay_text(c, d);
	delivery_finish(c->pool->cn, d);
	if (client_is_idle(c->client) && !c->pool->cn->stopping)
		conn_take_next(c);
}

/* ---- addresses ---- */

static int family_rank(int family, int64_t strategy)
{
	switch (strategy) {
	case CFG_IPV4_ONLY: return family == AF_INET ? 0 : -1;
	case CFG_IPV6_ONLY: return family == AF_INET6 ? 0 : -1;
	case CFG_IPV6_THEN_IPV4: return family == AF_INET6 ? 0 : 1;
	default: return family == AF_INET ? 0 : 1;
	}
}

/* Keep the addresses in resolver order within each family, preferred
 * family first, per queue.outbound.ip-strategy. */
static void add_addrs(struct pool *p, const struct evutil_addrinfo *ai, int port)
{
	struct rule_ctx ctx;
	int64_t strategy;

	memset(&ctx, 0, sizeof(ctx));
	if (p->wait_head != NULL) {
		const struct delivery *d = p->wait_head;
		const struct rcpt *r = &d->msg->rcpts[d->rcpt_index[0]];
		route_rule_ctx(&ctx, d->msg, r->domain, r->domain_len);
	}
	strategy = config_eval(p->cn->srv->cfg, CFG_QUEUE_OUTBOUND_IP_STRATEGY, &ctx)->num;
	p->n_addrs = 0;
	for (int rank = 0; rank < 2; rank++) {
		for (const struct evutil_addrinfo *a = ai; a != NULL && p->n_addrs < MAX_ADDRS; a = a->ai_next) {
			if (family_rank(a->ai_family, strategy) != rank || a->ai_addrlen > sizeof(p->addrs[0]))
				continue;
			memcpy(&p->addrs[p->n_addrs], a->ai_addr, a->ai_addrlen);
			p->addr_lens[p->n_addrs] = (socklen_t)a->ai_addrlen;
			if (a->ai_family == AF_INET)
				((struct sockaddr_in *)&p->addrs[p->n_addrs])->sin_port = htons((uint16_t)port);
			else
				((struct sockaddr_in6 *)&p->addrs[p->n_addrs])->sin6_port = htons((uint16_t)port);
			p->n_addrs++;
		}
	}
	p->resolved_at = clock_wall_ms();
}

static void resolved_cb(int result, struct evutil_addrinfo *res, void *arg)
{
	struct pool *p = arg;
	struct delivery_status why;
	const struct cfg_value *addr = cfg_section_get(p->remote, CFG_REMOTE_ADDRESS);

	p->resolving = NULL;
	if (result == EVUTIL_EAI_CANCEL)
		return;
	if (result == 0)
		add_addrs(p, res, (int)cfg_section_get(p->remote, CFG_REMOTE_PORT)->num);
	if (res != NULL)
		evutil_freeaddrinfo(res);
	if (p->n_addrs == 0) {
		ds_set_local(&why, DS_TEMP, STAGE_CONNECT, "4.4.3", "cannot resolve %s: %s",
			     addr->str, result == 0 ? "no usable address for the ip-strategy"
						    : evutil_gai_strerror(result));
		log_warn("remote %s: %s", remote_id(p), why.text);
		fail_waiting(p, &why);
		return;
	}
	pump(p);
}

/* Start resolving when the cache is empty or stale; true when addresses
 * are ready now. */
static bool pool_addresses(struct pool *p)
{
	const struct cfg_value *addr = cfg_section_get(p->remote, CFG_REMOTE_ADDRESS);
	struct evutil_addrinfo hints;

	if (p->n_addrs > 0 && clock_wall_ms() - p->resolved_at < ADDR_CACHE_MS)
		return true;
	if (p->resolving != NULL)
		return false;
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_protocol = IPPROTO_TCP;
	/* Literal addresses resolve at once, inside this call. */
	hints.ai_flags = EVUTIL_AI_ADDRCONFIG;
	p->resolving = evdns_getaddrinfo(p->cn->dns, addr->str, NULL, &hints, resolved_cb, p);
	return p->n_addrs > 0 && p->resolving == NULL;
}

/* ---- pools ---- */

static void pump(struct pool *p)
{
	struct connector *cn = p->cn;
	size_t limit = (size_t)cfg_section_get(p->remote, CFG_REMOTE_CONCURRENCY)->num;

	if (cn->stopping)
		return;
	for (struct conn *c = p->conns; c != NULL && p->n_waiting > 0; c = c->next)
		if (c->ready && c->busy == NULL && client_is_idle(c->client))
			conn_take_next(c);
	while (p->n_waiting > p->n_connecting && p->n_conns < limit) {
		struct conn *c;

		if (!pool_addresses(p))
			return;
		/* A literal address resolves inside that call, and its callback
		 * pumps too: look again before opening one more. */
		if (p->n_waiting <= p->n_connecting || p->n_conns >= limit)
			break;
		c = calloc(1, sizeof(*c));
		if (c == NULL)
			return;
		c->pool = p;
		c->idle_timer = evtimer_new(cn->srv->base, idle_timeout_cb, c);
		c->next = p->conns;
		p->conns = c;
		p->n_conns++;
		p->n_connecting++;
		if (c->idle_timer == NULL || !conn_connect(c)) {
			struct delivery_status why;

			conn_free(c, false);
			ds_set_local(&why, DS_TEMP, STAGE_CONNECT, "4.3.0",
				     "cannot start a connection to %s: out of resources", remote_id(p));
			if (p->n_conns == 0)
				fail_waiting(p, &why);
			return;
		}
	}
}

static struct pool *pool_get(struct connector *cn, const struct cfg_section *remote)
{
	struct pool *p;

	for (p = cn->pools; p != NULL; p = p->next)
		if (p->remote == remote)
			return p;
	p = calloc(1, sizeof(*p));
	if (p == NULL)
		return NULL;
	p->cn = cn;
	p->remote = remote;
	p->next = cn->pools;
	cn->pools = p;
	return p;
}

void connector_deliver(struct connector *cn, const struct cfg_section *remote, struct delivery *d)
{
	struct pool *p = pool_get(cn, remote);
	struct delivery_status why;

	cn->busy++;
	d->next = NULL;
	snprintf(d->relay, sizeof(d->relay), "%s", remote->id);
	if (p == NULL || cn->stopping) {
		ds_set_local(&why, DS_TEMP, STAGE_CONNECT, "4.3.0", "%s",
			     cn->stopping ? "tern is stopping" : "out of memory");
		fail_delivery(cn, d, &why);
		return;
	}
	if (cfg_section_get(remote, CFG_REMOTE_TLS_IMPLICIT)->num) {
		ds_set_local(&why, DS_TEMP, STAGE_TLS, "4.7.5",
			     "remote %s needs implicit TLS, which this version of tern cannot do yet",
			     remote->id);
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

struct connector *connector_new(struct server *srv)
{
	struct connector *cn = calloc(1, sizeof(*cn));

	if (cn == NULL)
		return NULL;
	cn->srv = srv;
	/* Name servers from resolv.conf and the hosts file; a machine with no
	 * name server still resolves literals and /etc/hosts names. */
	cn->dns = evdns_base_new(srv->base, EVDNS_BASE_INITIALIZE_NAMESERVERS);
	if (cn->dns == NULL) {
		cn->dns = evdns_base_new(srv->base, 0);
		if (cn->dns != NULL)
			evdns_base_load_hosts(cn->dns, NULL);
	}
	if (cn->dns == NULL) {
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
	for (struct pool *p = cn->pools; p != NULL; p = p->next) {
		if (p->resolving != NULL)
			evdns_getaddrinfo_cancel(p->resolving);
		fail_waiting(p, &why);
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

void connector_free(struct connector *cn)
{
	if (cn == NULL)
		return;
	connector_stop(cn);
	while (cn->pools != NULL) {
		struct pool *p = cn->pools;

		cn->pools = p->next;
		free(p);
	}
	evdns_base_free(cn->dns, 0);
	free(cn);
}
