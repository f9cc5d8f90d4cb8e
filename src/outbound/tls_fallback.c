/*
 * tls_fallback.c - see tls_fallback.h.
 *
 * Every entry lives for the same hold time, so noting order is expiry
 * order: entries sit in a FIFO (oldest first), and expired ones are cut
 * from its head whenever the table is used. A hash table of chains finds
 * an entry by host and address.
 *
 * Invariants: every entry is in exactly one chain and in the FIFO; the
 * FIFO holds at most TLS_FALLBACK_MAX entries, none expired after prune().
 */
#include "outbound/tls_fallback.h"

#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "util/text.h"

#define BUCKETS 256 /* a power of two */

struct entry {
	struct entry *chain;       /* next in the bucket */
	struct entry *younger;     /* next in the FIFO */
	uint64_t hash;
	int64_t until_ms;
	struct ipaddr addr;
	char host[];
};

struct tls_fallback {
	int64_t hold_ms;
	struct entry *buckets[BUCKETS];
	struct entry *oldest, *youngest;
	size_t count;
};

/* The bytes of addr that count: an IPv4 address uses the first 4. */
static size_t addr_len(const struct ipaddr *addr)
{
	return addr->family == AF_INET ? 4 : sizeof(addr->bytes);
}

static uint64_t key_hash(const char *host, const struct ipaddr *addr)
{
	return text_hash(host, strlen(host)) ^
	       (text_hash((const char *)addr->bytes, addr_len(addr)) * 31u);
}

static bool key_is(const struct entry *e, uint64_t hash, const char *host,
		   const struct ipaddr *addr)
{
	return e->hash == hash && e->addr.family == addr->family &&
	       memcmp(e->addr.bytes, addr->bytes, addr_len(addr)) == 0 &&
	       strcmp(e->host, host) == 0;
}

/* Remove the oldest entry. */
static void drop_oldest(struct tls_fallback *f)
{
	struct entry *e = f->oldest;

	for (struct entry **pp = &f->buckets[e->hash & (BUCKETS - 1)]; *pp != NULL;
	     pp = &(*pp)->chain) {
		if (*pp == e) {
			*pp = e->chain;
			break;
		}
	}
	f->oldest = e->younger;
	if (f->oldest == NULL)
		f->youngest = NULL;
	f->count--;
	free(e);
}

static void prune(struct tls_fallback *f, int64_t now_ms)
{
	while (f->oldest != NULL && f->oldest->until_ms <= now_ms)
		drop_oldest(f);
}

static struct entry *find(const struct tls_fallback *f, const char *host,
			  const struct ipaddr *addr)
{
	uint64_t h = key_hash(host, addr);

	for (struct entry *e = f->buckets[h & (BUCKETS - 1)]; e != NULL; e = e->chain)
		if (key_is(e, h, host, addr))
			return e;
	return NULL;
}

struct tls_fallback *tls_fallback_new(int64_t hold_ms)
{
	struct tls_fallback *f = calloc(1, sizeof(*f));

	if (f != NULL)
		f->hold_ms = hold_ms;
	return f;
}

void tls_fallback_free(struct tls_fallback *f)
{
	if (f == NULL)
		return;
	while (f->oldest != NULL)
		drop_oldest(f);
	free(f);
}

void tls_fallback_note(struct tls_fallback *f, const char *host, const struct ipaddr *addr,
		       int64_t now_ms)
{
	size_t len = strlen(host);
	struct entry *e;

	prune(f, now_ms);
	if (find(f, host, addr) != NULL)
		return;
	if (f->count >= TLS_FALLBACK_MAX)
		drop_oldest(f);
	e = calloc(1, sizeof(*e) + len + 1);
	if (e == NULL)
		return;
	memcpy(e->host, host, len + 1);
	e->addr = *addr;
	e->hash = key_hash(host, addr);
	e->until_ms = now_ms + f->hold_ms;
	e->chain = f->buckets[e->hash & (BUCKETS - 1)];
	f->buckets[e->hash & (BUCKETS - 1)] = e;
	if (f->youngest != NULL)
		f->youngest->younger = e;
	else
		f->oldest = e;
	f->youngest = e;
	f->count++;
}

bool tls_fallback_in_effect(struct tls_fallback *f, const char *host, const struct ipaddr *addr,
			    int64_t now_ms)
{
	prune(f, now_ms);
	return find(f, host, addr) != NULL;
}

size_t tls_fallback_count(const struct tls_fallback *f)
{
	return f->count;
}
