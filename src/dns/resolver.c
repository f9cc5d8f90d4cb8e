/*
 * resolver.c - libunbound on the event loop; see resolver.h.
 *
 * libunbound answers through a pipe (ub_fd) that one persistent read
 * event watches; ub_process runs the callbacks of the answers that have
 * arrived. tern adds what libunbound leaves to its caller: a time limit
 * per try (resolver.timeout), a number of tries (resolver.attempts) and a
 * plain classification of the answer (dns_status).
 *
 * Two libunbound contexts: the plain one answers every ordinary query;
 * the validating one (made only when a trust anchor could be loaded)
 * answers the queries DANE needs, so that a zone whose DNSSEC is broken
 * fails only the lookups that ask for validation (SPEC §4).
 *
 * Invariants: a query is on the resolver's list from resolver_query until
 * its callback returns or it is cancelled; while in_unbound it has an
 * async id that its context knows, and its timer is armed.
 */
#include "dns/resolver.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <unbound.h>

#include "config/settings.h"
#include "util/log.h"

struct dns_query {
	struct resolver *r;
	char *name;
	int rrtype;
	struct ub_ctx *ctx;   /* the plain or the validating context */
	int async_id;
	bool in_unbound;
	unsigned tries_left;
	char fail[120];       /* a try that could not start: why */
	struct event *timer;
	dns_cb cb;
	void *arg;
	struct dns_query *prev, *next;
};

struct resolver {
	struct event_base *base;
	struct ub_ctx *ctx;
	struct event *answers_ev;
	struct ub_ctx *vctx;          /* validating; NULL without a trust anchor */
	struct event *vanswers_ev;
	int64_t timeout_ms;
	unsigned attempts;
	struct dns_query *queries;
};

const char *dns_status_name(enum dns_status s)
{
	switch (s) {
	case DNS_OK: return "ok";
	case DNS_NODATA: return "no records";
	case DNS_NXDOMAIN: return "no such domain";
	case DNS_TEMPFAIL: return "temporary failure";
	}
	return "?";
}

const char *dns_type_name(int rrtype)
{
	switch (rrtype) {
	case DNS_TYPE_A: return "A";
	case DNS_TYPE_MX: return "MX";
	case DNS_TYPE_TXT: return "TXT";
	case DNS_TYPE_AAAA: return "AAAA";
	case DNS_TYPE_TLSA: return "TLSA";
	}
	return "?";
}

static const char *rcode_name(int rcode)
{
	static const char *const names[] = { "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN",
					     "NOTIMP", "REFUSED" };

	return rcode >= 0 && rcode < (int)(sizeof(names) / sizeof(names[0])) ? names[rcode] : "rcode";
}

static void query_unlink(struct dns_query *q)
{
	struct resolver *r = q->r;

	if (q->prev != NULL)
		q->prev->next = q->next;
	else
		r->queries = q->next;
	if (q->next != NULL)
		q->next->prev = q->prev;
}

static void query_free(struct dns_query *q)
{
	event_free(q->timer);
	free(q->name);
	free(q);
}

static void finish(struct dns_query *q, struct dns_answer *ans)
{
	ans->qname = q->name;
	ans->qtype = q->rrtype;
	query_unlink(q);
	evtimer_del(q->timer);
	q->cb(q->arg, ans);
	query_free(q);
}

static void finish_tempfail(struct dns_query *q, const char *why)
{
	struct dns_answer ans;

	memset(&ans, 0, sizeof(ans));
	ans.status = DNS_TEMPFAIL;
	snprintf(ans.why, sizeof(ans.why), "%s", why);
	finish(q, &ans);
}

static void answer_cb(void *arg, int err, struct ub_result *res)
{
	struct dns_query *q = arg;
	struct dns_answer ans;

	q->in_unbound = false;
	memset(&ans, 0, sizeof(ans));
	if (err != 0) {
		ans.status = DNS_TEMPFAIL;
		snprintf(ans.why, sizeof(ans.why), "resolver: %s", ub_strerror(err));
	} else if (res->bogus) {
		ans.status = DNS_TEMPFAIL;
		ans.bogus = true;
		snprintf(ans.why, sizeof(ans.why), "DNSSEC validation failed: %s",
			 res->why_bogus != NULL ? res->why_bogus : "bogus answer");
	} else if (res->rcode == 0 || res->rcode == 3) {
		ans.status = res->nxdomain || res->rcode == 3 ? DNS_NXDOMAIN
			   : res->havedata ? DNS_OK : DNS_NODATA;
		if (ans.status == DNS_NXDOMAIN)
			snprintf(ans.why, sizeof(ans.why), "NXDOMAIN");
		ans.secure = res->secure != 0;
		ans.ttl = res->ttl > 0 ? (uint32_t)res->ttl : 0;
		if (ans.status == DNS_OK) {
			while (res->data[ans.n] != NULL)
				ans.n++;
			ans.rdata = (const uint8_t *const *)res->data;
			ans.rdlen = res->len;
		}
	} else {
		ans.status = DNS_TEMPFAIL;
		snprintf(ans.why, sizeof(ans.why), "the name server answered %s", rcode_name(res->rcode));
	}
	finish(q, &ans);
	ub_resolve_free(res);
}

static void start_try(struct dns_query *q)
{
	struct resolver *r = q->r;
	struct timeval tv = { 0, 0 };
	int rc = ub_resolve_async(q->ctx, q->name, q->rrtype, 1 /* IN */, q, answer_cb, &q->async_id);

	if (rc != 0) {
		/* Reported from the loop, like every answer. */
		snprintf(q->fail, sizeof(q->fail), "resolver: %s", ub_strerror(rc));
	} else {
		q->in_unbound = true;
		tv.tv_sec = r->timeout_ms / 1000;
		tv.tv_usec = (r->timeout_ms % 1000) * 1000;
	}
	evtimer_add(q->timer, &tv);
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct dns_query *q = arg;
	char why[160];

	(void)fd;
	(void)what;
	if (!q->in_unbound) {
		finish_tempfail(q, q->fail);
		return;
	}
	ub_cancel(q->ctx, q->async_id);
	q->in_unbound = false;
	if (--q->tries_left > 0) {
		start_try(q);
		return;
	}
	snprintf(why, sizeof(why), "no answer from the name servers (%u tries of %lld ms)",
		 q->r->attempts, (long long)q->r->timeout_ms);
	finish_tempfail(q, why);
}

static void answers_cb(evutil_socket_t fd, short what, void *arg)
{
	struct resolver *r = arg;

	(void)fd;
	(void)what;
	ub_process(r->ctx);
}

static void validated_answers_cb(evutil_socket_t fd, short what, void *arg)
{
	struct resolver *r = arg;

	(void)fd;
	(void)what;
	ub_process(r->vctx);
}

static struct dns_query *query_start(struct resolver *r, struct ub_ctx *ctx, const char *name,
				     int rrtype, dns_cb cb, void *arg)
{
	struct dns_query *q = calloc(1, sizeof(*q));

	if (q == NULL)
		return NULL;
	q->r = r;
	q->ctx = ctx;
	q->rrtype = rrtype;
	q->cb = cb;
	q->arg = arg;
	q->tries_left = r->attempts;
	q->name = strdup(name);
	q->timer = evtimer_new(r->base, timer_cb, q);
	if (q->name == NULL || q->timer == NULL) {
		if (q->timer != NULL)
			event_free(q->timer);
		free(q->name);
		free(q);
		return NULL;
	}
	q->next = r->queries;
	if (r->queries != NULL)
		r->queries->prev = q;
	r->queries = q;
	start_try(q);
	return q;
}

struct dns_query *resolver_query(struct resolver *r, const char *name, int rrtype, dns_cb cb,
				 void *arg)
{
	return query_start(r, r->ctx, name, rrtype, cb, arg);
}

struct dns_query *resolver_query_validated(struct resolver *r, const char *name, int rrtype,
					   dns_cb cb, void *arg)
{
	return query_start(r, r->vctx != NULL ? r->vctx : r->ctx, name, rrtype, cb, arg);
}

bool resolver_validates(const struct resolver *r)
{
	return r->vctx != NULL;
}

void resolver_cancel(struct dns_query *q)
{
	if (q == NULL)
		return;
	if (q->in_unbound)
		ub_cancel(q->ctx, q->async_id);
	query_unlink(q);
	query_free(q);
}

/* resolver.custom: every server as "ip@port" for libunbound. libunbound
 * speaks one transport to all its forwarders, so one tcp:// entry makes
 * every query go over TCP (docs/configuration.md says so). */
static bool set_custom_servers(struct ub_ctx *ctx, const struct cfg_value *list, char *err,
			       size_t errlen)
{
	bool tcp = false;

	if (list->n_items == 0) {
		snprintf(err, errlen, "resolver.type is \"custom\" but resolver.custom names no server");
		return false;
	}
	for (size_t i = 0; i < list->n_items; i++) {
		const struct cfg_value *v = &list->items[i];
		char ip[IPADDR_STRLEN], fwd[IPADDR_STRLEN + 8];
		int rc;

		snprintf(fwd, sizeof(fwd), "%s@%d", ipaddr_format(&v->addr, ip, sizeof(ip)), (int)v->num);
		if ((rc = ub_ctx_set_fwd(ctx, fwd)) != 0) {
			snprintf(err, errlen, "resolver.custom: cannot use %s: %s", fwd, ub_strerror(rc));
			return false;
		}
		tcp |= v->len >= 6 && strncmp(v->str, "tcp://", 6) == 0;
	}
	if (tcp && ub_ctx_set_option(ctx, "tcp-upstream:", "yes") != 0) {
		snprintf(err, errlen, "resolver.custom: cannot switch to TCP");
		return false;
	}
	return true;
}

/* A context that forwards to the configured name servers and reads the
 * hosts file; NULL with err filled. */
static struct ub_ctx *context_new(const struct config *cfg, char *err, size_t errlen)
{
	struct ub_ctx *ctx = ub_ctx_create();
	int rc;

	if (ctx == NULL) {
		snprintf(err, errlen, "resolver: out of memory");
		return NULL;
	}
	/* Name servers on loopback (a local unbound, the tests' NSD) are
	 * ordinary for a mail server; libunbound refuses them by default. */
	if (ub_ctx_set_option(ctx, "do-not-query-localhost:", "no") != 0) {
		snprintf(err, errlen, "resolver: libunbound refused an option");
		goto fail;
	}
	if (config_get(cfg, CFG_RESOLVER_TYPE)->num == CFG_RESOLVER_TYPE_CUSTOM) {
		if (!set_custom_servers(ctx, config_get(cfg, CFG_RESOLVER_CUSTOM), err, errlen))
			goto fail;
	} else if ((rc = ub_ctx_resolvconf(ctx, NULL)) != 0) {
		snprintf(err, errlen, "resolver: cannot read /etc/resolv.conf: %s",
			 rc == UB_READFILE ? strerror(errno) : ub_strerror(rc));
		goto fail;
	}
	/* Names in the hosts file (a relay called "smarthost") resolve as
	 * they do for every other program; a missing file is no error. */
	(void)ub_ctx_hosts(ctx, NULL);
	if ((rc = ub_ctx_async(ctx, 1)) != 0) {
		snprintf(err, errlen, "resolver: %s", ub_strerror(rc));
		goto fail;
	}
	return ctx;
fail:
	ub_ctx_delete(ctx);
	return NULL;
}

/* The validating context, from resolver.dnssec.trust-anchor. The default
 * anchor (Debian's root key) may be missing: DANE is then unavailable and
 * a warning says so. A file the operator named must load. */
static bool validating_context(struct resolver *r, const struct config *cfg, char *err,
			       size_t errlen)
{
	const struct cfg_value *ta = config_get(cfg, CFG_RESOLVER_DNSSEC_TRUST_ANCHOR);
	bool explicit = ta->pos.line != 0;
	int rc;

	if (access(ta->str, R_OK) != 0) {
		if (explicit) {
			snprintf(err, errlen, "resolver.dnssec.trust-anchor: cannot read %s: %s",
				 ta->str, strerror(errno));
			return false;
		}
		log_warn("resolver: no DNSSEC trust anchor at %s (%s): DANE is not available "
			 "(install dns-root-data or set resolver.dnssec.trust-anchor)",
			 ta->str, strerror(errno));
		return true;
	}
	if ((r->vctx = context_new(cfg, err, errlen)) == NULL)
		return false;
	if ((rc = ub_ctx_add_ta_file(r->vctx, ta->str)) != 0) {
		snprintf(err, errlen, "resolver.dnssec.trust-anchor: %s: %s", ta->str,
			 rc == UB_READFILE ? "cannot be read" : ub_strerror(rc));
		return false;
	}
	r->vanswers_ev = event_new(r->base, ub_fd(r->vctx), EV_READ | EV_PERSIST,
				   validated_answers_cb, r);
	if (r->vanswers_ev == NULL || event_add(r->vanswers_ev, NULL) != 0) {
		snprintf(err, errlen, "resolver: cannot watch libunbound's answers");
		return false;
	}
	return true;
}

struct resolver *resolver_new(struct event_base *base, const struct config *cfg, char *err,
			      size_t errlen)
{
	struct resolver *r = calloc(1, sizeof(*r));

	if (r == NULL) {
		snprintf(err, errlen, "resolver: out of memory");
		return NULL;
	}
	r->base = base;
	r->timeout_ms = config_get(cfg, CFG_RESOLVER_TIMEOUT)->num;
	r->attempts = (unsigned)config_get(cfg, CFG_RESOLVER_ATTEMPTS)->num;
	if ((r->ctx = context_new(cfg, err, errlen)) == NULL)
		goto fail;
	r->answers_ev = event_new(base, ub_fd(r->ctx), EV_READ | EV_PERSIST, answers_cb, r);
	if (r->answers_ev == NULL || event_add(r->answers_ev, NULL) != 0) {
		snprintf(err, errlen, "resolver: cannot watch libunbound's answers");
		goto fail;
	}
	if (!validating_context(r, cfg, err, errlen))
		goto fail;
	return r;
fail:
	resolver_free(r);
	return NULL;
}

void resolver_free(struct resolver *r)
{
	if (r == NULL)
		return;
	while (r->queries != NULL)
		resolver_cancel(r->queries);
	if (r->answers_ev != NULL)
		event_free(r->answers_ev);
	if (r->vanswers_ev != NULL)
		event_free(r->vanswers_ev);
	if (r->ctx != NULL)
		ub_ctx_delete(r->ctx);
	if (r->vctx != NULL)
		ub_ctx_delete(r->vctx);
	free(r);
}
