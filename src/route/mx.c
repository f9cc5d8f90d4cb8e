/*
 * mx.c - the order MX hosts are tried in (SPEC §3.2, RFC 5321 §5.1).
 *
 * Lower preference first; hosts of equal preference are shuffled for
 * every attempt so that load spreads over them and one broken host does
 * not catch every first try; then at most queue.outbound.limits.mx are
 * kept. A null MX (RFC 7505) is the only record of its domain by
 * definition; a "." exchange published beside real hosts is a mistake of
 * the domain's, and tern tries the real hosts rather than bounce.
 */
#include <stdlib.h>

#include "route/plan.h"
#include "util/random.h"

static int by_preference(const void *a, const void *b)
{
	const struct route_mx *x = a, *y = b;

	return (int)x->preference - (int)y->preference;
}

size_t route_order_mx(struct route_mx *mx, size_t n, size_t limit)
{
	size_t kept = 0;

	if (n == 1 && mx[0].name[0] == '\0')
		return (size_t)-1;
	for (size_t i = 0; i < n; i++)
		if (mx[i].name[0] != '\0')
			mx[kept++] = mx[i];
	qsort(mx, kept, sizeof(*mx), by_preference);
	/* Fisher-Yates within each run of equal preference. */
	for (size_t start = 0; start < kept;) {
		size_t end = start + 1;

		while (end < kept && mx[end].preference == mx[start].preference)
			end++;
		for (size_t i = end - 1; i > start; i--) {
			size_t j = start + random_below(i - start + 1);
			struct route_mx t = mx[i];

			mx[i] = mx[j];
			mx[j] = t;
		}
		start = end;
	}
	return kept < limit ? kept : limit;
}
