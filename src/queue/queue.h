/*
 * queue.h - the queue: every accepted message until each of its
 * recipients is delivered or has failed.
 *
 * queue_submit stores a new message in the spool and, once it is durable,
 * tells the submitter (who then answers 250) and schedules its first
 * delivery attempt at once. The queue keeps due times in a heap, so
 * timing is exact to the millisecond whatever its size, hands due
 * recipients to the router and connector, and applies each outcome:
 * delivered, retried per queue.schedule.retry, or failed.
 */
#ifndef TERN_QUEUE_QUEUE_H
#define TERN_QUEUE_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "outbound/status.h"
#include "queue/message.h"

struct server;
struct queue;

/* err 0: durable and queued as id. Otherwise an errno (ENOSPC: disk full). */
typedef void (*queue_accept_cb)(void *arg, int err, uint64_t id);

struct queue *queue_new(struct server *srv);
/* Hand over recovered messages from the spool (at start-up). */
void queue_adopt(struct queue *q, struct message *msg);
/* Takes ownership of msg and of the caller's reference to body whatever
 * the outcome; the body is copied to the spool, and kept in memory for the
 * first attempt. msg->size is set from the body. Returns 0, or an errno
 * when it could not even be written (cb is then not called). */
int queue_submit(struct queue *q, struct message *msg, struct message_body *body,
		 queue_accept_cb cb, void *arg);
/* A submitter that goes away before its callback (client disconnected)
 * cancels it; the message stays queued. */
void queue_forget_submitter(struct queue *q, void *arg);
/* Start delivering (after recovery and listeners are up). */
void queue_start(struct queue *q);
/* Stop starting deliveries; in-flight ones finish or are returned. */
void queue_stop(struct queue *q);
void queue_free(struct queue *q);

/* ---- what the management API (src/admin/) reads and does ---- */

/* What the queue knows of one recipient beyond its envelope. */
struct queue_rcpt_info {
	bool held;
	int64_t expire_ms;                   /* when it fails if still undelivered */
	/* The last outcome, in memory only (a restart forgets it); NULL
	 * before the first attempt. */
	const struct delivery_status *last;
	const char *last_relay;              /* "mx1.example.org[192.0.2.1]:25", "none" */
	const char *last_tls;                /* as tls= in the log line; "" when none */
	int64_t last_ms;
};
void queue_rcpt_info(struct queue *q, const struct message *msg, size_t i,
		     struct queue_rcpt_info *out);

/* Every message the queue holds (durable, with a recipient still pending
 * or a notice still owed), in no particular order, until cb returns false. */
void queue_visit(struct queue *q, bool (*cb)(void *arg, const struct message *msg), void *arg);
const struct message *queue_find(struct queue *q, uint64_t id);
/* A delivery of it is out at the connector right now. */
bool queue_in_flight(const struct message *msg);

/*
 * Actions on message id's pending recipients: all of them when rcpt is
 * NULL, else those whose address equals rcpt (ASCII case-insensitive).
 * Each returns how many recipients it changed (0: none matched), or
 * -ENOENT (no such message) or -EBUSY (a delivery of it is in flight: the
 * caller may try again in a moment). Every change is recorded in the
 * spool before the function returns (durable at the next group commit).
 *   retry_now: due now; held recipients are released first. The expiry
 *              stays what it was (arrival + queue.schedule.expire).
 *   hold:      not attempted (and no delay notices) until released; expiry
 *              still applies when released.
 *   release:   held recipients become due now.
 *   cancel:    fail now (5.0.0, "cancelled by the administrator") with a
 *              failure notice to the sender as NOTIFY asks.
 */
int queue_retry_now(struct queue *q, uint64_t id, const char *rcpt);
int queue_hold(struct queue *q, uint64_t id, const char *rcpt);
int queue_release(struct queue *q, uint64_t id, const char *rcpt);
int queue_cancel(struct queue *q, uint64_t id, const char *rcpt);

struct queue_stats {
	size_t messages;        /* queued: durable, a recipient still pending */
	size_t in_flight;       /* messages with a delivery out */
	size_t held_rcpts;      /* recipients on hold */
	uint64_t delivered;     /* recipient outcomes since start */
	uint64_t deferred;
	uint64_t bounced;       /* failed, expired or cancelled */
	uint64_t dsn_sent;      /* notices queued */
};
void queue_get_stats(struct queue *q, struct queue_stats *st);

#endif
