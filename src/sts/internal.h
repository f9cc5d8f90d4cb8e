/*
 * internal.h - what the files of src/sts/ share, and nothing else sees
 * (the unit tests excepted): the HTTPS fetcher (fetch.c) and the cache
 * (cache.c), which sts.c puts together into the lookup of RFC 8461 §5.1.
 */
#ifndef TERN_STS_INTERNAL_H
#define TERN_STS_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sts/sts.h"

/* ---- fetch.c: GET https://mta-sts.<domain>/.well-known/mta-sts.txt ---- */

struct sts_fetcher;
struct sts_fetch;

/* ok: body (len bytes, NUL-terminated) is the policy file as served;
 * else why says what failed. Called once, from the loop. */
typedef void (*sts_fetch_cb)(void *arg, bool ok, const char *body, size_t len, const char *why);

struct sts_fetcher *sts_fetcher_new(struct event_base *base, struct resolver *res, char *err,
				    size_t errlen);
/* Fetches still open are cancelled without their callbacks. */
void sts_fetcher_free(struct sts_fetcher *f);
/* NULL when out of memory. */
struct sts_fetch *sts_fetch_start(struct sts_fetcher *f, const char *domain, int64_t timeout_ms,
				  sts_fetch_cb cb, void *arg);
void sts_fetch_cancel(struct sts_fetch *fe);

/* ---- cache.c ---- */

#define STS_DOMAIN_MAX 254   /* a domain name and its NUL */

struct sts_cache_entry {
	char domain[STS_DOMAIN_MAX];
	char id[STS_ID_MAX + 1];
	struct sts_policy policy;
	int64_t fetched, expires;    /* unix seconds; expires = fetched + max_age */
};

struct sts_cache;

/* The cache, with the files of dir read in (dir NULL: memory only;
 * created when missing unless read_only). Never NULL but when out of
 * memory. */
struct sts_cache *sts_cache_new(const char *dir, bool read_only);
/* Waits for the writes still queued. */
void sts_cache_free(struct sts_cache *c);
const struct sts_cache_entry *sts_cache_get(const struct sts_cache *c, const char *domain);
/* Remember a policy just fetched (body is the file as served), in
 * memory and, unless read-only, on disk (asynchronously). */
void sts_cache_put(struct sts_cache *c, const char *domain, const char *id,
		   const struct sts_policy *p, const char *body, size_t len, int64_t now);
/* Wait until every write queued so far is on disk (tests). */
void sts_cache_flush(struct sts_cache *c);

/* A cache file's text (see cache.c for the format): false with why when
 * it does not parse. Exposed for the unit tests and the fuzzer. */
bool sts_cache_file_parse(const char *text, size_t len, struct sts_cache_entry *out, char *why,
			  size_t whylen);

#endif
