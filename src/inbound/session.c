/*
 * session.c - the server side of one SMTP or LMTP connection.
 *
 * Three parts, as the client side is written in mirror image: the parser
 * (smtp_parse.c) turns each line into a command; the transaction state
 * (enum txn_state) says which commands are allowed, through the refusals
 * table; a handler per command does the work and writes the reply.
 *
 * Input is processed command by command from the session's input
 * buffer, so pipelined commands are answered in order, and every reply
 * produced from one read goes out in one sendmsg at the end of that read
 * (session_settle). What the next input bytes are is the input phase:
 * command lines, DATA bytes, BDAT chunk octets, or nothing while the
 * queue makes a message durable (IN_QUEUE: the 250 must precede the reply
 * to anything sent after the data) or the session closes.
 *
 * The socket is driven with two plain events rather than a bufferevent:
 * a persistent read event (its timeout is session.timeout, restarted by
 * every read) and a write event added only when the socket cannot take
 * every reply at once. A bufferevent adds and deletes its write event for
 * every batch of replies (two epoll_ctl calls per SMTP round trip) and
 * asks FIONREAD before every read; at thousands of messages a second
 * those were a third of the system calls.
 *
 * Bounds: command lines are at most SMTP_LINE_MAX bytes (longer ones are
 * skipped up to their end and refused); message data is kept only up to
 * the size limit; no more is read while IN_HIGH_WATER bytes wait unread
 * (TCP pushes back on the client), and processing stops while more than
 * OUT_HIGH_WATER bytes of replies wait for a client that does not read.
 *
 * Not here: TLS (STARTTLS, implicit TLS), AUTH, and so REQUIRETLS, which
 * RFC 8689 allows only over TLS; address rewriting; local delivery.
 */
#include "inbound/session.h"

#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "config/settings.h"
#include "inbound/received.h"
#include "inbound/smtp_body.h"
#include "inbound/smtp_parse.h"
#include "server/server.h"
#include "util/log.h"

#define IN_HIGH_WATER (256 * 1024)
#define OUT_HIGH_WATER (64 * 1024)
#define READ_SIZE (16 * 1024)
#define FLUSH_IOV 64
/* A body buffer grown past this is released after its message, so idle
 * sessions do not each hold the largest message they have seen. */
#define BODY_KEEP (1024 * 1024)
#define REPLY_MAX 512

#define R_LOCAL_ERROR "451 4.3.0 Local error; try again later"

/* Where the client is in a mail transaction. */
enum txn_state {
	TXN_CONNECTED, /* banner sent, no HELO/EHLO/LHLO yet */
	TXN_READY,     /* greeted, no transaction */
	TXN_MAIL,      /* MAIL accepted, no recipient yet */
	TXN_RCPT,      /* at least one recipient accepted */
	TXN_BDAT,      /* BDAT chunks being received */
	TXN_COUNT
};

/* What the next input bytes are. */
enum input_phase {
	IN_COMMAND, /* command lines */
	IN_DATA,    /* DATA bytes up to CRLF.CRLF */
	IN_BDAT,    /* the octets of a BDAT chunk */
	IN_QUEUE,   /* none: waiting for queue_submit's callback */
	IN_CLOSE,   /* none: the last reply is being flushed, then close */
};

#define NOT_IMPLEMENTED "502 5.5.1 Command not implemented"
#define NEED_HELO "503 5.5.1 Error: send HELO/EHLO first"
#define NEED_MAIL "503 5.5.1 Error: need MAIL command"
#define NO_RCPTS "554 5.5.1 Error: no valid recipients"

/*
 * The reply to a command in a state that does not allow it; NULL where it
 * is allowed. BDAT is refused only after its octets have been read, so
 * the chunk is never taken for commands.
 */
static const char *const refusals[SMTP_VERB_COUNT][TXN_COUNT] = {
	[SMTP_UNKNOWN] = { "500 5.5.1 Command unrecognized", "500 5.5.1 Command unrecognized",
			   "500 5.5.1 Command unrecognized", "500 5.5.1 Command unrecognized",
			   "500 5.5.1 Command unrecognized" },
	[SMTP_MAIL] = { NEED_HELO, NULL, "503 5.5.1 Error: nested MAIL command",
			"503 5.5.1 Error: nested MAIL command", "503 5.5.1 Error: nested MAIL command" },
	[SMTP_RCPT] = { NEED_MAIL, NEED_MAIL, NULL, NULL, "503 5.5.1 Error: RCPT after BDAT" },
	[SMTP_DATA] = { NEED_MAIL, NEED_MAIL, NO_RCPTS, NULL, "503 5.5.1 Error: DATA after BDAT" },
	[SMTP_BDAT] = { NEED_MAIL, NEED_MAIL, NO_RCPTS, NULL, NULL },
	[SMTP_EXPN] = { NOT_IMPLEMENTED, NOT_IMPLEMENTED, NOT_IMPLEMENTED, NOT_IMPLEMENTED,
			NOT_IMPLEMENTED },
	[SMTP_STARTTLS] = { NOT_IMPLEMENTED, NOT_IMPLEMENTED, NOT_IMPLEMENTED, NOT_IMPLEMENTED,
			    NOT_IMPLEMENTED },
	[SMTP_AUTH] = { NOT_IMPLEMENTED, NOT_IMPLEMENTED, NOT_IMPLEMENTED, NOT_IMPLEMENTED,
			NOT_IMPLEMENTED },
	[SMTP_ETRN] = { NOT_IMPLEMENTED, NOT_IMPLEMENTED, NOT_IMPLEMENTED, NOT_IMPLEMENTED,
			NOT_IMPLEMENTED },
	[SMTP_TURN] = { NOT_IMPLEMENTED, NOT_IMPLEMENTED, NOT_IMPLEMENTED, NOT_IMPLEMENTED,
			NOT_IMPLEMENTED },
};

struct session {
	struct session *prev, *next; /* in->sessions */
	struct inbound *in;
	const struct listener_info *li;
	int fd;
	struct event *ev_read;       /* persistent, with the session timeout */
	struct event *ev_write;      /* only while replies wait for socket space */
	struct evbuffer *in_buf, *out; /* bytes read, replies not yet sent */
	bool reading;                /* ev_read is added */
	char id[24];                 /* for logs and the Received id */

	enum txn_state state;
	enum input_phase input;
	bool processing;             /* inside session_process: do not re-enter */
	bool out_blocked;            /* stopped until the client reads its replies */
	bool discarding;             /* skipping the rest of an over-long line */
	size_t scanned;              /* input bytes known to hold no LF */

	unsigned ext;                /* SMTP_EXT_* offered by EHLO/LHLO; 0 after HELO */
	char helo[SMTP_HELO_MAX + 1];
	size_t helo_len;
	unsigned messages;           /* accepted in this session */
	unsigned received_max;       /* session.data.limits.received-headers */

	/* The transaction: the envelope being built and its limits. */
	struct message *msg;
	uint64_t size_limit;
	struct smtp_body body;
	struct strbuf data;          /* Received: header, then the message */
	unsigned msg_seq;            /* messages started, for the Received id */

	/* BDAT: the chunk being read. */
	uint64_t bdat_left;
	uint64_t bdat_size;
	bool bdat_last;
	const char *bdat_refusal;    /* read the chunk, then send this */

	/* Submitted, waiting for the queue: what the reply and log need. */
	size_t submit_rcpts;
	size_t submit_size;
	char submit_from[4 * SMTP_ADDR_MAX + 1]; /* log-escaped sender */

	struct timeval timeout;      /* session.timeout, for every read */
	struct rule_ctx rc;
	struct ipaddr remote;
	char remote_text[IPADDR_STRLEN];
	char local_text[IPADDR_STRLEN];
	char rcpt_lower[SMTP_ADDR_MAX + 1];
	char line[SMTP_LINE_MAX + 1];
};

static void session_process(struct session *s);
static void session_settle(struct session *s);
static void release(struct session *s);

/* ---- replies ---- */

static void reply(struct session *s, const char *text)
{
	evbuffer_add(s->out, text, strlen(text));
	evbuffer_add(s->out, "\r\n", 2);
}

static void replyf(struct session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void replyf(struct session *s, const char *fmt, ...)
{
	char buf[REPLY_MAX];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf) - 2, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n > sizeof(buf) - 3)
		n = (int)sizeof(buf) - 3;
	buf[n++] = '\r';
	buf[n++] = '\n';
	evbuffer_add(s->out, buf, (size_t)n);
}

/* The final reply to a message: LMTP gives one per accepted recipient
 * (RFC 2033 4.2), SMTP one. */
static void reply_message(struct session *s, size_t rcpts, const char *text)
{
	size_t n = s->li->lmtp ? rcpts : 1;

	for (size_t i = 0; i < n; i++)
		reply(s, text);
}

static const char *hostname(const struct session *s)
{
	return s->in->srv->hostname;
}

/* The last reply has been written: close once it has been sent. */
static void close_after_reply(struct session *s)
{
	s->input = IN_CLOSE;
}

/* ---- rules ---- */

static void set_var(struct session *s, enum rule_var v, const char *p, size_t len)
{
	s->rc.var[v].ptr = p;
	s->rc.var[v].len = len;
}

static const struct cfg_value *eval(const struct session *s, enum cfg_key key)
{
	return config_eval(s->in->srv->cfg, key, &s->rc);
}

static bool eval_bool(const struct session *s, enum cfg_key key)
{
	const struct cfg_value *v = eval(s, key);

	return v != NULL && !v->none && v->num != 0;
}

static int64_t eval_num(const struct session *s, enum cfg_key key)
{
	const struct cfg_value *v = eval(s, key);

	return v != NULL && !v->none ? v->num : 0;
}

/* sender and sender-domain from the envelope's lower-cased sender */
static void set_sender_vars(struct session *s, const char *lower)
{
	const char *at = strrchr(lower, '@');

	set_var(s, RULE_VAR_SENDER, lower, strlen(lower));
	set_var(s, RULE_VAR_SENDER_DOMAIN, at != NULL ? at + 1 : "", at != NULL ? strlen(at + 1) : 0);
}

static void set_rcpt_vars(struct session *s, const char *addr, size_t len)
{
	const char *at;

	for (size_t i = 0; i < len; i++) {
		char c = addr[i];

		s->rcpt_lower[i] = c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
	}
	s->rcpt_lower[len] = '\0';
	at = memrchr(s->rcpt_lower, '@', len);
	set_var(s, RULE_VAR_RCPT, s->rcpt_lower, len);
	set_var(s, RULE_VAR_RCPT_DOMAIN, at != NULL ? at + 1 : "",
		at != NULL ? len - (size_t)(at + 1 - s->rcpt_lower) : 0);
}

static void clear_txn_vars(struct session *s)
{
	set_var(s, RULE_VAR_SENDER, NULL, 0);
	set_var(s, RULE_VAR_SENDER_DOMAIN, NULL, 0);
	set_var(s, RULE_VAR_RCPT, NULL, 0);
	set_var(s, RULE_VAR_RCPT_DOMAIN, NULL, 0);
}

/* ---- transactions ---- */

/* Back to "greeted, no transaction": the envelope (if still ours) goes. */
static void txn_reset(struct session *s)
{
	message_free(s->msg);
	s->msg = NULL;
	clear_txn_vars(s);
	if (s->state != TXN_CONNECTED)
		s->state = TXN_READY;
	if (s->data.cap > BODY_KEEP)
		strbuf_free(&s->data);
}

/* After a transaction's final reply: on to the next command, unless the
 * server is stopping (RFC 5321 3.8: 421 may come unasked). */
static void txn_end(struct session *s)
{
	txn_reset(s);
	s->input = IN_COMMAND;
	if (s->in->stopping) {
		replyf(s, "421 4.3.2 %s Service shutting down", hostname(s));
		close_after_reply(s);
	}
}

/* DATA or the first BDAT: the Received field, then the bytes as they come. */
static void body_begin(struct session *s, bool dot)
{
	struct received_info ri = {
		.helo = s->helo,
		.helo_len = s->helo_len,
		.addr = &s->remote,
		.hostname = hostname(s),
		.protocol = s->li->lmtp ? "LMTP" : s->ext != 0 ? "ESMTP" : "SMTP",
		.when = time(NULL),
	};
	char id[sizeof(s->id) + 12];

	snprintf(id, sizeof(id), "%s.%u", s->id, ++s->msg_seq);
	ri.id = id;
	if (s->msg->n_rcpts == 1) {
		ri.rcpt = s->msg->rcpts[0].addr;
		ri.rcpt_len = s->msg->rcpts[0].addr_len;
	}
	strbuf_reset(&s->data);
	received_write(&s->data, &ri);
	smtp_body_begin(&s->body, &s->data, s->size_limit, dot,
			s->msg->body_type != MSG_BODY_BINARYMIME);
}

static void submit_done(struct session *s, int err, uint64_t id)
{
	if (err == 0) {
		char text[64];

		snprintf(text, sizeof(text), "250 2.0.0 Ok: queued as %016" PRIx64, id);
		reply_message(s, s->submit_rcpts, text);
		s->messages++;
		log_info("inbound %s: queued %016" PRIx64 " from=<%s> nrcpt=%zu size=%zu client=%s",
			 s->id, id, s->submit_from, s->submit_rcpts, s->submit_size, s->remote_text);
	} else if (err == ENOSPC || err == EDQUOT) {
		reply_message(s, s->submit_rcpts, "452 4.3.1 Insufficient system storage");
		log_warn("inbound %s: message from=<%s> deferred: %s", s->id, s->submit_from,
			 strerror(err));
	} else {
		reply_message(s, s->submit_rcpts, R_LOCAL_ERROR);
		log_warn("inbound %s: message from=<%s> not queued: %s", s->id, s->submit_from,
			 strerror(err));
	}
	txn_end(s);
}

static void submit_cb(void *arg, int err, uint64_t id)
{
	struct session *s = arg;

	submit_done(s, err, id);
	/* Called from inside queue_submit, the loop in session_process
	 * carries on by itself. */
	if (s->processing)
		return;
	session_process(s);
	session_settle(s);
}

/* The whole message has been read: refuse it, or hand it to the queue. */
static void message_end(struct session *s)
{
	struct message *msg = s->msg;
	struct message_body *mb;
	const char *refusal = NULL;
	int err;

	if (s->body.bare)
		refusal = "550 5.6.0 Message contains bare CR or LF";
	else if (smtp_body_oversize(&s->body))
		refusal = "552 5.3.4 Message size exceeds fixed maximum message size";
	else if (s->body.received > s->received_max)
		refusal = "554 5.4.6 Too many Received headers: mail loop";
	mb = refusal == NULL && !strbuf_failed(&s->data) ? message_body_new(s->data.len) : NULL;
	if (mb == NULL) {
		reply_message(s, msg->n_rcpts, refusal != NULL ? refusal : R_LOCAL_ERROR);
		txn_end(s);
		return;
	}
	memcpy(mb->data, s->data.data, s->data.len);
	s->submit_rcpts = msg->n_rcpts;
	s->submit_size = s->data.len;
	log_escape(msg->sender, strlen(msg->sender), s->submit_from, sizeof(s->submit_from));
	clear_txn_vars(s); /* they point into msg */
	s->msg = NULL;     /* the queue's now, whatever happens */
	s->input = IN_QUEUE;
	err = s->in->submit(s->in->srv->queue, msg, mb, submit_cb, s);
	if (err != 0)
		submit_done(s, err, 0);
}

/* ---- commands ---- */

static void cmd_hello(struct session *s, const struct smtp_cmd *c)
{
	const char *name, *err;
	size_t name_len;
	struct evbuffer *out = s->out;
	const char *lines[12];
	size_t n = 0;

	if ((c->verb == SMTP_LHLO) != s->li->lmtp) {
		reply(s, s->li->lmtp ? "500 5.5.1 Error: this is LMTP, use LHLO"
				     : "500 5.5.1 Command unrecognized");
		return;
	}
	err = smtp_parse_helo(c->arg, c->arg_len, &name, &name_len);
	if (err != NULL) {
		reply(s, err);
		return;
	}
	memcpy(s->helo, name, name_len);
	s->helo[name_len] = '\0';
	s->helo_len = name_len;
	/* RFC 5321 4.1.4: a new greeting resets any transaction. */
	s->state = TXN_READY;
	txn_reset(s);
	if (c->verb == SMTP_HELO) {
		s->ext = 0;
		replyf(s, "250 %s", hostname(s));
		return;
	}
	s->ext = SMTP_EXT_SIZE | SMTP_EXT_8BITMIME | SMTP_EXT_SMTPUTF8;
	if (eval_bool(s, CFG_SESSION_EXT_PIPELINING)) {
		s->ext |= SMTP_EXT_PIPELINING;
		lines[n++] = "PIPELINING";
	}
	lines[n++] = NULL; /* SIZE, printed below */
	lines[n++] = "8BITMIME";
	lines[n++] = "SMTPUTF8";
	lines[n++] = "ENHANCEDSTATUSCODES";
	if (eval_bool(s, CFG_SESSION_EXT_CHUNKING)) {
		s->ext |= SMTP_EXT_CHUNKING;
		lines[n++] = "CHUNKING";
	}
	if (eval_bool(s, CFG_SESSION_EXT_DSN)) {
		s->ext |= SMTP_EXT_DSN;
		lines[n++] = "DSN";
	}
	/* session.extensions.requiretls is honoured once inbound TLS exists:
	 * RFC 8689 4.1 offers REQUIRETLS only over TLS, which this session
	 * never is yet. */
	evbuffer_add_printf(out, "250-%s\r\n", hostname(s));
	for (size_t i = 0; i < n; i++) {
		char sep = i + 1 == n ? ' ' : '-';

		if (lines[i] == NULL)
			evbuffer_add_printf(out, "250%cSIZE %" PRId64 "\r\n", sep,
					    eval_num(s, CFG_SESSION_DATA_LIMITS_SIZE));
		else
			evbuffer_add_printf(out, "250%c%s\r\n", sep, lines[i]);
	}
}

static void cmd_mail(struct session *s, const struct smtp_cmd *c)
{
	struct smtp_mail m;
	const char *err = smtp_parse_mail(c->arg, c->arg_len, s->ext, &m);
	struct message *msg;

	if (err != NULL) {
		reply(s, err);
		return;
	}
	msg = message_new(m.addr, m.addr_len);
	if (msg == NULL || (m.envid != NULL && !message_set_string(&msg->envid, m.envid,
								   m.envid_len))) {
		message_free(msg);
		reply(s, R_LOCAL_ERROR);
		return;
	}
	msg->body_type = m.body;
	msg->ret = m.ret;
	msg->smtputf8 = m.smtputf8;
	msg->requiretls = m.requiretls;
	set_sender_vars(s, msg->sender_lower);
	/*
	 * The per-session message limit ends the session rather than refusing
	 * this one message with a 4xx: every later MAIL on this connection
	 * would be refused too, and 421 tells the client to reconnect, which
	 * is what the limit asks of it (and frees a connection slot).
	 */
	if (s->messages >= (uint64_t)eval_num(s, CFG_SESSION_DATA_LIMITS_MESSAGES)) {
		message_free(msg);
		clear_txn_vars(s);
		replyf(s, "421 4.7.0 %s Too many messages in this session", hostname(s));
		close_after_reply(s);
		return;
	}
	s->size_limit = (uint64_t)eval_num(s, CFG_SESSION_DATA_LIMITS_SIZE);
	if (m.has_size && m.size > s->size_limit) {
		message_free(msg);
		clear_txn_vars(s);
		reply(s, "552 5.3.4 Message size exceeds fixed maximum message size");
		return;
	}
	s->msg = msg;
	s->state = TXN_MAIL;
	reply(s, "250 2.1.0 Ok");
}

static void cmd_rcpt(struct session *s, const struct smtp_cmd *c)
{
	struct smtp_rcpt r;
	const char *err = smtp_parse_rcpt(c->arg, c->arg_len, s->ext, s->msg->smtputf8, &r);
	struct rcpt *rc;
	char *orcpt = NULL;

	if (err != NULL) {
		reply(s, err);
		return;
	}
	set_rcpt_vars(s, r.addr, r.addr_len);
	if (s->msg->n_rcpts >= (uint64_t)eval_num(s, CFG_SESSION_RCPT_MAX_RECIPIENTS)) {
		reply(s, "452 4.5.3 Too many recipients");
		return;
	}
	/* tern has no local domains: every recipient is relayed. */
	if (!eval_bool(s, CFG_SESSION_RCPT_RELAY)) {
		reply(s, "550 5.7.1 Relaying denied");
		return;
	}
	if (r.orcpt != NULL && !message_set_string(&orcpt, r.orcpt, r.orcpt_len)) {
		reply(s, R_LOCAL_ERROR);
		return;
	}
	rc = message_add_rcpt(s->msg, r.addr, r.addr_len);
	if (rc == NULL) {
		free(orcpt);
		reply(s, R_LOCAL_ERROR);
		return;
	}
	rc->orcpt = orcpt;
	rc->notify = r.notify;
	s->state = TXN_RCPT;
	reply(s, "250 2.1.5 Ok");
}

static void cmd_data(struct session *s, const struct smtp_cmd *c)
{
	if (c->arg_len != 0) {
		reply(s, "501 5.5.4 Syntax: DATA");
		return;
	}
	if (s->msg->body_type == MSG_BODY_BINARYMIME) {
		reply(s, "503 5.5.1 Error: BODY=BINARYMIME requires BDAT");
		return;
	}
	body_begin(s, true);
	s->input = IN_DATA;
	reply(s, "354 End data with <CR><LF>.<CR><LF>");
}

/* The state table is applied here, after the chunk (see refusals[]). */
static void cmd_bdat(struct session *s, const struct smtp_cmd *c)
{
	const char *err = smtp_parse_bdat(c->arg, c->arg_len, &s->bdat_size, &s->bdat_last);

	if (err != NULL) {
		reply(s, err);
		return;
	}
	s->bdat_left = s->bdat_size;
	s->input = IN_BDAT;
	if (!(s->ext & SMTP_EXT_CHUNKING))
		s->bdat_refusal = "503 5.5.1 Error: CHUNKING was not offered";
	else
		s->bdat_refusal = refusals[SMTP_BDAT][s->state];
	if (s->bdat_refusal == NULL && s->state == TXN_RCPT) {
		body_begin(s, false);
		s->state = TXN_BDAT;
	}
}

static void cmd_rset(struct session *s, const struct smtp_cmd *c)
{
	if (c->arg_len != 0) {
		reply(s, "501 5.5.4 Syntax: RSET");
		return;
	}
	txn_reset(s);
	reply(s, "250 2.0.0 Ok");
}

static void cmd_noop(struct session *s, const struct smtp_cmd *c)
{
	(void)c;
	reply(s, "250 2.0.0 Ok");
}

static void cmd_quit(struct session *s, const struct smtp_cmd *c)
{
	if (c->arg_len != 0) {
		reply(s, "501 5.5.4 Syntax: QUIT");
		return;
	}
	replyf(s, "221 2.0.0 %s Bye", hostname(s));
	close_after_reply(s);
}

static void cmd_vrfy(struct session *s, const struct smtp_cmd *c)
{
	if (c->arg_len == 0) {
		reply(s, "501 5.5.4 Syntax: VRFY address");
		return;
	}
	reply(s, "252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery");
}

static void cmd_help(struct session *s, const struct smtp_cmd *c)
{
	(void)c;
	reply(s, s->li->lmtp ? "214 2.0.0 Commands: LHLO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP"
			     : "214 2.0.0 Commands: HELO EHLO MAIL RCPT DATA BDAT RSET NOOP QUIT "
			       "VRFY HELP");
}

static void (*const handlers[SMTP_VERB_COUNT])(struct session *, const struct smtp_cmd *) = {
	[SMTP_HELO] = cmd_hello, [SMTP_EHLO] = cmd_hello, [SMTP_LHLO] = cmd_hello,
	[SMTP_MAIL] = cmd_mail, [SMTP_RCPT] = cmd_rcpt, [SMTP_DATA] = cmd_data,
	[SMTP_BDAT] = cmd_bdat, [SMTP_RSET] = cmd_rset, [SMTP_NOOP] = cmd_noop,
	[SMTP_QUIT] = cmd_quit, [SMTP_VRFY] = cmd_vrfy, [SMTP_HELP] = cmd_help,
};

static void dispatch(struct session *s, const char *line, size_t len)
{
	struct smtp_cmd c;
	const char *refusal;

	smtp_parse_command(line, len, &c);
	if (s->in->stopping && s->state <= TXN_READY && c.verb != SMTP_QUIT) {
		replyf(s, "421 4.3.2 %s Service shutting down", hostname(s));
		close_after_reply(s);
		return;
	}
	refusal = c.verb == SMTP_BDAT ? NULL : refusals[c.verb][s->state];
	if (refusal != NULL)
		reply(s, refusal);
	else
		handlers[c.verb](s, &c);
}

/* ---- input ---- */

/* The next command line into s->line (CRLF or LF cut); false when there
 * is no whole line yet. Over-long lines are refused and skipped. Only
 * bytes not scanned before are searched. */
static bool read_line(struct session *s, size_t *len)
{
	struct evbuffer *in = s->in_buf;

	for (;;) {
		size_t have = evbuffer_get_length(in), eol_len, n;
		struct evbuffer_ptr start, eol;

		eol.pos = -1;
		if (s->scanned < have &&
		    evbuffer_ptr_set(in, &start, s->scanned, EVBUFFER_PTR_SET) == 0)
			eol = evbuffer_search_eol(in, &start, &eol_len, EVBUFFER_EOL_LF);
		if (eol.pos < 0) {
			s->scanned = have;
			if (have >= SMTP_LINE_MAX || (s->discarding && have > 0)) {
				if (!s->discarding)
					reply(s, "500 5.5.2 Line too long");
				s->discarding = true;
				evbuffer_drain(in, have);
				s->scanned = 0;
			}
			return false;
		}
		n = (size_t)eol.pos;
		s->scanned = 0;
		if (s->discarding || n + 1 > SMTP_LINE_MAX) {
			if (!s->discarding)
				reply(s, "500 5.5.2 Line too long");
			s->discarding = false;
			evbuffer_drain(in, n + 1);
			continue;
		}
		evbuffer_remove(in, s->line, n + 1);
		if (n > 0 && s->line[n - 1] == '\r')
			n--;
		s->line[n] = '\0';
		*len = n;
		return true;
	}
}

/* DATA bytes; true when the message has ended. */
static bool read_data(struct session *s)
{
	struct evbuffer *in = s->in_buf;
	struct evbuffer_iovec v[16];

	while (!s->body.done && evbuffer_get_length(in) > 0) {
		int n = evbuffer_peek(in, -1, NULL, v, 16);
		size_t used = 0;

		for (int i = 0; i < n && i < 16 && !s->body.done; i++)
			used += smtp_body_feed(&s->body, v[i].iov_base, v[i].iov_len);
		evbuffer_drain(in, used);
	}
	return s->body.done;
}

/* BDAT chunk octets; true when the chunk is complete. */
static bool read_bdat(struct session *s)
{
	struct evbuffer *in = s->in_buf;
	struct evbuffer_iovec v[16];

	while (s->bdat_left > 0 && evbuffer_get_length(in) > 0) {
		int n = evbuffer_peek(in, -1, NULL, v, 16);
		size_t used = 0;

		for (int i = 0; i < n && i < 16 && s->bdat_left > 0; i++) {
			size_t take = v[i].iov_len < s->bdat_left ? v[i].iov_len : (size_t)s->bdat_left;

			if (s->bdat_refusal == NULL)
				smtp_body_feed(&s->body, v[i].iov_base, take);
			s->bdat_left -= take;
			used += take;
		}
		evbuffer_drain(in, used);
	}
	return s->bdat_left == 0;
}

static void bdat_end(struct session *s)
{
	s->input = IN_COMMAND;
	if (s->bdat_refusal != NULL) {
		reply(s, s->bdat_refusal);
		return;
	}
	if (s->bdat_last) {
		smtp_body_end(&s->body);
		message_end(s);
		return;
	}
	/* RFC 3030 4.2: a chunk that takes the message past the limit fails
	 * the transaction at once; later chunks meet "need MAIL". */
	if (smtp_body_oversize(&s->body)) {
		reply(s, "552 5.3.4 Message size exceeds fixed maximum message size");
		txn_end(s);
		return;
	}
	replyf(s, "250 2.0.0 Ok: %" PRIu64 " octets received", s->bdat_size);
}

static void session_process(struct session *s)
{
	struct evbuffer *out = s->out;
	size_t len;

	if (s->processing)
		return;
	s->processing = true;
	for (;;) {
		if (evbuffer_get_length(out) > OUT_HIGH_WATER) {
			s->out_blocked = true;
			break;
		}
		if (s->input == IN_COMMAND) {
			if (!read_line(s, &len))
				break;
			dispatch(s, s->line, len);
		} else if (s->input == IN_DATA) {
			if (!read_data(s))
				break;
			s->input = IN_COMMAND;
			message_end(s);
		} else if (s->input == IN_BDAT) {
			if (!read_bdat(s))
				break;
			bdat_end(s);
		} else {
			break;
		}
	}
	s->processing = false;
}

/* ---- events ---- */

/* Write what is pending, as far as the socket takes it; false when the
 * connection is broken. One sendmsg for every reply produced so far. */
static bool flush(struct session *s)
{
	while (evbuffer_get_length(s->out) > 0) {
		struct evbuffer_iovec v[FLUSH_IOV];
		struct iovec iov[FLUSH_IOV];
		struct msghdr mh = { .msg_iov = iov };
		int n = evbuffer_peek(s->out, -1, NULL, v, FLUSH_IOV);
		ssize_t sent;

		for (int i = 0; i < n && i < FLUSH_IOV; i++) {
			iov[i].iov_base = v[i].iov_base;
			iov[i].iov_len = v[i].iov_len;
		}
		mh.msg_iovlen = (size_t)(n < FLUSH_IOV ? n : FLUSH_IOV);
		sent = sendmsg(s->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (sent < 0)
			return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
		evbuffer_drain(s->out, (size_t)sent);
	}
	return true;
}

static const struct timeval *idle_timeout(const struct session *s)
{
	return s->timeout.tv_sec != 0 || s->timeout.tv_usec != 0 ? &s->timeout : NULL;
}

/*
 * The end of every event: send the replies, resume processing that waited
 * for the client to read them, decide whether to read on (not while the
 * input buffer is full: TCP then pushes back on the client), and close
 * once the last reply is out. s may be freed: callers return after this.
 */
static void session_settle(struct session *s)
{
	bool want_read;

	for (;;) {
		if (!flush(s)) {
			log_info("inbound %s: write: %s", s->id, strerror(errno));
			session_free(s);
			return;
		}
		if (!s->out_blocked || evbuffer_get_length(s->out) > OUT_HIGH_WATER / 2)
			break;
		s->out_blocked = false;
		session_process(s);
	}
	if (evbuffer_get_length(s->out) > 0) {
		if (!event_pending(s->ev_write, EV_WRITE, NULL))
			event_add(s->ev_write, idle_timeout(s));
	} else {
		if (s->input == IN_CLOSE) {
			session_free(s);
			return;
		}
		event_del(s->ev_write);
	}
	want_read = s->input != IN_CLOSE && evbuffer_get_length(s->in_buf) < IN_HIGH_WATER;
	if (want_read != s->reading) {
		if (want_read)
			event_add(s->ev_read, idle_timeout(s));
		else
			event_del(s->ev_read);
		s->reading = want_read;
	}
}

static void read_cb(evutil_socket_t fd, short what, void *arg)
{
	struct session *s = arg;
	struct evbuffer_iovec v[2];
	struct iovec iov[2];
	int nv;
	ssize_t n;

	if (what & EV_TIMEOUT) {
		/* While the queue has the message, the client waits for us. */
		if (s->input == IN_QUEUE)
			return;
		log_info("inbound %s: timeout", s->id);
		replyf(s, "421 4.4.2 %s Timeout", hostname(s));
		close_after_reply(s);
		session_settle(s);
		return;
	}
	nv = evbuffer_reserve_space(s->in_buf, READ_SIZE, v, 2);
	for (int i = 0; i < nv; i++) {
		iov[i].iov_base = v[i].iov_base;
		iov[i].iov_len = v[i].iov_len;
	}
	n = nv > 0 ? readv(fd, iov, nv) : -1;
	if (n <= 0) {
		evbuffer_commit_space(s->in_buf, v, 0);
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
			return;
		if (n < 0)
			log_info("inbound %s: read: %s", s->id, strerror(errno));
		session_free(s);
		return;
	}
	for (int i = 0; i < nv; i++) {
		v[i].iov_len = (size_t)n < v[i].iov_len ? (size_t)n : v[i].iov_len;
		n -= (ssize_t)v[i].iov_len;
	}
	evbuffer_commit_space(s->in_buf, v, nv);
	session_process(s);
	session_settle(s);
}

static void write_cb(evutil_socket_t fd, short what, void *arg)
{
	struct session *s = arg;

	(void)fd;
	if (what & EV_TIMEOUT) {
		log_info("inbound %s: timeout writing to the client", s->id);
		session_free(s);
		return;
	}
	session_settle(s);
}

/* ---- life cycle ---- */

static void addr_from_sockaddr(const struct sockaddr *sa, struct ipaddr *a, char *text,
			       size_t textlen)
{
	memset(a, 0, sizeof(*a));
	if (sa != NULL && sa->sa_family == AF_INET) {
		a->family = AF_INET;
		memcpy(a->bytes, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, 4);
	} else if (sa != NULL && sa->sa_family == AF_INET6) {
		a->family = AF_INET6;
		memcpy(a->bytes, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, 16);
	}
	if (a->family != 0)
		ipaddr_format(a, text, textlen);
	else
		snprintf(text, textlen, "local");
}

int session_start(struct inbound *in, const struct listener_info *li, int fd,
		  const struct sockaddr *peer, const struct sockaddr *local)
{
	const struct config *cfg = in->srv->cfg;
	struct session *s = calloc(1, sizeof(*s));
	struct ipaddr local_ip;
	int64_t timeout_ms;

	if (s == NULL) {
		close(fd);
		return -1;
	}
	s->fd = fd;
	s->in = in;
	s->li = li;
	s->in_buf = evbuffer_new();
	s->out = evbuffer_new();
	s->ev_read = event_new(in->srv->base, fd, EV_READ | EV_PERSIST, read_cb, s);
	s->ev_write = event_new(in->srv->base, fd, EV_WRITE | EV_PERSIST, write_cb, s);
	if (s->in_buf == NULL || s->out == NULL || s->ev_read == NULL || s->ev_write == NULL) {
		release(s);
		return -1;
	}
	snprintf(s->id, sizeof(s->id), "%012" PRIx64, in->next_session_id++);
	strbuf_init(&s->data);
	addr_from_sockaddr(peer, &s->remote, s->remote_text, sizeof(s->remote_text));
	addr_from_sockaddr(local, &local_ip, s->local_text, sizeof(s->local_text));
	s->rc.remote_ip = s->remote;
	s->rc.local_ip = local_ip;
	set_var(s, RULE_VAR_LISTENER, li->id, strlen(li->id));
	if (s->remote.family != 0)
		set_var(s, RULE_VAR_REMOTE_IP, s->remote_text, strlen(s->remote_text));
	if (local_ip.family != 0)
		set_var(s, RULE_VAR_LOCAL_IP, s->local_text, strlen(s->local_text));
	s->received_max = (unsigned)config_get(cfg, CFG_SESSION_DATA_LIMITS_RECEIVED_HEADERS)->num;
	timeout_ms = eval_num(s, CFG_SESSION_TIMEOUT);
	s->timeout.tv_sec = timeout_ms / 1000;
	s->timeout.tv_usec = (timeout_ms % 1000) * 1000;

	s->next = in->sessions;
	if (in->sessions != NULL)
		in->sessions->prev = s;
	in->sessions = s;
	in->n_sessions++;
	log_info("inbound %s: connect from %s listener=%s", s->id, s->remote_text, li->id);
	replyf(s, "220 %s %s", hostname(s), li->greeting);
	session_settle(s);
	return 0;
}

void session_stop(struct session *s)
{
	if (s->input == IN_COMMAND && s->state <= TXN_READY) {
		replyf(s, "421 4.3.2 %s Service shutting down", hostname(s));
		close_after_reply(s);
		session_settle(s);
	}
}

struct session *session_next(const struct session *s)
{
	return s->next;
}

/* What session_start allocated; the socket is closed. */
static void release(struct session *s)
{
	if (s->ev_read != NULL)
		event_free(s->ev_read);
	if (s->ev_write != NULL)
		event_free(s->ev_write);
	if (s->in_buf != NULL)
		evbuffer_free(s->in_buf);
	if (s->out != NULL)
		evbuffer_free(s->out);
	close(s->fd);
	message_free(s->msg);
	strbuf_free(&s->data);
	free(s);
}

void session_free(struct session *s)
{
	struct inbound *in = s->in;

	if (s->input == IN_QUEUE)
		in->forget(in->srv->queue, s);
	if (s->prev != NULL)
		s->prev->next = s->next;
	else
		in->sessions = s->next;
	if (s->next != NULL)
		s->next->prev = s->prev;
	in->n_sessions--;
	log_info("inbound %s: disconnect from %s messages=%u", s->id, s->remote_text, s->messages);
	release(s);
}
