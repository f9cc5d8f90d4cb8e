/*
 * inbound.h - SMTP (and LMTP) listeners and the sessions they accept.
 *
 * inbound_start opens every [server.listener."<id>"] of protocol smtp or
 * lmtp and accepts clients on the event loop. Each session is a server
 * state machine (session.c) that hands every accepted message to
 * queue_submit and answers 250 only once it is durable.
 */
#ifndef TERN_INBOUND_INBOUND_H
#define TERN_INBOUND_INBOUND_H

#include <stdbool.h>
#include <stddef.h>

struct config;
struct server;
struct inbound;

/* NULL with a message in err when a listener cannot be opened or its
 * certificate cannot be loaded. */
struct inbound *inbound_start(struct server *srv, char *err, size_t errlen);
/* Stop accepting; close sessions (between transactions, or at once). */
void inbound_stop(struct inbound *in);
void inbound_free(struct inbound *in);

/* `tern config check`: what inbound_start would refuse without opening
 * sockets: every [certificate] loads, and every implicit TLS listener has
 * one. false with the first problem in err. */
bool inbound_check(const struct config *cfg, char *err, size_t errlen);

#endif
