/*
 * internal.h - shared by the files of src/admin only: http_api.c (the
 * HTTP server, authentication, the queue endpoints) and metrics.c (the
 * /metrics page).
 */
#ifndef TERN_ADMIN_INTERNAL_H
#define TERN_ADMIN_INTERNAL_H

#include <stdbool.h>

struct evbuffer;
struct server;

/* The Prometheus text exposition (format 0.0.4) of the server's queue,
 * connections and spool, appended to out. False when out of memory. */
bool admin_metrics_render(struct server *srv, struct evbuffer *out);

#endif
