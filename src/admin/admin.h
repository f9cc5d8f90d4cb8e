/*
 * admin.h - the management API and its command-line client.
 *
 * admin_start serves every [server.listener."<id>"] with protocol "http"
 * on the server's event loop: a JSON API over the queue (list, show,
 * retry, hold, release, cancel) and /metrics in Prometheus text format,
 * every request authenticated with HTTP Basic against
 * management.auth.lookup. `tern queue` (admin_queue_main) is the client
 * of that API; it talks to a running server only, never to the spool.
 * docs/management.md describes both.
 */
#ifndef TERN_ADMIN_ADMIN_H
#define TERN_ADMIN_ADMIN_H

#include <stddef.h>

struct server;
struct admin;

/* Bind the http listeners (none configured is fine: nothing is served).
 * NULL with a message in err when one cannot be bound. */
struct admin *admin_start(struct server *srv, char *err, size_t errlen);
/* Close the listeners and any connection still open. */
void admin_free(struct admin *ad);

/* `tern queue ...`: argv[0] is "queue". Exit code: 0 done, 1 no such
 * message or nothing matched, 2 usage, 3 the server could not be reached,
 * refused the credentials or failed. */
int admin_queue_main(int argc, char **argv, const char *default_config);

#endif
