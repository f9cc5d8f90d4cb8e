/*
 * server.h - the running server: the one event loop and what hangs off it.
 *
 * `tern serve` builds one struct server: the loaded configuration, the
 * spool, the queue, the listeners. Every module reaches the others
 * through it; nothing is global except what log.c keeps.
 */
#ifndef TERN_SERVER_SERVER_H
#define TERN_SERVER_SERVER_H

#include <stdbool.h>

struct event_base;
struct config;
struct spool;
struct queue;
struct inbound;
struct connector;
struct resolver;
struct sts;
struct retired_cfg;

struct server {
	struct event_base *base;
	const struct config *cfg;       /* the running configuration (SIGHUP replaces it) */
	const struct config *boot_cfg;  /* the one tern started with: the listeners use it */
	struct retired_cfg *retired;    /* replaced, freed once unused (reload.c) */
	struct event *retired_timer;
	const char *config_path;
	const char *hostname; /* server.hostname, for banners and Received */
	struct spool *spool;
	struct queue *queue;
	struct inbound *inbound;
	struct resolver *resolver; /* DNS for every outbound name */
	struct sts *sts;           /* MTA-STS policies: lookups and the cache */
	struct connector *connector;
	bool stopping;
};

/* Run `tern serve` until SIGTERM/SIGINT. Returns the process exit code. */
int server_run(const char *config_path);

/* SIGHUP: load the file again; a bad one is refused (reload.c). */
void server_reload(struct server *srv);
/* At exit: free the replaced configurations. */
void server_reload_free(struct server *srv);

#endif
