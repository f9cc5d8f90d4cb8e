/*
 * addr.c - the addresses of one host in the order they are tried
 * (SPEC §3.3, queue.outbound.ip-strategy and limits.multihomed).
 *
 * The -then- strategies look up both families at once and try every
 * address of the preferred family before the other's. (Stalwart asked
 * for the second family only when the first lookup failed, so a host
 * whose IPv4 addresses all refused was never tried over IPv6.)
 */
#include <sys/socket.h>

#include "config/settings.h"
#include "route/plan.h"

bool route_strategy_wants(int64_t strategy, int family)
{
	switch (strategy) {
	case CFG_IPV4_ONLY: return family == AF_INET;
	case CFG_IPV6_ONLY: return family == AF_INET6;
	default: return family == AF_INET || family == AF_INET6;
	}
}

size_t route_order_addrs(const struct ipaddr *v4, size_t n4, const struct ipaddr *v6, size_t n6,
			 int64_t strategy, size_t limit, struct ipaddr *out)
{
	const struct ipaddr *first = v4, *second = v6;
	size_t n_first = n4, n_second = n6, n = 0;

	if (strategy == CFG_IPV6_ONLY || strategy == CFG_IPV6_THEN_IPV4) {
		first = v6;
		n_first = n6;
		second = v4;
		n_second = n4;
	}
	if (strategy == CFG_IPV4_ONLY || strategy == CFG_IPV6_ONLY)
		n_second = 0;
	for (size_t i = 0; i < n_first && n < limit; i++)
		out[n++] = first[i];
	for (size_t i = 0; i < n_second && n < limit; i++)
		out[n++] = second[i];
	return n;
}
