/*
 * connector.h - connections to next hops: pools, concurrency, reuse.
 *
 * The queue hands the connector one delivery at a time: a message, the
 * recipients of it that go to one next hop, and a callback for their
 * results. The connector keeps a pool per destination (a relay,
 * [remote."<id>"], or a recipient domain delivered to by MX): a bounded
 * number of connections, deliveries waiting in FIFO order for one, and
 * every connection that finishes a transaction takes the next waiting
 * delivery for its destination (connection reuse) or, with none waiting,
 * stays idle for a short while before QUIT. Which hosts and addresses a
 * connection tries, and from which source address, is route/plan.h's.
 */
#ifndef TERN_OUTBOUND_CONNECTOR_H
#define TERN_OUTBOUND_CONNECTOR_H

#include <stdbool.h>
#include <stddef.h>

#include "outbound/status.h"
#include "queue/message.h"
#include "tls/tls.h"
#include "util/ipaddr.h"

struct server;
struct connector;
struct config;
struct cfg_section;

struct delivery;

/* Results: status[i] belongs to msg->rcpts[rcpt_index[i]]. relay is the
 * host and address for the log ("lmtp[127.0.0.1]:24"). */
typedef void (*delivery_done_cb)(void *arg, struct delivery *d);

struct delivery {
	struct message *msg;
	struct message_body *body;     /* a reference the delivery holds, or NULL:
					  the connector reads it from the spool
					  when a connection takes the delivery */
	size_t body_counted;           /* bytes of it the queue's budget counts */
	size_t *rcpt_index;
	size_t n_rcpts;
	struct delivery_status *status; /* n_rcpts entries */
	char relay[160];
	/* TLS on the session the results came from, as client_tls_summary
	 * gives it ("TLSv1.3:... verified=yes", "none(not offered)"); "" when
	 * no session got that far. */
	char tls[TLS_SUMMARY_MAX];
	/* The connection the results came from (unset when none was made):
	 * for rules that the queue evaluates with sets M and H. */
	char mx[256];
	struct ipaddr remote_ip, local_ip;
	delivery_done_cb done;
	void *arg;
	struct delivery *next;          /* connector's wait list */
};

struct connector *connector_new(struct server *srv);
/* Deliver d through the relay remote or, when remote is NULL, to the MX
 * hosts of its recipients' domain (every recipient of d has the same
 * domain then). d->done is called exactly once (possibly before this
 * returns, on an immediate local failure). */
void connector_deliver(struct connector *cn, const struct cfg_section *remote, struct delivery *d);
/* Deliveries waiting or in flight. */
size_t connector_busy(const struct connector *cn);
/* A relay pool still holds a [remote] section of cfg (SIGHUP: a replaced
 * configuration is freed only when this is false). */
bool connector_uses_config(const struct connector *cn, const struct config *cfg);
/* Every destination with a connection or a waiting delivery: kind is
 * "remote" (a relay id) or "domain" (delivery by MX). */
void connector_visit(const struct connector *cn,
		     void (*cb)(void *arg, const char *kind, const char *name, size_t connections,
				size_t waiting),
		     void *arg);
/* Close idle connections; fail waiting deliveries as temporary. */
void connector_stop(struct connector *cn);
void connector_free(struct connector *cn);

#endif
