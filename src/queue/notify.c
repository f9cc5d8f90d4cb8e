/*
 * notify.c - when tern owes the sender a delivery status notification,
 * and queuing it (RFC 3461; the notice itself is dsn.c's).
 *
 * Failure and success: apply_outcome marks a recipient RCPT_F_DSN_OWED in
 * the same spool record that makes it final; once every delivery of the
 * attempt is back, notify_owed reports all such recipients of the message
 * in one notice. The notice is queued (appended to the spool) before the
 * records that clear the marks, so a crash can lose the marks only with
 * the notice, never the notice alone: after a restart the notice is sent
 * again, at worst twice, never not at all.
 *
 * Delay: at each time of queue.schedule.notify after arrival (evaluated
 * for the recipient's domain), the recipients still pending that want it
 * get one notice; the count of notices sent travels in the recipient's
 * flags, so a restart does not repeat them.
 *
 * A notice goes from the null sender (report.dsn.from-* in its header),
 * so it never causes a notice itself; a message from the null sender
 * gets none.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "config/settings.h"
#include "queue/dsn.h"
#include "queue/internal.h"
#include "route/nexthop.h"
#include "server/server.h"
#include "spool/spool.h"
#include "util/clock.h"
#include "util/log.h"

/* A notice that cannot be queued now (disk full) is tried again after this. */
#define NOTICE_RETRY_MS 60000

bool notify_wanted(const struct message *msg, const struct rcpt *r, unsigned notify_bit)
{
	if (msg->sender == NULL || msg->sender[0] == '\0')
		return false;
	if (r->notify == 0) /* RFC 3461 §4.1: the MTA's default, FAILURE,DELAY */
		return (notify_bit & (RCPT_NOTIFY_FAILURE | RCPT_NOTIFY_DELAY)) != 0;
	return (r->notify & notify_bit) != 0;
}

static const struct cfg_value *notify_times(const struct queue *q, const struct message *msg,
					    const struct rcpt *r)
{
	struct rule_ctx ctx;

	route_rule_ctx(&ctx, msg, r->domain, r->domain_len);
	return config_eval(q->srv->cfg, CFG_QUEUE_SCHEDULE_NOTIFY, &ctx);
}

int64_t notify_next_delay_ms(const struct queue *q, const struct message *msg, size_t i)
{
	const struct rcpt *r = &msg->rcpts[i];
	const struct cfg_value *times;
	unsigned sent = RCPT_DELAYS(r->flags);

	if (r->state != RCPT_PENDING || !notify_wanted(msg, r, RCPT_NOTIFY_DELAY) ||
	    sent >= RCPT_DELAYS_MAX)
		return INT64_MAX;
	times = notify_times(q, msg, r);
	if (times == NULL || times->none || sent >= times->n_items)
		return INT64_MAX;
	return msg->arrival_ms + times->items[sent].num;
}

/* Compose and queue one notice for the recipients idx[0..n) with the
 * given actions. Returns 0, or an errno (nothing was queued). */
static int queue_notice(struct qmsg *m, const size_t *idx, const enum dsn_action *action, size_t n,
			int64_t now)
{
	struct queue *q = m->q;
	const struct config *cfg = q->srv->cfg;
	struct dsn_rcpt *reps = calloc(n, sizeof(*reps));
	struct delivery_status *unknown = calloc(n, sizeof(*unknown));
	struct message_body *orig = m->body != NULL ? message_body_ref(m->body)
						    : spool_read_body(q->srv->spool, m->msg);
	struct message_body *body = NULL;
	struct message *notice = NULL;
	struct dsn_input in;
	struct strbuf out;
	bool eight_bit = false;
	int err = ENOMEM;

	strbuf_init(&out);
	if (orig == NULL) {
		err = errno;
		goto done;
	}
	if (reps == NULL || unknown == NULL)
		goto done;
	for (size_t k = 0; k < n; k++) {
		const struct rcpt *r = &m->msg->rcpts[idx[k]];
		const struct rcpt_last *l = m->last != NULL && m->last[idx[k]].at_ms != 0
					    ? &m->last[idx[k]] : NULL;

		reps[k].addr = r->addr;
		reps[k].orcpt = r->orcpt;
		reps[k].action = action[k];
		if (l != NULL) {
			reps[k].status = &l->ds;
			reps[k].last_attempt_ms = l->at_ms;
		} else {
			/* A restart forgot the details; the outcome is still known. */
			ds_set_local(&unknown[k], action[k] == DSN_ACTION_FAILED ? DS_PERM :
				     action[k] == DSN_ACTION_DELAYED ? DS_TEMP : DS_OK, STAGE_CONNECT,
				     action[k] == DSN_ACTION_FAILED ? "5.0.0" :
				     action[k] == DSN_ACTION_DELAYED ? "4.0.0" : "2.0.0",
				     "%s", action[k] == DSN_ACTION_DELAYED ? "not delivered yet"
				     : "the details of the last attempt are not known after a restart");
			reps[k].status = &unknown[k];
		}
		/* the host that answered; none when no connection was made */
		reps[k].remote_mta = l != NULL && l->mx[0] != '\0' ? l->mx : NULL;
		if (action[k] == DSN_ACTION_DELAYED)
			reps[k].will_retry_until_ms = queue_expire_ms(q, m->msg, idx[k]);
	}
	memset(&in, 0, sizeof(in));
	in.reporting_mta = q->srv->hostname;
	in.from_name = config_get(cfg, CFG_REPORT_DSN_FROM_NAME)->str;
	in.from_addr = config_get(cfg, CFG_REPORT_DSN_FROM_ADDRESS)->str;
	in.to = m->msg->sender;
	in.envid = m->msg->envid;
	in.queue_id = m->msg->id;
	in.arrival_ms = m->msg->arrival_ms;
	in.now_ms = now;
	in.ret_full = m->msg->ret == MSG_RET_FULL;
	in.body = orig->data;
	in.body_len = orig->len;
	in.rcpts = reps;
	in.n_rcpts = n;
	if ((err = dsn_compose(&in, &out, &eight_bit)) != 0)
		goto done;
	err = ENOMEM;
	notice = message_new("", 0);
	body = message_body_new(out.len);
	if (notice == NULL || body == NULL ||
	    message_add_rcpt(notice, m->msg->sender, strlen(m->msg->sender)) == NULL)
		goto done;
	memcpy(body->data, out.data, out.len);
	notice->body_type = eight_bit ? MSG_BODY_8BITMIME : MSG_BODY_7BIT;
	/* A UTF-8 return path (the original came with SMTPUTF8) is the notice's
	 * recipient and in its header: the notice needs SMTPUTF8 too. */
	notice->smtputf8 = m->msg->smtputf8;
	err = queue_submit(q, notice, body, NULL, NULL);
	notice = NULL; /* the queue's now, whatever the outcome */
	body = NULL;
	if (err == 0)
		q->counters.dsn_sent++;
done:
	if (notice != NULL)
		message_free(notice);
	message_body_unref(body);
	message_body_unref(orig);
	strbuf_free(&out);
	free(reps);
	free(unknown);
	return err;
}

static void log_notice(const struct qmsg *m, const char *kind, size_t n, int err)
{
	if (err == 0)
		log_info("queue %016" PRIx64 ": %s notice for %zu recipient%s queued to <%s>",
			 m->msg->id, kind, n, n == 1 ? "" : "s", m->msg->sender);
	else
		log_error("queue %016" PRIx64 ": cannot queue the %s notice to <%s>: %s; trying again "
			  "in a minute", m->msg->id, kind, m->msg->sender, strerror(err));
}

static bool owes_any(const struct message *msg)
{
	for (size_t i = 0; i < msg->n_rcpts; i++)
		if (msg->rcpts[i].flags & RCPT_F_DSN_OWED)
			return true;
	return false;
}

void notify_owed(struct qmsg *m)
{
	struct message *msg = m->msg;
	size_t *idx, n = 0;
	enum dsn_action *action;
	int64_t now = clock_wall_ms();
	bool failed = false;
	int err;

	/* Every settled attempt passes here: most owe nothing. */
	if (!owes_any(msg))
		return;
	idx = calloc(msg->n_rcpts, sizeof(*idx));
	action = calloc(msg->n_rcpts, sizeof(*action));
	if (idx == NULL || action == NULL) {
		err = ENOMEM;
		goto out_err;
	}
	for (size_t i = 0; i < msg->n_rcpts; i++) {
		const struct rcpt *r = &msg->rcpts[i];

		if (!(r->flags & RCPT_F_DSN_OWED))
			continue;
		idx[n] = i;
		action[n++] = r->state == RCPT_DELIVERED ? DSN_ACTION_DELIVERED : DSN_ACTION_FAILED;
		failed |= r->state != RCPT_DELIVERED;
	}
	if (n == 0)
		goto out;
	/* A null sender marks nothing owed; this is for a sender since gone. */
	err = queue_notice(m, idx, action, n, now);
	log_notice(m, failed ? "failure" : "success", n, err);
	if (err != 0)
		goto out_err;
	for (size_t k = 0; k < n; k++) {
		msg->rcpts[idx[k]].flags &= (uint8_t)~RCPT_F_DSN_OWED;
		queue_record_rcpt(m, idx[k]);
	}
	goto out;
out_err:
	m->notice_retry_ms = now + NOTICE_RETRY_MS;
out:
	free(idx);
	free(action);
}

void notify_delays_due(struct qmsg *m, int64_t now)
{
	struct message *msg = m->msg;
	size_t *idx = calloc(msg->n_rcpts, sizeof(*idx));
	enum dsn_action *action = calloc(msg->n_rcpts, sizeof(*action));
	size_t n = 0;
	int err;

	if (idx == NULL || action == NULL)
		goto out;
	for (size_t i = 0; i < msg->n_rcpts; i++) {
		const struct rcpt *r = &msg->rcpts[i];

		if ((r->flags & RCPT_F_HELD) || notify_next_delay_ms(m->q, msg, i) > now)
			continue;
		idx[n] = i;
		action[n++] = DSN_ACTION_DELAYED;
	}
	if (n == 0)
		goto out;
	err = queue_notice(m, idx, action, n, now);
	log_notice(m, "delay", n, err);
	for (size_t k = 0; k < n; k++) {
		/* Counted even when it could not be queued: a full disk must not
		 * turn the next attempts into a storm of delay notices. Every
		 * notify time already past counts: after a long stop, one notice
		 * stands for all of them. */
		struct rcpt *r = &msg->rcpts[idx[k]];

		do
			r->flags = (uint8_t)((r->flags & RCPT_F_KNOWN) | ((RCPT_DELAYS(r->flags) + 1) << 4));
		while (notify_next_delay_ms(m->q, msg, idx[k]) <= now);
		queue_record_rcpt(m, idx[k]);
	}
out:
	free(idx);
	free(action);
}
