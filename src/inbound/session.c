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
 * TLS (RFC 3207): STARTTLS is offered when the listener has a
 * certificate and the session is not under TLS yet. After its 220 has
 * been sent the session reads nothing in clear: whatever the client sent
 * after the STARTTLS line is dropped unread (a command injected there,
 * the CVE-2011-0411 class, must never be taken as sent under TLS), and
 * the handshake runs on the loop (IN_TLS_WAIT, then IN_HANDSHAKE) within
 * session.timeout in all. Once done, the session is as after the banner:
 * no greeting, no transaction, no AUTH. An implicit TLS listener starts
 * in IN_TLS_WAIT and sends the banner after the handshake. The bytes go
 * through conn_io.c, which hides whether they are encrypted.
 *
 * AUTH (RFC 4954): PLAIN and LOGIN (sasl.c) against session.auth.lookup,
 * offered only under TLS unless session.auth.allow-plain-text; the
 * client's responses are lines read in IN_AUTH. The identity becomes the
 * authenticated-as rule variable, so relaying is decided by the rule.
 * REQUIRETLS (RFC 8689) is offered only under TLS.
 *
 * Not here: address rewriting; local delivery; client certificates.
 */
#include "inbound/session.h"

#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "config/settings.h"
#include "config/lists.h"
#include "inbound/conn_io.h"
#include "inbound/received.h"
#include "inbound/sasl.h"
#include "inbound/smtp_body.h"
#include "inbound/smtp_parse.h"
#include "server/server.h"
#include "tls/server.h"
#include "tls/tls.h"
#include "util/log.h"

#define IN_HIGH_WATER (256 * 1024)
#define OUT_HIGH_WATER (64 * 1024)
#define READ_SIZE (16 * 1024)
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
	IN_AUTH,    /* a SASL response line of AUTH */
	IN_QUEUE,   /* none: waiting for queue_submit's callback */
	IN_TLS_WAIT, /* none: replies are flushed, then the handshake starts */
	IN_HANDSHAKE, /* none but the TLS handshake */
	IN_CLOSE,   /* none: the last reply is being flushed, then close */
};

/* Where an AUTH exchange is (IN_AUTH). */
enum auth_step {
	AUTH_IDLE,
	AUTH_PLAIN,      /* waiting for the PLAIN message */
	AUTH_LOGIN_USER, /* LOGIN: the user name */
	AUTH_LOGIN_PASS, /* LOGIN: the password */
};

/* session.auth.mechanisms, as bits of the words' indexes. */
#define MECH_PLAIN 0x1u
#define MECH_LOGIN 0x2u

#define NOT_IMPLEMENTED "502 5.5.1 Command not implemented"
#define NEED_HELO "503 5.5.1 Error: send HELO/EHLO first"
#define NEED_MAIL "503 5.5.1 Error: need MAIL command"
#define NO_RCPTS "554 5.5.1 Error: no valid recipients"
#define IN_TXN "503 5.5.1 Error: MAIL transaction in progress"

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
	[SMTP_STARTTLS] = { NEED_HELO, NULL, IN_TXN, IN_TXN, IN_TXN },
	[SMTP_AUTH] = { NEED_HELO, NULL, IN_TXN, IN_TXN, IN_TXN },
	[SMTP_ETRN] = { NOT_IMPLEMENTED, NOT_IMPLEMENTED, NOT_IMPLEMENTED, NOT_IMPLEMENTED,
			NOT_IMPLEMENTED },
	[SMTP_TURN] = { NOT_IMPLEMENTED, NOT_IMPLEMENTED, NOT_IMPLEMENTED, NOT_IMPLEMENTED,
			NOT_IMPLEMENTED },
};

struct session {
	struct session *prev, *next; /* in->sessions */
	struct inbound *in;
	const struct listener_info *li;
	struct conn_io io;           /* the socket, and TLS once started */
	struct event *ev_read;       /* persistent, with the session timeout */
	struct event *ev_write;      /* only while replies wait for socket space */
	struct evbuffer *in_buf, *out; /* bytes read, replies not yet sent */
	bool reading;                /* ev_read is added */
	bool read_wants_write;       /* TLS: the last read waits for writable */
	bool write_wants_read;       /* TLS: the last write waits for readable */
	struct timespec tls_deadline; /* the handshake's end, session.timeout after it began */
	char tls_desc[96];           /* "TLSv1.3 with cipher ...", for Received */
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

	/* AUTH: the exchange under way, and who the client is once done. */
	enum auth_step auth_step;
	unsigned auth_failures;       /* credentials refused in this session */
	const char *auth_mech;       /* "PLAIN" or "LOGIN", for logs */
	struct sasl_cred cred;       /* wiped after every exchange */
	char auth_id[SASL_FIELD_MAX + 1];
	size_t auth_id_len;          /* 0: not authenticated */
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

/* RFC 3848: ESMTP or LMTP, then S under TLS, A once authenticated;
 * plain SMTP after HELO. */
static const char *received_protocol(const struct session *s, char *buf, size_t len)
{
	if (!s->li->lmtp && s->ext == 0)
		return "SMTP";
	snprintf(buf, len, "%s%s%s", s->li->lmtp ? "LMTP" : "ESMTP", s->io.ssl != NULL ? "S" : "",
		 s->auth_id_len != 0 ? "A" : "");
	return buf;
}

/* DATA or the first BDAT: the Received field, then the bytes as they come. */
static void body_begin(struct session *s, bool dot)
{
	char proto[16];
	struct received_info ri = {
		.helo = s->helo,
		.helo_len = s->helo_len,
		.addr = &s->remote,
		.hostname = hostname(s),
		.protocol = received_protocol(s, proto, sizeof(proto)),
		.tls = s->io.ssl != NULL ? s->tls_desc : NULL,
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

/* The lookup list, when AUTH can succeed at all. */
static const struct cfg_list *auth_lookup(const struct session *s)
{
	const struct cfg_value *v = config_get(s->in->srv->cfg, CFG_SESSION_AUTH_LOOKUP);

	return v != NULL && !v->none ? v->list : NULL;
}

/* MECH_* of session.auth.mechanisms, in *order as configured ("PLAIN
 * LOGIN"); 0 when AUTH is not enabled (no mechanism or no lookup). */
static unsigned auth_mechs(const struct session *s, char *order, size_t orderlen)
{
	static const char *const names[] = { "PLAIN", "LOGIN" };
	const struct cfg_value *v = eval(s, CFG_SESSION_AUTH_MECHANISMS);
	unsigned mechs = 0;
	size_t used = 0;

	if (orderlen > 0)
		order[0] = '\0';
	if (v == NULL || v->none || auth_lookup(s) == NULL)
		return 0;
	for (size_t i = 0; i < v->n_items; i++) {
		int64_t k = v->items[i].num;

		if (k < 0 || k > 1 || (mechs & (1u << k)))
			continue;
		mechs |= 1u << k;
		if (used < orderlen)
			used += (size_t)snprintf(order + used, orderlen - used, "%s%s",
						 used > 0 ? " " : "", names[k]);
	}
	return mechs;
}

/* AUTH may be used now: enabled, and under TLS unless plain text is allowed. */
static bool auth_allowed(const struct session *s)
{
	return s->io.ssl != NULL ||
	       config_get(s->in->srv->cfg, CFG_SESSION_AUTH_ALLOW_PLAIN_TEXT)->num != 0;
}

static void cmd_hello(struct session *s, const struct smtp_cmd *c)
{
	const char *name, *err;
	size_t name_len;
	struct evbuffer *out = s->out;
	const char *lines[12];
	size_t n = 0;
	char auth_line[32] = "AUTH ";

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
	if (s->li->tls != NULL && s->io.ssl == NULL)
		lines[n++] = "STARTTLS";
	if (s->auth_id_len == 0 && auth_allowed(s) &&
	    auth_mechs(s, auth_line + 5, sizeof(auth_line) - 5) != 0)
		lines[n++] = auth_line;
	/* RFC 8689 2: REQUIRETLS only where the session itself is under TLS. */
	if (s->io.ssl != NULL && eval_bool(s, CFG_SESSION_EXT_REQUIRETLS)) {
		s->ext |= SMTP_EXT_REQUIRETLS;
		lines[n++] = "REQUIRETLS";
	}
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
	if (s->auth_id_len == 0 && eval_bool(s, CFG_SESSION_AUTH_REQUIRE)) {
		reply(s, "530 5.7.0 Authentication required");
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

static void cmd_starttls(struct session *s, const struct smtp_cmd *c)
{
	if (s->li->tls == NULL) {
		reply(s, NOT_IMPLEMENTED);
		return;
	}
	if (s->io.ssl != NULL) {
		reply(s, "503 5.5.1 Error: TLS already active");
		return;
	}
	if (c->arg_len != 0) {
		reply(s, "501 5.5.4 Syntax: STARTTLS");
		return;
	}
	reply(s, "220 2.0.0 Ready to start TLS");
	/* Anything after the STARTTLS line was sent in clear before the
	 * client could have seen our 220: drop it unread (CVE-2011-0411). */
	evbuffer_drain(s->in_buf, evbuffer_get_length(s->in_buf));
	s->scanned = 0;
	s->discarding = false;
	s->input = IN_TLS_WAIT;
}

/* ---- AUTH ---- */

/* tern's choice: credentials refused this many times in one session end
 * it (421), so that one connection cannot try passwords without end. */
#define AUTH_FAILURES_MAX 3

static void auth_done(struct session *s)
{
	sasl_cred_clear(&s->cred);
	s->auth_step = AUTH_IDLE;
	s->input = IN_COMMAND;
}

/* The exchange failed before the credentials were checked: reply and log. */
static void auth_fail(struct session *s, const char *text)
{
	reply(s, text);
	log_info("inbound %s: AUTH %s failed: %s client=%s", s->id, s->auth_mech, text,
		 s->remote_text);
	auth_done(s);
}

static void auth_verify(struct session *s)
{
	char user[4 * SASL_FIELD_MAX + 1];

	log_escape(s->cred.user, s->cred.user_len, user, sizeof(user));
	if (sasl_check(auth_lookup(s), &s->cred)) {
		memcpy(s->auth_id, s->cred.user, s->cred.user_len);
		s->auth_id[s->cred.user_len] = '\0';
		s->auth_id_len = s->cred.user_len;
		set_var(s, RULE_VAR_AUTHENTICATED_AS, s->auth_id, s->auth_id_len);
		reply(s, "235 2.7.0 Authentication successful");
		log_info("inbound %s: AUTH %s user=%s client=%s", s->id, s->auth_mech, user,
			 s->remote_text);
	} else if (++s->auth_failures >= AUTH_FAILURES_MAX) {
		replyf(s, "421 4.7.0 %s Too many failed authentication attempts", hostname(s));
		log_warn("inbound %s: AUTH %s failed: bad credentials user=%s client=%s; closing "
			 "after %u failures", s->id, s->auth_mech, user, s->remote_text,
			 s->auth_failures);
		auth_done(s);
		close_after_reply(s);
		return;
	} else {
		reply(s, "535 5.7.8 Authentication credentials invalid");
		log_warn("inbound %s: AUTH %s failed: bad credentials user=%s client=%s", s->id,
			 s->auth_mech, user, s->remote_text);
	}
	auth_done(s);
}

/* One client response (or the initial response) in the current step. */
static void auth_response(struct session *s, const char *line, size_t len)
{
	char buf[SMTP_LINE_MAX];
	size_t n = 0;
	const char *err = sasl_decode_response(line, len, buf, sizeof(buf), &n);

	if (err == NULL) {
		switch (s->auth_step) {
		case AUTH_PLAIN:
			err = sasl_plain_parse(buf, n, &s->cred);
			if (err == NULL)
				auth_verify(s);
			break;
		case AUTH_LOGIN_USER:
			err = sasl_login_field(buf, n, s->cred.user, &s->cred.user_len);
			if (err == NULL) {
				reply(s, "334 UGFzc3dvcmQ6"); /* "Password:" */
				s->auth_step = AUTH_LOGIN_PASS;
			}
			break;
		case AUTH_LOGIN_PASS:
			err = sasl_login_field(buf, n, s->cred.secret, &s->cred.secret_len);
			if (err == NULL)
				auth_verify(s);
			break;
		case AUTH_IDLE:
			break;
		}
	}
	if (err != NULL)
		auth_fail(s, err);
	explicit_bzero(buf, sizeof(buf));
}

static void cmd_auth(struct session *s, const struct smtp_cmd *c)
{
	char order[32];
	unsigned mechs = auth_mechs(s, order, sizeof(order));
	const char *sp = memchr(c->arg, ' ', c->arg_len);
	size_t mech_len = sp != NULL ? (size_t)(sp - c->arg) : c->arg_len;
	const char *ir = NULL;
	size_t ir_len = 0;

	if (mechs == 0) {
		reply(s, NOT_IMPLEMENTED);
		return;
	}
	if (s->ext == 0) {
		reply(s, "503 5.5.1 Error: send EHLO first");
		return;
	}
	if (s->auth_id_len != 0) {
		reply(s, "503 5.5.1 Error: already authenticated");
		return;
	}
	if (!auth_allowed(s)) {
		reply(s, "538 5.7.11 Encryption required for requested authentication mechanism");
		return;
	}
	if (mech_len == 5 && strncasecmp(c->arg, "PLAIN", 5) == 0 && (mechs & MECH_PLAIN)) {
		s->auth_step = AUTH_PLAIN;
		s->auth_mech = "PLAIN";
	} else if (mech_len == 5 && strncasecmp(c->arg, "LOGIN", 5) == 0 && (mechs & MECH_LOGIN)) {
		s->auth_step = AUTH_LOGIN_USER;
		s->auth_mech = "LOGIN";
	} else {
		reply(s, c->arg_len == 0 ? "501 5.5.4 Syntax: AUTH mechanism [initial-response]"
					 : "504 5.5.4 Unrecognized authentication type");
		return;
	}
	if (sp != NULL) {
		ir = sp + 1;
		ir_len = c->arg_len - mech_len - 1;
		while (ir_len > 0 && *ir == ' ')
			ir++, ir_len--;
	}
	s->input = IN_AUTH;
	if (ir_len > 0) {
		auth_response(s, ir, ir_len);
		explicit_bzero(s->line, sizeof(s->line)); /* c->arg pointed here */
	} else
		reply(s, s->auth_step == AUTH_PLAIN ? "334 " : "334 VXNlcm5hbWU6"); /* "Username:" */
}

static void (*const handlers[SMTP_VERB_COUNT])(struct session *, const struct smtp_cmd *) = {
	[SMTP_HELO] = cmd_hello, [SMTP_EHLO] = cmd_hello, [SMTP_LHLO] = cmd_hello,
	[SMTP_MAIL] = cmd_mail, [SMTP_RCPT] = cmd_rcpt, [SMTP_DATA] = cmd_data,
	[SMTP_BDAT] = cmd_bdat, [SMTP_RSET] = cmd_rset, [SMTP_NOOP] = cmd_noop,
	[SMTP_QUIT] = cmd_quit, [SMTP_VRFY] = cmd_vrfy, [SMTP_HELP] = cmd_help,
	[SMTP_STARTTLS] = cmd_starttls, [SMTP_AUTH] = cmd_auth,
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
		} else if (s->input == IN_AUTH) {
			if (!read_line(s, &len))
				break;
			auth_response(s, s->line, len);
			/* The line held a secret. */
			explicit_bzero(s->line, len);
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

static const struct timeval *idle_timeout(const struct session *s)
{
	return s->timeout.tv_sec != 0 || s->timeout.tv_usec != 0 ? &s->timeout : NULL;
}

/* ---- TLS ---- */

/* After the handshake: as after the banner (RFC 3207 4.2), nothing of
 * what the client said in clear is kept. */
static void tls_established(struct session *s)
{
	struct tls_info ti;

	conn_io_tls_info(&s->io, &ti);
	snprintf(s->tls_desc, sizeof(s->tls_desc), "%s with cipher %s", ti.protocol, ti.cipher);
	log_info("inbound %s: TLS %s:%s certificate=%s", s->id, ti.protocol, ti.cipher,
		 tls_server_id(s->li->tls));
	s->state = TXN_CONNECTED;
	txn_reset(s);
	s->ext = 0;
	s->helo[0] = '\0';
	s->helo_len = 0;
	s->auth_id_len = 0;
	set_var(s, RULE_VAR_AUTHENTICATED_AS, NULL, 0);
	s->input = IN_COMMAND;
	if (s->li->implicit_tls)
		replyf(s, "220 %s %s", hostname(s), s->li->greeting);
	/* From now on the read event's timeout is the idle one again. */
	event_add(s->ev_read, idle_timeout(s));
	s->reading = true;
}

/* One step of the handshake; false when it failed and s is freed. */
static bool tls_handshake(struct session *s)
{
	switch (conn_io_handshake(&s->io)) {
	case CONN_IO_OK:
		tls_established(s);
		return true;
	case CONN_IO_AGAIN:
		return true;
	default:
		log_info("inbound %s: %s client=%s", s->id, s->io.error, s->remote_text);
		session_free(s);
		return false;
	}
}

/* The replies before it are out: start the handshake. false when s is freed. */
static bool tls_begin(struct session *s)
{
	char err[256];
	struct ssl_st *ssl = tls_server_ssl_new(s->li->tls, err, sizeof(err));
	int64_t ms = s->timeout.tv_sec * 1000 + s->timeout.tv_usec / 1000;

	if (ssl == NULL) {
		log_warn("inbound %s: %s", s->id, err);
		session_free(s);
		return false;
	}
	conn_io_start_tls(&s->io, ssl);
	s->input = IN_HANDSHAKE;
	clock_gettime(CLOCK_MONOTONIC, &s->tls_deadline);
	s->tls_deadline.tv_sec += ms / 1000;
	s->tls_deadline.tv_nsec += (ms % 1000) * 1000000;
	if (s->tls_deadline.tv_nsec >= 1000000000) {
		s->tls_deadline.tv_sec++;
		s->tls_deadline.tv_nsec -= 1000000000;
	}
	return tls_handshake(s);
}

/* What is left of the handshake's time, for the read event. */
static struct timeval tls_time_left(const struct session *s)
{
	struct timespec now;
	struct timeval tv = { 0, 0 };
	int64_t left;

	clock_gettime(CLOCK_MONOTONIC, &now);
	left = (int64_t)(s->tls_deadline.tv_sec - now.tv_sec) * 1000000 +
	       (s->tls_deadline.tv_nsec - now.tv_nsec) / 1000;
	if (left > 0) {
		tv.tv_sec = left / 1000000;
		tv.tv_usec = left % 1000000;
	}
	return tv;
}

/*
 * The end of every event: send the replies, resume processing that waited
 * for the client to read them, start TLS once its 220 is out, decide
 * whether to read on (not while the input buffer is full: TCP then pushes
 * back on the client), and close once the last reply is out. s may be
 * freed: callers return after this.
 */
static void session_settle(struct session *s)
{
	bool want_read, want_write;

	for (;;) {
		enum conn_io_status st = conn_io_write(&s->io, s->out);

		if (st == CONN_IO_ERROR || st == CONN_IO_CLOSED) {
			log_info("inbound %s: %s", s->id,
				 st == CONN_IO_CLOSED ? "connection closed by the client" : s->io.error);
			session_free(s);
			return;
		}
		s->write_wants_read = st == CONN_IO_AGAIN && s->io.ssl != NULL && s->io.want_read;
		if (s->input == IN_TLS_WAIT && st == CONN_IO_OK) {
			if (!tls_begin(s))
				return;
			continue; /* done at once: an implicit TLS banner to send */
		}
		if (!s->out_blocked || evbuffer_get_length(s->out) > OUT_HIGH_WATER / 2)
			break;
		s->out_blocked = false;
		session_process(s);
	}
	if (s->input == IN_HANDSHAKE) {
		struct timeval left = tls_time_left(s);

		want_write = s->io.want_write;
		event_add(s->ev_read, &left);
		s->reading = true;
	} else {
		want_write = s->read_wants_write ||
			     (evbuffer_get_length(s->out) > 0 && !s->write_wants_read);
		if (evbuffer_get_length(s->out) == 0 && s->input == IN_CLOSE) {
			session_free(s);
			return;
		}
		want_read = (s->input != IN_CLOSE && s->input != IN_TLS_WAIT &&
			     evbuffer_get_length(s->in_buf) < IN_HIGH_WATER) ||
			    s->write_wants_read;
		if (want_read != s->reading) {
			if (want_read)
				event_add(s->ev_read, idle_timeout(s));
			else
				event_del(s->ev_read);
			s->reading = want_read;
		}
		/* Bytes OpenSSL holds make no read event. */
		if (want_read && s->input != IN_CLOSE && s->input != IN_TLS_WAIT &&
		    conn_io_pending(&s->io) > 0)
			event_active(s->ev_read, EV_READ, 0);
	}
	if (want_write) {
		if (!event_pending(s->ev_write, EV_WRITE, NULL))
			event_add(s->ev_write, idle_timeout(s));
	} else {
		event_del(s->ev_write);
	}
}

/* Read what the connection has, process it, settle. s may be freed. */
static void session_input(struct session *s)
{
	enum conn_io_status st;

	s->read_wants_write = false;
	do
		st = conn_io_read(&s->io, s->in_buf, READ_SIZE);
	while (st == CONN_IO_OK && conn_io_pending(&s->io) > 0 &&
	       evbuffer_get_length(s->in_buf) < IN_HIGH_WATER);
	if (st == CONN_IO_CLOSED || st == CONN_IO_ERROR) {
		if (st == CONN_IO_ERROR)
			log_info("inbound %s: %s", s->id, s->io.error);
		session_free(s);
		return;
	}
	s->read_wants_write = st == CONN_IO_AGAIN && s->io.ssl != NULL && s->io.want_write;
	session_process(s);
	session_settle(s);
}

static void read_cb(evutil_socket_t fd, short what, void *arg)
{
	struct session *s = arg;

	(void)fd;
	if (what & EV_TIMEOUT) {
		/* While the queue has the message, the client waits for us. */
		if (s->input == IN_QUEUE)
			return;
		if (s->input == IN_HANDSHAKE) {
			log_info("inbound %s: TLS handshake timed out client=%s", s->id,
				 s->remote_text);
			session_free(s);
			return;
		}
		log_info("inbound %s: timeout", s->id);
		replyf(s, "421 4.4.2 %s Timeout", hostname(s));
		close_after_reply(s);
		session_settle(s);
		return;
	}
	if (s->input == IN_HANDSHAKE) {
		if (tls_handshake(s))
			session_settle(s);
		return;
	}
	if (s->input == IN_CLOSE || s->input == IN_TLS_WAIT) {
		/* Only a write that waited for readable brings us here. */
		session_settle(s);
		return;
	}
	session_input(s);
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
	if (s->input == IN_HANDSHAKE) {
		if (tls_handshake(s))
			session_settle(s);
		return;
	}
	if (s->read_wants_write) {
		session_input(s);
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
	s->io.fd = fd;
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
	/* Implicit TLS: the banner comes after the handshake. */
	if (li->implicit_tls)
		s->input = IN_TLS_WAIT;
	else
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
	conn_io_close(&s->io);
	sasl_cred_clear(&s->cred);
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
