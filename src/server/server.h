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

struct server {
	struct event_base *base;
	const struct config *cfg;
	const char *config_path;
	const char *hostname; /* server.hostname, for banners and Received */
	struct spool *spool;
	struct queue *queue;
	struct inbound *inbound;
	struct resolver *resolver; /* DNS for every outbound name */
	struct connector *connector;
	bool stopping;
};

/* Run `tern serve` until SIGTERM/SIGINT. Returns the process exit code. */
int server_run(const char *config_path);

#endif
