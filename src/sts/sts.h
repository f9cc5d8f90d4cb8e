/*
 * sts.h - MTA-STS (RFC 8461): the policy a recipient domain publishes for
 * the TLS of mail sent to it, found, fetched, cached and matched.
 *
 * Discovery, per RFC 8461 §3 and §5.1, for every plan of delivery by MX:
 * the TXT record _mta-sts.<domain> is asked for through tern's resolver
 * (libunbound caches it for its TTL). Its id equal to the cached policy's,
 * and that policy unexpired: the cached policy. Otherwise the policy is
 * fetched: mta-sts.<domain> resolved through tern's resolver, then
 * https://mta-sts.<domain>/.well-known/mta-sts.txt with libcurl, on the
 * event loop, the certificate verified for that name, no redirects,
 * status 200, Content-Type text/plain, at most STS_BODY_MAX bytes, all
 * within the caller's timeout. A fetch that fails, or no (or no valid)
 * TXT record, leaves an unexpired cached policy in force; with none there
 * is no policy. Lookups of one domain in flight at the same time share
 * one TXT query and one fetch.
 *
 * The cache is kept in memory and, when a directory is given, one file
 * per domain in it (written atomically, off the loop); it is read back
 * at start, so a policy outlives a restart. A corrupt file is ignored
 * with a warning.
 *
 * Not here: what a policy does to a connection (route/plan.c carries the
 * result, outbound/connector.c applies it), relays (never subject to
 * MTA-STS: a relay is not the recipient domain's MX).
 */
#ifndef TERN_STS_STS_H
#define TERN_STS_STS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct resolver;
struct sts;
struct sts_lookup;

/* Limits, RFC 8461 §3.1, §3.2 and tern's choices (docs/mta-sts.md). */
#define STS_ID_MAX       32           /* id=: 1..32 letters and digits */
#define STS_MAX_AGE_MAX  31557600     /* max_age: seconds, about a year */
#define STS_BODY_MAX     65536        /* the policy file fetched */
#define STS_MX_MAX       32           /* mx: patterns kept; more = invalid */
#define STS_MX_LEN       254          /* one pattern, NUL included */
#define STS_WHY_MAX      1024         /* a reason, for logs and delivery statuses */

enum sts_mode { STS_MODE_NONE, STS_MODE_TESTING, STS_MODE_ENFORCE };

struct sts_policy {
	enum sts_mode mode;
	int64_t max_age;                   /* seconds */
	size_t n_mx;
	char mx[STS_MX_MAX][STS_MX_LEN];   /* "mx.example.com", "*.example.com" (lower case) */
};

/* Where a policy in a result came from. */
enum sts_source {
	STS_SOURCE_FETCHED,  /* fetched for this lookup */
	STS_SOURCE_CACHED,   /* from the cache (memory, or the disk at start) */
};

/* What a lookup found. */
struct sts_result {
	bool found;                  /* a policy (of any mode, none included) */
	struct sts_policy policy;    /* when found */
	char id[STS_ID_MAX + 1];     /* when found: the id it was fetched for */
	enum sts_source source;
	int64_t fetched, expires;    /* unix seconds */
	/* No policy: why ("no TXT record _mta-sts.example.org"); a cached
	 * policy used after a failure: what failed. "" otherwise. */
	char why[STS_WHY_MAX];
};

/* Called once per lookup, from the loop, never inside sts_lookup_start;
 * res is valid during the call only. */
typedef void (*sts_cb)(void *arg, const struct sts_result *res);

/*
 * MTA-STS for the process: lookups through res on base, the cache in
 * cache_dir (created if missing; NULL: memory only). read_only: the disk
 * cache is read, never written (`tern route`). NULL with err filled when
 * libcurl cannot start.
 */
struct sts *sts_new(struct event_base *base, struct resolver *res, const char *cache_dir,
		    bool read_only, char *err, size_t errlen);
/* Lookups still open are cancelled without their callbacks; pending
 * cache writes are finished first. */
void sts_free(struct sts *s);

/* The policy of domain (lower case), the fetch bounded by timeout_ms.
 * NULL when out of memory. */
struct sts_lookup *sts_lookup_start(struct sts *s, const char *domain, int64_t timeout_ms,
				    sts_cb cb, void *arg);
/* The callback will not be called. NULL is ignored. */
void sts_lookup_cancel(struct sts_lookup *l);

/* ---- the parsers and the matcher, pure functions (unit tests, fuzzing) ---- */

/* The TXT records of _mta-sts.<domain>, in wire form (each rdata a run of
 * <length><bytes> character-strings, joined). */
enum sts_txt_status {
	STS_TXT_OK,       /* exactly one STSv1 record, valid: id filled */
	STS_TXT_NONE,     /* no record starts with v=STSv1 */
	STS_TXT_INVALID,  /* several STSv1 records, or one that does not parse */
};
enum sts_txt_status sts_txt_parse(const uint8_t *const *rdata, const int *rdlen, size_t n,
				  char id[STS_ID_MAX + 1], char *why, size_t whylen);
/* One TXT record's text (the strings joined), as sts_txt_parse judges an
 * STSv1 record: true with id filled when valid. */
bool sts_txt_record_parse(const char *text, size_t len, char id[STS_ID_MAX + 1], char *why,
			  size_t whylen);

/* The policy file (RFC 8461 §3.2): false with why filled when invalid. */
bool sts_policy_parse(const char *text, size_t len, struct sts_policy *out, char *why,
		      size_t whylen);

/* Does the MX host name match one of the policy's patterns (§4.1)? Case
 * and a trailing dot do not matter; "*." stands for one whole label. */
bool sts_mx_match(const struct sts_policy *p, const char *host);

const char *sts_mode_name(enum sts_mode m);   /* "enforce", "testing", "none" */

#endif
