/*
 * session.h - what the listeners (listener.c) and the sessions they
 * accept (session.c) share; private to src/inbound.
 *
 * struct inbound owns the listeners and every live session (a doubly
 * linked list, so a session leaves it in O(1)). A session owns its
 * socket and, until queue_submit, the envelope it is building.
 */
#ifndef TERN_INBOUND_SESSION_H
#define TERN_INBOUND_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "inbound/inbound.h"
#include "queue/queue.h"

struct event;
struct sockaddr;
struct tls_server;
struct inbound_listener;
struct session;

/* What a session needs to know about the listener that accepted it. */
struct listener_info {
	const char *id;       /* [server.listener."<id>"]: the listener rule variable */
	bool lmtp;            /* LHLO, and one reply per recipient after the data */
	const char *greeting; /* banner text after the host name */
	struct tls_server *tls; /* its certificate: STARTTLS offered; NULL: none */
	bool implicit_tls;    /* the handshake before the banner (tls is set) */
};

struct inbound {
	struct server *srv;
	struct inbound_listener *listeners;
	size_t n_listeners;
	struct event *accept_retry;   /* re-enables accepting after EMFILE and the like */
	struct tls_server **certs;    /* one per [certificate] a listener uses */
	size_t n_certs;
	struct session *sessions;     /* every live session */
	size_t n_sessions;
	size_t max_sessions;          /* server.max-connections */
	uint64_t next_session_id;
	bool stopping;
	/* queue_submit and queue_forget_submitter; a harness that runs
	 * sessions without a queue (the fuzzer) puts its own here. */
	int (*submit)(struct queue *q, struct message *msg, struct message_body *body,
		      queue_accept_cb cb, void *arg);
	void (*forget)(struct queue *q, void *arg);
};

/*
 * Run a session on a connected, nonblocking socket, which the session owns
 * from now on (it is closed on failure too). peer and local are its
 * addresses (NULL or a non-IP family when there are none: a test's socket
 * pair). The banner is sent at once. -1 when out of memory.
 */
int session_start(struct inbound *in, const struct listener_info *li, int fd,
		  const struct sockaddr *peer, const struct sockaddr *local);
/* inbound_stop: a session between transactions says 421 and closes; one
 * in a transaction closes the same way once it ends. */
void session_stop(struct session *s);
/* The session after s in in->sessions (NULL at the end). */
struct session *session_next(const struct session *s);
/* Close at once; a pending queue_submit callback is cancelled. */
void session_free(struct session *s);

#endif
