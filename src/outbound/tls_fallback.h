/*
 * tls_fallback.h - hosts whose TLS handshake failed lately, so that
 * opportunistic connections to them go in clear for a while instead of
 * failing the same way again (SPEC §4 "remember that host's broken TLS").
 *
 * An entry is a host name and one of its addresses (the same name on
 * another address may work), noted when a handshake there failed or
 * stalled, and in effect for the hold time given at creation (the
 * connector's: one hour). At most TLS_FALLBACK_MAX entries are kept; past
 * that the oldest go first. Times are the caller's, in milliseconds, so
 * tests need no clock.
 *
 * Not here: deciding that a failure counts, or reconnecting (connector).
 */
#ifndef TERN_OUTBOUND_TLS_FALLBACK_H
#define TERN_OUTBOUND_TLS_FALLBACK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/ipaddr.h"

#define TLS_FALLBACK_MAX 4096

struct tls_fallback;

/* NULL when out of memory. */
struct tls_fallback *tls_fallback_new(int64_t hold_ms);
void tls_fallback_free(struct tls_fallback *f);
/* The handshake with host at addr failed at now_ms. A host already noted
 * keeps its first time. Out of memory forgets, nothing worse. */
void tls_fallback_note(struct tls_fallback *f, const char *host, const struct ipaddr *addr,
		       int64_t now_ms);
/* Is host at addr to be spoken to in clear at now_ms? */
bool tls_fallback_in_effect(struct tls_fallback *f, const char *host, const struct ipaddr *addr,
			    int64_t now_ms);
/* Entries kept (expired ones are dropped as time passes). */
size_t tls_fallback_count(const struct tls_fallback *f);

#endif
