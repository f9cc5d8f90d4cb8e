/*
 * internal.h - the queue's own structures, shared by its files (private
 * to src/queue): queue.c (scheduler, attempts, outcomes), notify.c
 * (delivery status notifications), manage.c (what the management API
 * reads and does).
 */
#ifndef TERN_QUEUE_INTERNAL_H
#define TERN_QUEUE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "outbound/status.h"
#include "queue/queue.h"
#include "tls/tls.h"

/* The last outcome of a recipient, for notices and the management API;
 * in memory only. */
struct rcpt_last {
	struct delivery_status ds;
	char relay[160];
	char mx[256];        /* the host that answered, "" when none did */
	char tls[TLS_SUMMARY_MAX]; /* the session's TLS, as in the log line */
	int64_t at_ms;
};

struct qmsg {
	struct message *msg;
	struct queue *q;
	size_t heap_pos;            /* index in q->heap, or NOT_IN_HEAP */
	int64_t due_ms;
	struct message_body *body;  /* in memory until the first attempt has it */
	unsigned inflight;          /* deliveries out at the connector */
	struct rcpt_last *last;     /* n_rcpts entries once an outcome arrived */
	int64_t notice_retry_ms;    /* a notice that could not be queued: try again then */
	/* while waiting to become durable */
	queue_accept_cb accept_cb;
	void *accept_arg;
	struct qmsg *submit_prev, *submit_next;
	/* once durable: every message of the queue, and its id hash chain */
	struct qmsg *all_prev, *all_next;
	struct qmsg *id_next;
	bool listed;
};

#define NOT_IN_HEAP SIZE_MAX

struct queue {
	struct server *srv;
	struct qmsg **heap;
	size_t heap_len, heap_cap;
	struct event *timer;
	struct qmsg *submits;  /* not yet durable */
	struct qmsg *all;      /* durable */
	size_t n_all;
	struct qmsg **ids;     /* hash of all by id */
	size_t n_id_buckets;
	size_t inflight_msgs;
	size_t body_bytes;     /* bodies attached to deliveries not yet done */
	size_t body_budget;    /* QUEUE_BODY_BUDGET unless the environment says */
	struct queue_stats counters; /* the *_total counters */
	bool running;
	bool stopping;
};

/* queue.c */
/* Put m back in the heap at its earliest due time (none: it waits, held). */
void queue_schedule(struct queue *q, struct qmsg *m);
/* Nothing of m is in flight: send owed notices, then free m if it is
 * done, else schedule it. m may be gone on return. */
void queue_settle(struct qmsg *m);
/* Record recipient i in the spool, logging a failure. */
void queue_record_rcpt(struct qmsg *m, size_t i);
/* One log line for an outcome of recipient r; tls is the session's TLS
 * summary, or NULL or "" for none. */
void queue_log_outcome(const struct qmsg *m, const struct rcpt *r, const char *relay,
		       const char *tls, const struct delivery_status *ds, const char *status_word,
		       int64_t now);
int64_t queue_expire_ms(const struct queue *q, const struct message *msg, size_t i);
/* A durable message by id, or NULL. */
struct qmsg *queue_lookup(struct queue *q, uint64_t id);

/* notify.c */
/* Does recipient r want a notice of this kind (RFC 3461 NOTIFY; none
 * given means FAILURE,DELAY; never for the null sender)? */
bool notify_wanted(const struct message *msg, const struct rcpt *r, unsigned notify_bit);
/* When r's next delay notice is due, or INT64_MAX. */
int64_t notify_next_delay_ms(const struct queue *q, const struct message *msg, size_t i);
/* Queue the failure and success notices m owes (RCPT_F_DSN_OWED). */
void notify_owed(struct qmsg *m);
/* Queue one delay notice for the recipients whose delay time has come. */
void notify_delays_due(struct qmsg *m, int64_t now);

#endif
