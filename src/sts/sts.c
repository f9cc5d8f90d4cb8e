/*
 * sts.c - the MTA-STS lookup of one domain (RFC 8461 §5.1): TXT record,
 * cache, fetch; see sts.h.
 *
 * One `struct domain_lookup` per domain in flight, with the callers
 * waiting for it (struct sts_lookup): a second caller for the same domain
 * joins the first's wait instead of asking again. A lookup is in one of
 * three states: waiting for the TXT answer (txt != NULL), for the fetch
 * (fetch != NULL), or finishing (neither: its waiters are being called,
 * one by one, each unlinked before its call so that any of them may
 * cancel others). A lookup whose waiters all cancelled runs on: its
 * answer fills the cache for the next one.
 */
#include "sts/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dns/resolver.h"
#include "util/clock.h"
#include "util/log.h"

struct domain_lookup;

struct sts_lookup {
	struct domain_lookup *dl;
	struct sts_lookup *next;
	sts_cb cb;
	void *arg;
};

struct domain_lookup {
	struct sts *s;
	struct domain_lookup *next;      /* the sts's list of lookups in flight */
	char domain[STS_DOMAIN_MAX];
	char id[STS_ID_MAX + 1];         /* from the TXT record, when fetching */
	int64_t timeout_ms;
	struct dns_query *txt;
	struct sts_fetch *fetch;
	struct sts_lookup *waiters;
};

struct sts {
	struct resolver *res;
	struct sts_fetcher *fetcher;
	struct sts_cache *cache;
	struct domain_lookup *active;
};

static int64_t now_s(void)
{
	return clock_wall_ms() / 1000;
}

static void unlink_lookup(struct domain_lookup *dl)
{
	for (struct domain_lookup **pp = &dl->s->active; *pp != NULL; pp = &(*pp)->next) {
		if (*pp == dl) {
			*pp = dl->next;
			return;
		}
	}
}

/* Tell every waiter, then free the lookup. */
static void finish(struct domain_lookup *dl, const struct sts_result *res)
{
	struct sts_lookup *w;

	unlink_lookup(dl);
	while ((w = dl->waiters) != NULL) {
		dl->waiters = w->next;
		w->dl = NULL;
		w->cb(w->arg, res);
		free(w);
	}
	free(dl);
}

static void finish_cached(struct domain_lookup *dl, const struct sts_cache_entry *e,
			  const char *why)
{
	struct sts_result *res = calloc(1, sizeof(*res));

	if (res == NULL) {
		struct sts_result none = { .found = false };

		snprintf(none.why, sizeof(none.why), "out of memory");
		finish(dl, &none);
		return;
	}
	res->found = true;
	res->policy = e->policy;
	snprintf(res->id, sizeof(res->id), "%s", e->id);
	res->source = STS_SOURCE_CACHED;
	res->fetched = e->fetched;
	res->expires = e->expires;
	snprintf(res->why, sizeof(res->why), "%s", why);
	finish(dl, res);
	free(res);
}

static void finish_none(struct domain_lookup *dl, const char *why)
{
	struct sts_result res;

	memset(&res, 0, sizeof(res));
	snprintf(res.why, sizeof(res.why), "%s", why);
	finish(dl, &res);
}

/* No usable answer (why): an unexpired cached policy stays in force. */
static void fall_back(struct domain_lookup *dl, const char *why, bool warn)
{
	const struct sts_cache_entry *e = sts_cache_get(dl->s->cache, dl->domain);

	if (e != NULL && e->expires > now_s()) {
		if (warn)
			log_warn("MTA-STS %s: %s; the cached policy (id %s, mode %s) stays in force",
				 dl->domain, why, e->id, sts_mode_name(e->policy.mode));
		finish_cached(dl, e, why);
		return;
	}
	if (warn)
		log_warn("MTA-STS %s: %s; no policy applies", dl->domain, why);
	finish_none(dl, why);
}

static void fetch_cb(void *arg, bool ok, const char *body, size_t len, const char *why)
{
	struct domain_lookup *dl = arg;
	struct sts_result *res;
	char text[200];

	dl->fetch = NULL;
	if (!ok) {
		fall_back(dl, why, true);
		return;
	}
	res = calloc(1, sizeof(*res));
	if (res == NULL) {
		fall_back(dl, "out of memory", true);
		return;
	}
	if (!sts_policy_parse(body, len, &res->policy, text, sizeof(text))) {
		char msg[STS_WHY_MAX];

		snprintf(msg, sizeof(msg), "the policy at https://mta-sts.%s/.well-known/mta-sts.txt is "
			 "invalid: %s", dl->domain, text);
		free(res);
		fall_back(dl, msg, true);
		return;
	}
	res->found = true;
	res->source = STS_SOURCE_FETCHED;
	snprintf(res->id, sizeof(res->id), "%s", dl->id);
	res->fetched = now_s();
	res->expires = res->fetched + res->policy.max_age;
	sts_cache_put(dl->s->cache, dl->domain, dl->id, &res->policy, body, len, res->fetched);
	log_info("MTA-STS %s: policy id %s fetched: mode %s, %zu mx pattern%s, max_age %lld",
		 dl->domain, dl->id, sts_mode_name(res->policy.mode), res->policy.n_mx,
		 res->policy.n_mx == 1 ? "" : "s", (long long)res->policy.max_age);
	finish(dl, res);
	free(res);
}

static void txt_cb(void *arg, const struct dns_answer *ans)
{
	struct domain_lookup *dl = arg;
	const struct sts_cache_entry *e;
	char why[STS_WHY_MAX], parse_why[200];

	dl->txt = NULL;
	switch (ans->status) {
	case DNS_NXDOMAIN:
	case DNS_NODATA:
		snprintf(why, sizeof(why), "no TXT record _mta-sts.%s", dl->domain);
		fall_back(dl, why, false);
		return;
	case DNS_TEMPFAIL:
		snprintf(why, sizeof(why), "TXT lookup for _mta-sts.%s failed: %s", dl->domain, ans->why);
		fall_back(dl, why, true);
		return;
	case DNS_OK:
		break;
	}
	switch (sts_txt_parse(ans->rdata, ans->rdlen, ans->n, dl->id, parse_why, sizeof(parse_why))) {
	case STS_TXT_NONE:
		snprintf(why, sizeof(why), "no STSv1 TXT record at _mta-sts.%s", dl->domain);
		fall_back(dl, why, false);
		return;
	case STS_TXT_INVALID:
		snprintf(why, sizeof(why), "the TXT record _mta-sts.%s is not usable: %s", dl->domain,
			 parse_why);
		fall_back(dl, why, true);
		return;
	case STS_TXT_OK:
		break;
	}
	e = sts_cache_get(dl->s->cache, dl->domain);
	if (e != NULL && strcmp(e->id, dl->id) == 0 && e->expires > now_s()) {
		finish_cached(dl, e, "");
		return;
	}
	dl->fetch = sts_fetch_start(dl->s->fetcher, dl->domain, dl->timeout_ms, fetch_cb, dl);
	if (dl->fetch == NULL)
		fall_back(dl, "out of memory", true);
}

struct sts_lookup *sts_lookup_start(struct sts *s, const char *domain, int64_t timeout_ms,
				    sts_cb cb, void *arg)
{
	struct sts_lookup *w = calloc(1, sizeof(*w));
	struct domain_lookup *dl;
	char qname[STS_DOMAIN_MAX + 16];

	if (w == NULL)
		return NULL;
	w->cb = cb;
	w->arg = arg;
	for (dl = s->active; dl != NULL; dl = dl->next)
		if (strcmp(dl->domain, domain) == 0)
			break;
	if (dl == NULL) {
		if (strlen(domain) >= sizeof(dl->domain) || (dl = calloc(1, sizeof(*dl))) == NULL) {
			free(w);
			return NULL;
		}
		dl->s = s;
		snprintf(dl->domain, sizeof(dl->domain), "%s", domain);
		dl->timeout_ms = timeout_ms;
		snprintf(qname, sizeof(qname), "_mta-sts.%s", domain);
		dl->txt = resolver_query(s->res, qname, DNS_TYPE_TXT, txt_cb, dl);
		if (dl->txt == NULL) {
			free(dl);
			free(w);
			return NULL;
		}
		dl->next = s->active;
		s->active = dl;
	}
	w->dl = dl;
	w->next = dl->waiters;
	dl->waiters = w;
	return w;
}

void sts_lookup_cancel(struct sts_lookup *w)
{
	if (w == NULL)
		return;
	if (w->dl != NULL) {
		for (struct sts_lookup **pp = &w->dl->waiters; *pp != NULL; pp = &(*pp)->next) {
			if (*pp == w) {
				*pp = w->next;
				break;
			}
		}
	}
	free(w);
}

struct sts *sts_new(struct event_base *base, struct resolver *res, const char *cache_dir,
		    bool read_only, char *err, size_t errlen)
{
	struct sts *s = calloc(1, sizeof(*s));

	if (s == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	s->res = res;
	s->fetcher = sts_fetcher_new(base, res, err, errlen);
	s->cache = s->fetcher != NULL ? sts_cache_new(cache_dir, read_only) : NULL;
	if (s->cache == NULL) {
		if (s->fetcher != NULL)
			snprintf(err, errlen, "out of memory");
		sts_free(s);
		return NULL;
	}
	return s;
}

void sts_free(struct sts *s)
{
	if (s == NULL)
		return;
	while (s->active != NULL) {
		struct domain_lookup *dl = s->active;

		s->active = dl->next;
		resolver_cancel(dl->txt);
		sts_fetch_cancel(dl->fetch);
		while (dl->waiters != NULL) {
			struct sts_lookup *w = dl->waiters;

			dl->waiters = w->next;
			free(w);
		}
		free(dl);
	}
	sts_fetcher_free(s->fetcher);
	sts_cache_free(s->cache);
	free(s);
}
