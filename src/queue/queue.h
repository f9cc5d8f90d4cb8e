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

#include <stddef.h>
#include <stdint.h>

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

#endif
