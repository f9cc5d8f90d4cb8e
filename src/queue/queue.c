/*
 * queue.c - the scheduler: due times, attempts, outcomes.
 *
 * Every message with a pending recipient is in a binary heap keyed by its
 * earliest due time; one libevent timer is armed for the heap's top, so a
 * queue of any size costs O(log n) per change and retries fire on time.
 * An attempt groups the message's due recipients by next hop (one
 * transaction per host carries all of them) and hands each group to the
 * connector. Each recipient's outcome is applied when its group returns:
 * 2xx delivered, 5xx failed, 4xx retried after the next interval of
 * queue.schedule.retry (the last one repeats) until queue.schedule.expire
 * has passed since arrival. Every outcome is appended to the spool and
 * logged, one line per recipient per attempt.
 *
 * Recipients whose next hop has no value go to their domain's MX hosts:
 * one group per domain. A held recipient has no due time; a recipient
 * that is final but still owes its notice keeps the message (notify.c).
 * Every durable message is on the `all` list and in the id hash, for the
 * management API (manage.c).
 */
#include "queue/queue.h"
#include "queue/internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/event.h>

#include "config/settings.h"
#include "outbound/connector.h"
#include "route/nexthop.h"
#include "route/plan.h"
#include "server/server.h"
#include "spool/spool.h"
#include "util/clock.h"
#include "util/log.h"


/*
 * Bodies that deliveries carry in memory while they wait for a connection,
 * at most this many bytes in all. Past it a delivery carries none and the
 * connector reads the body from the spool (the page cache, usually) when a
 * connection takes it, so a backlog costs envelopes, not bodies.
 */
#define QUEUE_BODY_BUDGET (64u << 20)
/* Tests shrink the budget (to reach the spool-read path) with this. */
#define QUEUE_BODY_BUDGET_ENV "TERN_QUEUE_BODY_BUDGET"


/* ---- heap of messages by due time ---- */

static void heap_set(struct queue *q, size_t i, struct qmsg *m)
{
	q->heap[i] = m;
	m->heap_pos = i;
}

static void heap_up(struct queue *q, size_t i)
{
	struct qmsg *m = q->heap[i];

	while (i > 0) {
		size_t parent = (i - 1) / 2;

		if (q->heap[parent]->due_ms <= m->due_ms)
			break;
		heap_set(q, i, q->heap[parent]);
		i = parent;
	}
	heap_set(q, i, m);
}

static void heap_down(struct queue *q, size_t i)
{
	struct qmsg *m = q->heap[i];

	for (;;) {
		size_t child = 2 * i + 1;

		if (child >= q->heap_len)
			break;
		if (child + 1 < q->heap_len && q->heap[child + 1]->due_ms < q->heap[child]->due_ms)
			child++;
		if (m->due_ms <= q->heap[child]->due_ms)
			break;
		heap_set(q, i, q->heap[child]);
		i = child;
	}
	heap_set(q, i, m);
}

static bool heap_push(struct queue *q, struct qmsg *m)
{
	if (q->heap_len == q->heap_cap) {
		size_t cap = q->heap_cap ? q->heap_cap * 2 : 256;
		struct qmsg **heap = realloc(q->heap, cap * sizeof(*heap));

		if (heap == NULL)
			return false;
		q->heap = heap;
		q->heap_cap = cap;
	}
	q->heap[q->heap_len++] = m;
	heap_up(q, q->heap_len - 1);
	return true;
}

static void heap_remove(struct queue *q, struct qmsg *m)
{
	size_t i = m->heap_pos;

	if (i == NOT_IN_HEAP)
		return;
	m->heap_pos = NOT_IN_HEAP;
	if (--q->heap_len == i)
		return;
	heap_set(q, i, q->heap[q->heap_len]);
	heap_down(q, i);
	heap_up(q, q->heap[i]->heap_pos);
}

static void arm_timer(struct queue *q)
{
	struct timeval tv = { 0, 0 };

	if (!q->running || q->heap_len == 0) {
		evtimer_del(q->timer);
		return;
	}
	int64_t wait = q->heap[0]->due_ms - clock_wall_ms();
	if (wait > 0) {
		tv.tv_sec = wait / 1000;
		tv.tv_usec = (wait % 1000) * 1000;
	}
	evtimer_add(q->timer, &tv);
}

static int64_t min64(int64_t a, int64_t b)
{
	return a < b ? a : b;
}

void queue_schedule(struct queue *q, struct qmsg *m)
{
	int64_t due = INT64_MAX;

	for (size_t i = 0; i < m->msg->n_rcpts; i++) {
		const struct rcpt *r = &m->msg->rcpts[i];

		if (r->flags & RCPT_F_DSN_OWED)
			due = min64(due, m->notice_retry_ms);
		if (r->state != RCPT_PENDING || (r->flags & RCPT_F_HELD))
			continue;
		due = min64(due, r->next_try_ms);
		due = min64(due, notify_next_delay_ms(q, m->msg, i));
	}
	heap_remove(q, m);
	m->due_ms = due;
	if (due == INT64_MAX)
		return; /* every pending recipient is on hold */
	if (!heap_push(q, m)) {
		/* Still in the spool: the next start retries it. */
		log_error("queue %016" PRIx64 ": out of memory scheduling it; it waits for a restart",
			  m->msg->id);
		return;
	}
	if (m->heap_pos == 0)
		arm_timer(q);
}

/* ---- every durable message: list and id hash ---- */

static size_t id_bucket(const struct queue *q, uint64_t id)
{
	return (size_t)((id ^ (id >> 29)) * 0x9e3779b97f4a7c15ull >> 32) & (q->n_id_buckets - 1);
}

static void ids_grow(struct queue *q)
{
	size_t n = q->n_id_buckets ? q->n_id_buckets * 2 : 1024;
	struct qmsg **b = calloc(n, sizeof(*b));
	size_t old = q->n_id_buckets;

	if (b == NULL)
		return; /* longer chains, still correct */
	q->n_id_buckets = n;
	for (size_t i = 0; i < old; i++) {
		while (q->ids[i] != NULL) {
			struct qmsg *m = q->ids[i];
			size_t k = id_bucket(q, m->msg->id);

			q->ids[i] = m->id_next;
			m->id_next = b[k];
			b[k] = m;
		}
	}
	free(q->ids);
	q->ids = b;
}

static void list_add(struct queue *q, struct qmsg *m)
{
	size_t k;

	if (q->n_id_buckets == 0 || q->n_all >= 2 * q->n_id_buckets)
		ids_grow(q);
	m->all_next = q->all;
	if (q->all != NULL)
		q->all->all_prev = m;
	q->all = m;
	q->n_all++;
	m->listed = true;
	if (q->n_id_buckets == 0)
		return; /* found by the list only */
	k = id_bucket(q, m->msg->id);
	m->id_next = q->ids[k];
	q->ids[k] = m;
}

static void list_remove(struct queue *q, struct qmsg *m)
{
	if (!m->listed)
		return;
	if (m->all_prev != NULL)
		m->all_prev->all_next = m->all_next;
	else
		q->all = m->all_next;
	if (m->all_next != NULL)
		m->all_next->all_prev = m->all_prev;
	q->n_all--;
	m->listed = false;
	if (q->n_id_buckets == 0)
		return;
	for (struct qmsg **pp = &q->ids[id_bucket(q, m->msg->id)]; *pp != NULL; pp = &(*pp)->id_next) {
		if (*pp == m) {
			*pp = m->id_next;
			break;
		}
	}
}

struct qmsg *queue_lookup(struct queue *q, uint64_t id)
{
	if (q->n_id_buckets == 0) {
		for (struct qmsg *m = q->all; m != NULL; m = m->all_next)
			if (m->msg->id == id)
				return m;
		return NULL;
	}
	for (struct qmsg *m = q->ids[id_bucket(q, id)]; m != NULL; m = m->id_next)
		if (m->msg->id == id)
			return m;
	return NULL;
}

static void qmsg_free(struct qmsg *m)
{
	list_remove(m->q, m);
	heap_remove(m->q, m);
	message_body_unref(m->body);
	message_free(m->msg);
	free(m->last);
	free(m);
}

/* ---- outcomes ---- */

static int64_t retry_interval(const struct config *cfg, const struct rule_ctx *ctx, unsigned attempts)
{
	const struct cfg_value *v = config_eval(cfg, CFG_QUEUE_SCHEDULE_RETRY, ctx);
	size_t i;

	if (v == NULL || v->n_items == 0)
		return 60000; /* an empty retry list still must not spin */
	i = attempts > 0 ? attempts - 1 : 0;
	if (i >= v->n_items)
		i = v->n_items - 1;
	return v->items[i].num;
}

void queue_log_outcome(const struct qmsg *m, const struct rcpt *r, const char *relay,
		       const char *tls, const struct delivery_status *ds, const char *status_word,
		       int64_t now)
{
	char rcpt[600], text[1200];
	int64_t delay = now - m->msg->arrival_ms;
	bool with_tls = tls != NULL && tls[0] != '\0';

	log_escape(r->addr, r->addr_len, rcpt, sizeof(rcpt));
	log_escape(ds->text, strlen(ds->text), text, sizeof(text));
	/* tls= is the session's TLS, when a session got that far (its text
	 * is tern's and OpenSSL's, never the peer's). */
	log_info("queue %016" PRIx64 " rcpt=<%s> relay=%s%s%s status=%s code=%d dsn=%s stage=%s "
		 "delay=%" PRId64 ".%03" PRId64 "s attempt=%u %s=\"%s\"",
		 m->msg->id, rcpt, relay, with_tls ? " tls=" : "", with_tls ? tls : "", status_word,
		 ds->code,
		 ds->enhanced[0] != '\0' ? ds->enhanced : "-", ds_stage_name(ds->stage),
		 delay / 1000, delay % 1000, r->attempts, ds->remote ? "reply" : "reason", text);
}

int64_t queue_expire_ms(const struct queue *q, const struct message *msg, size_t i)
{
	const struct rcpt *r = &msg->rcpts[i];
	struct rule_ctx ctx;

	route_rule_ctx(&ctx, msg, r->domain, r->domain_len);
	return msg->arrival_ms + config_eval(q->srv->cfg, CFG_QUEUE_SCHEDULE_EXPIRE, &ctx)->num;
}

void queue_record_rcpt(struct qmsg *m, size_t i)
{
	if (spool_update_rcpt(m->q->srv->spool, m->msg, i) != 0)
		log_error("queue %016" PRIx64 ": cannot record the state of <%s> in the spool: "
			  "after a restart it may be attempted again", m->msg->id, m->msg->rcpts[i].addr);
}

/* Keep the outcome for notices and the management API. */
static void remember_outcome(struct qmsg *m, size_t idx, const struct delivery_status *ds,
			     const struct delivery *d, int64_t now)
{
	struct rcpt_last *l;

	if (m->last == NULL && (m->last = calloc(m->msg->n_rcpts, sizeof(*m->last))) == NULL)
		return; /* the notice then says less; nothing else depends on it */
	l = &m->last[idx];
	l->ds = *ds;
	snprintf(l->relay, sizeof(l->relay), "%s", d->relay);
	snprintf(l->mx, sizeof(l->mx), "%s", d->remote_ip.family != 0 ? d->mx : "");
	snprintf(l->tls, sizeof(l->tls), "%s", d->tls);
	l->at_ms = now;
}

static void apply_outcome(struct qmsg *m, size_t idx, const struct delivery_status *ds,
			  const struct delivery *d)
{
	struct queue *q = m->q;
	const struct config *cfg = q->srv->cfg;
	struct rcpt *r = &m->msg->rcpts[idx];
	struct delivery_status expired;
	int64_t now = clock_wall_ms();
	const char *word = ds_class_name(ds->cls);

	/* A delivery dropped because tern is stopping was not an attempt: the
	 * recipient stays as the spool has it, due at the next start. */
	if (q->stopping && ds->cls == DS_TEMP && !ds->remote && ds->code == 0)
		return;
	r->attempts++;
	switch (ds->cls) {
	case DS_OK:
		r->state = RCPT_DELIVERED;
		break;
	case DS_PERM:
		r->state = RCPT_FAILED;
		break;
	case DS_TEMP: {
		struct rule_ctx ctx;
		struct route_conn_vars vars;

		route_rule_ctx(&ctx, m->msg, r->domain, r->domain_len);
		/* retry may depend on the host tried (set H). */
		route_conn_ctx(&ctx, d->mx[0] != '\0' ? d->mx : NULL, &d->remote_ip, &d->local_ip, &vars);
		int64_t expire_at = m->msg->arrival_ms +
				    config_eval(cfg, CFG_QUEUE_SCHEDULE_EXPIRE, &ctx)->num;
		if (now >= expire_at) {
			r->state = RCPT_FAILED;
			expired = *ds;
			expired.cls = DS_PERM;
			snprintf(expired.enhanced, sizeof(expired.enhanced), "4.4.7");
			word = "expired";
			ds = &expired;
			break;
		}
		int64_t next = now + retry_interval(cfg, &ctx, r->attempts);
		/* The last try falls at expiry, not after it. */
		r->next_try_ms = next < expire_at ? next : expire_at;
		break;
	}
	}
	remember_outcome(m, idx, ds, d, now);
	if ((r->state == RCPT_FAILED && notify_wanted(m->msg, r, RCPT_NOTIFY_FAILURE)) ||
	    (r->state == RCPT_DELIVERED && notify_wanted(m->msg, r, RCPT_NOTIFY_SUCCESS)))
		r->flags |= RCPT_F_DSN_OWED; /* recorded with the state, in one record */
	if (r->state == RCPT_DELIVERED)
		q->counters.delivered++;
	else if (r->state == RCPT_FAILED)
		q->counters.bounced++;
	else
		q->counters.deferred++;
	queue_log_outcome(m, r, d->relay, d->tls, ds, word, now);
	queue_record_rcpt(m, idx);
}

void queue_settle(struct qmsg *m)
{
	struct queue *q = m->q;

	notify_owed(m);
	for (size_t i = 0; i < m->msg->n_rcpts; i++)
		if (m->msg->rcpts[i].flags & RCPT_F_DSN_OWED) {
			queue_schedule(q, m); /* a notice could not be queued yet */
			return;
		}
	if (message_pending(m->msg) == 0) {
		spool_release(q->srv->spool, m->msg);
		qmsg_free(m);
		return;
	}
	queue_schedule(q, m);
}

/* Every delivery of an attempt has returned: one notice reports the
 * recipients that became final in it. */
static void attempt_finished(struct qmsg *m)
{
	m->q->inflight_msgs--;
	queue_settle(m);
}

static void delivery_done(void *arg, struct delivery *d)
{
	struct qmsg *m = arg;

	for (size_t i = 0; i < d->n_rcpts; i++)
		apply_outcome(m, d->rcpt_index[i], &d->status[i], d);
	if (d->body_counted)
		m->q->body_bytes -= d->body_counted;
	message_body_unref(d->body);
	free(d);
	if (--m->inflight == 0)
		attempt_finished(m);
}

static struct delivery *delivery_new(struct qmsg *m, size_t n)
{
	struct delivery *d;
	size_t size = sizeof(*d) + n * sizeof(size_t) + n * sizeof(struct delivery_status);

	d = calloc(1, size);
	if (d == NULL)
		return NULL;
	d->rcpt_index = (size_t *)(d + 1);
	d->status = (struct delivery_status *)(d->rcpt_index + n);
	d->msg = m->msg;
	if (m->q->body_bytes + m->body->len <= m->q->body_budget) {
		d->body = message_body_ref(m->body);
		d->body_counted = m->body->len;
		m->q->body_bytes += m->body->len;
	}
	d->done = delivery_done;
	d->arg = m;
	return d;
}

/* Recipients i and j travel together: the same relay, or both by MX to
 * the same domain. */
static bool same_group(const struct message *msg, const struct cfg_section *const *hop, size_t i,
		       size_t j)
{
	const struct rcpt *a = &msg->rcpts[i], *b = &msg->rcpts[j];

	if (hop[i] != hop[j])
		return false;
	return hop[i] != NULL ||
	       (a->domain_len == b->domain_len && memcmp(a->domain, b->domain, a->domain_len) == 0);
}

/*
 * Start an attempt for every recipient of m that is due: one delivery per
 * next hop (per domain for delivery by MX), carrying all of its due
 * recipients.
 */
static void attempt(struct queue *q, struct qmsg *m)
{
	struct message *msg = m->msg;
	int64_t now = clock_wall_ms();
	size_t n = msg->n_rcpts;
	const struct cfg_section **hop = calloc(n, sizeof(*hop));
	bool *due = calloc(n, sizeof(*due));

	if (hop == NULL || due == NULL) {
		free(hop);
		free(due);
		m->due_ms = now + 60000;
		heap_push(q, m);
		return;
	}
	if (m->body == NULL && (m->body = spool_read_body(q->srv->spool, msg)) == NULL) {
		log_error("queue %016" PRIx64 ": cannot read its body from the spool: %s; "
			  "trying again in a minute", msg->id, strerror(errno));
		free(hop);
		free(due);
		m->due_ms = now + 60000;
		heap_push(q, m);
		return;
	}
	for (size_t i = 0; i < n; i++) {
		const struct rcpt *r = &msg->rcpts[i];

		due[i] = r->state == RCPT_PENDING && !(r->flags & RCPT_F_HELD) && r->next_try_ms <= now;
		if (due[i])
			hop[i] = route_next_hop(q->srv->cfg, msg, r->domain, r->domain_len);
	}
	q->inflight_msgs++;
	m->inflight = 1; /* held until every group is launched */
	for (size_t i = 0; i < n; i++) {
		size_t count = 0;
		struct delivery *d;

		if (!due[i])
			continue;
		for (size_t j = i; j < n; j++)
			count += due[j] && same_group(msg, hop, i, j);
		d = delivery_new(m, count);
		if (d == NULL) {
			/* Not an attempt: the recipients not launched wait a minute. */
			log_error("queue %016" PRIx64 ": out of memory; trying again in a minute", msg->id);
			for (size_t j = i; j < n; j++)
				if (due[j])
					msg->rcpts[j].next_try_ms = now + 60000;
			break;
		}
		for (size_t j = i; j < n; j++)
			if (due[j] && same_group(msg, hop, i, j))
				d->rcpt_index[d->n_rcpts++] = j;
		for (size_t k = 0; k < d->n_rcpts; k++)
			due[d->rcpt_index[k]] = false;
		m->inflight++;
		connector_deliver(q->srv->connector, hop[i], d);
	}
	free(hop);
	free(due);
	/* The groups hold their own references; the hot copy is not needed
	 * for retries, which read the spool. */
	message_body_unref(m->body);
	m->body = NULL;
	if (--m->inflight == 0)
		attempt_finished(m);
}

static bool attempt_due(const struct qmsg *m, int64_t now)
{
	for (size_t i = 0; i < m->msg->n_rcpts; i++) {
		const struct rcpt *r = &m->msg->rcpts[i];

		if (r->state == RCPT_PENDING && !(r->flags & RCPT_F_HELD) && r->next_try_ms <= now)
			return true;
	}
	return false;
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct queue *q = arg;
	int64_t now = clock_wall_ms();

	(void)fd;
	(void)what;
	while (q->running && q->heap_len > 0 && q->heap[0]->due_ms <= now) {
		struct qmsg *m = q->heap[0];

		heap_remove(q, m);
		notify_delays_due(m, now);
		if (attempt_due(m, now))
			attempt(q, m);
		else
			queue_settle(m);
	}
	arm_timer(q);
}

/* ---- submission ---- */

static void durable_cb(void *arg, int err)
{
	struct qmsg *m = arg;
	struct queue *q = m->q;

	if (m->submit_prev != NULL)
		m->submit_prev->submit_next = m->submit_next;
	else
		q->submits = m->submit_next;
	if (m->submit_next != NULL)
		m->submit_next->submit_prev = m->submit_prev;
	if (m->accept_cb != NULL)
		m->accept_cb(m->accept_arg, err, err == 0 ? m->msg->id : 0);
	if (err != 0) {
		qmsg_free(m);
		return;
	}
	list_add(q, m);
	queue_schedule(q, m);
}

int queue_submit(struct queue *q, struct message *msg, struct message_body *body,
		 queue_accept_cb cb, void *arg)
{
	struct qmsg *m = calloc(1, sizeof(*m));
	struct iovec iov;
	int64_t now = clock_wall_ms();
	int err;

	if (m == NULL) {
		message_free(msg);
		message_body_unref(body);
		return ENOMEM;
	}
	m->msg = msg;
	m->q = q;
	m->heap_pos = NOT_IN_HEAP;
	m->body = body;
	m->accept_cb = cb;
	m->accept_arg = arg;
	msg->queue_data = m;
	msg->arrival_ms = now;
	msg->size = body->len;
	for (size_t i = 0; i < msg->n_rcpts; i++) {
		msg->rcpts[i].state = RCPT_PENDING;
		msg->rcpts[i].next_try_ms = now;
	}
	iov.iov_base = body->data;
	iov.iov_len = body->len;
	err = spool_submit(q->srv->spool, msg, &iov, 1, durable_cb, m);
	if (err != 0) {
		qmsg_free(m);
		return err;
	}
	m->submit_next = q->submits;
	if (q->submits != NULL)
		q->submits->submit_prev = m;
	q->submits = m;
	return 0;
}

void queue_forget_submitter(struct queue *q, void *arg)
{
	for (struct qmsg *m = q->submits; m != NULL; m = m->submit_next)
		if (m->accept_arg == arg)
			m->accept_cb = NULL;
}

void queue_adopt(struct queue *q, struct message *msg)
{
	struct qmsg *m = calloc(1, sizeof(*m));

	if (m == NULL) {
		log_error("queue %016" PRIx64 ": out of memory; it waits for a restart", msg->id);
		message_free(msg);
		return;
	}
	m->msg = msg;
	m->q = q;
	m->heap_pos = NOT_IN_HEAP;
	msg->queue_data = m;
	list_add(q, m);
	queue_schedule(q, m);
}

/* ---- life cycle ---- */

struct queue *queue_new(struct server *srv)
{
	struct queue *q = calloc(1, sizeof(*q));

	if (q == NULL)
		return NULL;
	q->srv = srv;
	q->body_budget = QUEUE_BODY_BUDGET;
	if (getenv(QUEUE_BODY_BUDGET_ENV) != NULL)
		q->body_budget = (size_t)strtoull(getenv(QUEUE_BODY_BUDGET_ENV), NULL, 10);
	q->timer = evtimer_new(srv->base, timer_cb, q);
	if (q->timer == NULL) {
		free(q);
		return NULL;
	}
	return q;
}

void queue_start(struct queue *q)
{
	q->running = true;
	log_info("queue: %zu messages waiting", q->heap_len);
	arm_timer(q);
}

void queue_stop(struct queue *q)
{
	q->running = false;
	q->stopping = true;
	evtimer_del(q->timer);
}

void queue_free(struct queue *q)
{
	if (q == NULL)
		return;
	while (q->all != NULL)
		qmsg_free(q->all);
	while (q->submits != NULL) {
		struct qmsg *m = q->submits;

		q->submits = m->submit_next;
		qmsg_free(m);
	}
	free(q->heap);
	free(q->ids);
	event_free(q->timer);
	free(q);
}

/* ---- what the management API reads ---- */

void queue_rcpt_info(struct queue *q, const struct message *msg, size_t i,
		     struct queue_rcpt_info *out)
{
	const struct qmsg *m = msg->queue_data;
	const struct rcpt_last *l = m->last != NULL && m->last[i].at_ms != 0 ? &m->last[i] : NULL;

	memset(out, 0, sizeof(*out));
	out->held = (msg->rcpts[i].flags & RCPT_F_HELD) != 0;
	out->expire_ms = queue_expire_ms(q, msg, i);
	if (l != NULL) {
		out->last = &l->ds;
		out->last_relay = l->relay;
		out->last_tls = l->tls;
		out->last_ms = l->at_ms;
	}
}

void queue_visit(struct queue *q, bool (*cb)(void *arg, const struct message *msg), void *arg)
{
	for (struct qmsg *m = q->all; m != NULL; m = m->all_next)
		if (!cb(arg, m->msg))
			return;
}

const struct message *queue_find(struct queue *q, uint64_t id)
{
	struct qmsg *m = queue_lookup(q, id);

	return m != NULL ? m->msg : NULL;
}

bool queue_in_flight(const struct message *msg)
{
	const struct qmsg *m = msg->queue_data;

	return m->inflight > 0;
}

void queue_get_stats(struct queue *q, struct queue_stats *st)
{
	*st = q->counters;
	st->messages = q->n_all;
	st->in_flight = q->inflight_msgs;
	st->held_rcpts = 0;
	for (const struct qmsg *m = q->all; m != NULL; m = m->all_next)
		for (size_t i = 0; i < m->msg->n_rcpts; i++)
			st->held_rcpts += m->msg->rcpts[i].state == RCPT_PENDING &&
					  (m->msg->rcpts[i].flags & RCPT_F_HELD);
}

/* ---- operator actions ---- */

enum action { ACT_RETRY, ACT_HOLD, ACT_RELEASE, ACT_CANCEL };

static bool addr_matches(const struct rcpt *r, const char *want)
{
	return want == NULL || (strlen(want) == r->addr_len && strncasecmp(r->addr, want, r->addr_len) == 0);
}

static int act(struct queue *q, uint64_t id, const char *rcpt, enum action what)
{
	static const char *const names[] = { "retry", "hold", "release", "cancel" };
	struct qmsg *m = queue_lookup(q, id);
	int64_t now = clock_wall_ms();
	int changed = 0;

	if (m == NULL)
		return -ENOENT;
	/* Its recipients' outcomes are on their way: changing them now would
	 * race with them. */
	if (m->inflight > 0)
		return -EBUSY;
	for (size_t i = 0; i < m->msg->n_rcpts; i++) {
		struct rcpt *r = &m->msg->rcpts[i];
		struct delivery_status why;

		if (r->state != RCPT_PENDING || !addr_matches(r, rcpt))
			continue;
		switch (what) {
		case ACT_HOLD:
			if (r->flags & RCPT_F_HELD)
				continue;
			r->flags |= RCPT_F_HELD;
			break;
		case ACT_RELEASE:
			if (!(r->flags & RCPT_F_HELD))
				continue;
			r->flags &= (uint8_t)~RCPT_F_HELD;
			r->next_try_ms = now;
			break;
		case ACT_RETRY:
			/* Due now; the expiry stays arrival + expire, whatever
			 * happens to retries (Stalwart restarted it). */
			r->flags &= (uint8_t)~RCPT_F_HELD;
			r->next_try_ms = now;
			break;
		case ACT_CANCEL:
			r->flags &= (uint8_t)~RCPT_F_HELD;
			r->state = RCPT_FAILED;
			ds_set_local(&why, DS_PERM, STAGE_CONNECT, "5.0.0", "cancelled by the administrator");
			if (m->last != NULL || (m->last = calloc(m->msg->n_rcpts, sizeof(*m->last))) != NULL) {
				m->last[i].ds = why;
				snprintf(m->last[i].relay, sizeof(m->last[i].relay), "none");
				m->last[i].mx[0] = '\0';
				m->last[i].at_ms = now;
			}
			if (notify_wanted(m->msg, r, RCPT_NOTIFY_FAILURE))
				r->flags |= RCPT_F_DSN_OWED;
			q->counters.bounced++;
			queue_log_outcome(m, r, "none", NULL, &why, "cancelled", now);
			break;
		}
		queue_record_rcpt(m, i);
		changed++;
	}
	if (changed > 0) {
		log_info("queue %016" PRIx64 ": %s of %d recipient%s by the administrator", id,
			 names[what], changed, changed == 1 ? "" : "s");
		heap_remove(q, m);
		queue_settle(m); /* may free m: a whole message cancelled */
	}
	return changed;
}

int queue_retry_now(struct queue *q, uint64_t id, const char *rcpt)
{
	return act(q, id, rcpt, ACT_RETRY);
}

int queue_hold(struct queue *q, uint64_t id, const char *rcpt)
{
	return act(q, id, rcpt, ACT_HOLD);
}

int queue_release(struct queue *q, uint64_t id, const char *rcpt)
{
	return act(q, id, rcpt, ACT_RELEASE);
}

int queue_cancel(struct queue *q, uint64_t id, const char *rcpt)
{
	return act(q, id, rcpt, ACT_CANCEL);
}
