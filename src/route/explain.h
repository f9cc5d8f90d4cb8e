/*
 * explain.h - `tern route`: what delivery would do for each recipient,
 * without sending anything. It runs the same code as delivery (next-hop
 * rule, DNS through the configured resolver, MX order, ip-strategy,
 * limits, source addresses, EHLO name), so an operator can check a
 * configuration and tests can check routing.
 */
#ifndef TERN_ROUTE_EXPLAIN_H
#define TERN_ROUTE_EXPLAIN_H

#include <stdio.h>

struct config;

/* Exit code: 0 when every recipient has an address to try, 1 when one
 * has none (it would bounce or wait), 2 when the resolver cannot start. */
int route_explain(const struct config *cfg, const char *sender, int n_rcpts, char **rcpts,
		  FILE *out);

#endif
