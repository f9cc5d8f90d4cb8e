/*
 * client.c - one outbound SMTP/LMTP connection as a state machine on the
 * event loop; see client.h.
 *
 * Two halves, as in OpenSMTPD: entering a state sends that state's
 * command; a reply, read in the current state, picks the next state. The
 * table states[] gives each state its name (for status texts), the stage
 * whose timeout applies and which a delivery_status records, what entering
 * it sends and what handles its reply.
 *
 * Pipelining (RFC 2920) is Postfix smtp_loop's pair of cursors over the
 * transaction's commands RSET?, MAIL, RCPT..., DATA|BDAT. The sender cursor
 * (send_pos) runs ahead: with PIPELINING the whole group is written at
 * once, without it one command at a time. The receiver cursor (the current
 * state, and rcpt_cur in RCPT) consumes one reply per command, in order.
 * Entering a transaction state writes whatever the sender has not yet
 * written up to that state, so lockstep and pipelining share every handler.
 *
 * TLS (RFC 3207): after the first EHLO, the policy in target.tls and the
 * server's STARTTLS keyword decide: ST_STARTTLS sends STARTTLS; on 220
 * the bufferevent is wrapped in a libevent OpenSSL filter (which then owns
 * the SSL and the plain bufferevent) and ST_TLS_HANDSHAKE waits for the
 * handshake; then the policy judges the certificate, and EHLO starts over
 * (parse_ehlo forgets the first reply's extensions). Implicit TLS wraps the
 * connection right after connect and reads the greeting over TLS. A
 * refused STARTTLS (4xx/5xx) leaves an opportunistic session in clear, as
 * Postfix does; a handshake that fails or stalls fails the connection
 * (tls_outcome TLS_FAILED), and the owner may connect again in clear.
 *
 * Invariants:
 * - One timer, re-armed on entering every state from that state's table
 *   entry: a timeout is always the current stage's own value. The one
 *   exception is TIMER_STAGE_SHARED: STARTTLS and the handshake after it
 *   share one timeouts.tls, as SPEC §3.4 says.
 * - The TLS outcome (tls_outcome) is decided once, at the first hello
 *   reply or at the handshake, and never changes after: TLS is started at
 *   most once per connection, however often a server offers STARTTLS.
 * - No reply is read in ST_TLS_HANDSHAKE: bytes that arrive with the end
 *   of the handshake wait in the buffer for the state that follows.
 * - Every command written gets its reply consumed before the transaction
 *   ends, unless the connection is closed.
 * - A transaction ends once (finish_txn), every recipient's status filled:
 *   each recipient is decided exactly once (RF_DECIDED), by its RCPT reply,
 *   the final reply, or whatever ends the connection.
 * - Owner callbacks come last on every path; after one returns the code
 *   looks at owner_gone and the connection before doing anything more.
 *   Owner callbacks are never made from inside client_connect or
 *   client_send: failures there are reported from a zero-delay event.
 * - The struct is freed only outside its own libevent callbacks (depth 0):
 *   client_free inside one closes at once and frees on the way out.
 * - Body bytes reach libevent by reference; each reference holds one
 *   message_body reference, dropped by libevent's cleanup call.
 *
 * What the owner keeps: a transaction's message, body and arrays stay
 * valid until its txn_done (the body's own references cover only bytes
 * libevent still holds after that). CLIENT_READY comes with why == NULL.
 * SIGPIPE must be ignored by the process (the server does at start-up):
 * libevent writes with writev().
 *
 * Not done here: choosing the TLS policy (route/tlspolicy.h) or falling
 * back to clear after a failed handshake (connector); a QUIT before
 * closing a connection whose certificate the policy refused (it is just
 * closed); closing idle connections (no timer runs while idle: the
 * connector decides how long to keep one); choosing addresses or source
 * addresses, reusing connections (connector); retry policy.
 */
#include "outbound/client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>

#include "outbound/reply.h"
#include "util/base64.h"
#include "util/strbuf.h"

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24 /* Linux 4.2; older headers lack it */
#endif

#define QUIT_TIMEOUT_MS 2000
/* A stage given no positive timeout still must not wait forever: the
 * configuration's default for most stages. */
#define FALLBACK_TIMEOUT_MS (5 * 60 * 1000)
/* Body slices shorter than this are copied: a reference costs a chain. */
#define BODY_COPY_MAX 512
/* AUTH user name and secret, each: keeps the AUTH PLAIN line short. */
#define AUTH_FIELD_MAX 255
/* The longest AUTH data: RFC 4616's NUL user NUL secret. */
#define AUTH_DATA_MAX (2 * AUTH_FIELD_MAX + 2)
/* How much the TLS layer encrypts ahead of the socket: without a bound
 * the whole body would be copied, encrypted, into the socket's buffer. */
#define TLS_WRITE_HIGH (64 * 1024)
#define TLS_WRITE_LOW (16 * 1024)

/* Setup states come before ST_IDLE: before_ready() relies on the order. */
enum state {
	ST_CONNECT,
	ST_GREETING,
	ST_EHLO,
	ST_LHLO,
	ST_HELO,
	ST_STARTTLS,
	ST_TLS_HANDSHAKE,
	ST_AUTH_PLAIN,
	ST_AUTH_LOGIN,      /* "AUTH LOGIN" sent, waiting for 334 */
	ST_AUTH_LOGIN_USER, /* user name sent, waiting for 334 */
	ST_AUTH_LOGIN_PASS, /* secret sent, waiting for 235 */
	ST_IDLE,
	ST_RSET,
	ST_MAIL,
	ST_RCPT,
	ST_DATA,
	ST_BDAT,
	ST_DOT,             /* body and "." sent: waiting for the final reply(ies) */
	ST_QUIT,
	ST_CLOSED,
	ST_COUNT
};

/* TIMER_STAGE_SHARED: the timer keeps running when the state before was
 * of the same stage, else it is armed as TIMER_STAGE. */
enum timer_kind { TIMER_STAGE, TIMER_STAGE_SHARED, TIMER_NONE, TIMER_QUIT };

/* What became of TLS on the connection; see client_tls_summary. */
enum tls_outcome {
	TLS_UNDECIDED,          /* before the first hello reply (or handshake) */
	TLS_ON,                 /* tls_info holds the handshake */
	TLS_OFF_DISABLED,       /* policy TLS_USE_NEVER */
	TLS_OFF_NOT_OFFERED,
	TLS_OFF_REFUSED,        /* STARTTLS answered tls_refused_code */
	TLS_OFF_AFTER_FAILURE,  /* TLS_USE_NEVER after a failed handshake */
	TLS_FAILED,             /* STARTTLS or the handshake failed or stalled */
};

enum deferred { DEFER_NONE, DEFER_ABORT, DEFER_TXN_DONE };

/* Per transaction recipient. */
#define RF_DECIDED  0x1u
#define RF_ACCEPTED 0x2u

struct client {
	struct event_base *base;
	struct client_callbacks cb;
	void *arg;

	/* The target, its strings copied: the owner's need not outlive us. */
	struct client_target target;
	char *host, *helo_name, *auth_user, *auth_secret, *tls_name;
	char peer_text[IPADDR_STRLEN];
	char where[400];              /* "host[ip]:port [from ip]", for connect errors */

	int fd;                       /* until the bufferevent owns it; else -1 */
	struct event *connect_ev;
	struct bufferevent *bev;      /* NULL once closed */
	struct event *timer;
	struct event *defer_ev;       /* zero-delay: reports what API calls found */
	enum deferred deferred;
	enum state deferred_was;
	struct delivery_status deferred_why;

	enum state state;
	struct reply reply;
	unsigned ext;                 /* CLIENT_EXT_* */
	bool auth_plain, auth_login;  /* mechanisms offered */
	uint64_t max_size;            /* SIZE limit; 0 = none announced */
	bool need_rset;               /* the server may still hold a transaction */
	enum tls_outcome tls_outcome;
	struct tls_info tls_info;     /* TLS_ON: the handshake */
	int tls_refused_code;         /* TLS_OFF_REFUSED: the reply code */

	/* The transaction in progress; NULL when none. */
	struct client_txn *txn;
	size_t *order;                /* txn recipients to send, in RCPT order */
	uint8_t *rflags;              /* RF_* per txn recipient; same allocation */
	size_t n_order;
	size_t send_pos;              /* sender cursor: see txn_pos() */
	size_t rcpt_cur;              /* receiver: index into order[] */
	size_t n_accepted;
	size_t finals_left;           /* replies still due after the body */
	bool pipelining, use_bdat, mail_ok, finals_ok;
	bool body_pending;            /* body bytes not yet handed to the kernel */

	unsigned depth;               /* libevent callbacks of ours on the stack */
	bool in_api;                  /* inside client_connect/client_send */
	bool owner_gone;              /* client_free/client_quit: no callbacks */
	bool free_pending;
};

typedef bool send_fn(struct client *c);
typedef void reply_fn(struct client *c, const struct reply *r);

static send_fn send_ehlo, send_lhlo, send_helo, send_starttls, send_auth_plain, send_auth_login,
	send_login_user, send_login_pass, send_txn, send_body, send_quit;
static reply_fn on_greeting, on_ehlo, on_helo, on_starttls, on_auth_challenge, on_auth_done,
	on_idle_reply, on_rset, on_mail, on_rcpt, on_data, on_final, on_quit;

/*
 * What each state is. The name goes into status texts ("waiting for the
 * MAIL FROM reply"); stage picks target->timeout_ms[] and is the stage a
 * failure in that state is recorded with.
 */
static const struct state_info {
	const char *name;
	enum client_stage stage;
	enum timer_kind timer;
	send_fn *send;
	reply_fn *on_reply;
} states[ST_COUNT] = {
	[ST_CONNECT] = { "connect", STAGE_CONNECT, TIMER_STAGE, NULL, NULL },
	[ST_GREETING] = { "greeting", STAGE_GREETING, TIMER_STAGE, NULL, on_greeting },
	[ST_EHLO] = { "EHLO", STAGE_EHLO, TIMER_STAGE, send_ehlo, on_ehlo },
	[ST_LHLO] = { "LHLO", STAGE_EHLO, TIMER_STAGE, send_lhlo, on_ehlo },
	[ST_HELO] = { "HELO", STAGE_EHLO, TIMER_STAGE, send_helo, on_helo },
	[ST_STARTTLS] = { "STARTTLS", STAGE_TLS, TIMER_STAGE, send_starttls, on_starttls },
	/* Entered after STARTTLS's 220 (shared timer) or right after connect. */
	[ST_TLS_HANDSHAKE] = { "TLS handshake", STAGE_TLS, TIMER_STAGE_SHARED, NULL, NULL },
	[ST_AUTH_PLAIN] = { "AUTH", STAGE_EHLO, TIMER_STAGE, send_auth_plain, on_auth_done },
	[ST_AUTH_LOGIN] = { "AUTH", STAGE_EHLO, TIMER_STAGE, send_auth_login, on_auth_challenge },
	[ST_AUTH_LOGIN_USER] = { "AUTH", STAGE_EHLO, TIMER_STAGE, send_login_user, on_auth_challenge },
	[ST_AUTH_LOGIN_PASS] = { "AUTH", STAGE_EHLO, TIMER_STAGE, send_login_pass, on_auth_done },
	/* Idle: the stage a dropped idle connection is recorded with is the
	 * one that would have come next. */
	[ST_IDLE] = { "idle", STAGE_MAIL_FROM, TIMER_NONE, NULL, on_idle_reply },
	[ST_RSET] = { "RSET", STAGE_MAIL_FROM, TIMER_STAGE, send_txn, on_rset },
	[ST_MAIL] = { "MAIL FROM", STAGE_MAIL_FROM, TIMER_STAGE, send_txn, on_mail },
	[ST_RCPT] = { "RCPT TO", STAGE_RCPT_TO, TIMER_STAGE, send_txn, on_rcpt },
	[ST_DATA] = { "DATA", STAGE_DATA, TIMER_STAGE, send_txn, on_data },
	[ST_BDAT] = { "BDAT", STAGE_DATA, TIMER_STAGE, send_txn, on_final },
	[ST_DOT] = { "end of DATA", STAGE_DATA, TIMER_STAGE, send_body, on_final },
	[ST_QUIT] = { "QUIT", STAGE_MAIL_FROM, TIMER_QUIT, send_quit, on_quit },
	[ST_CLOSED] = { "closed", STAGE_MAIL_FROM, TIMER_NONE, NULL, NULL },
};

static void enter(struct client *c, enum state st);
static void start_tls(struct client *c);
static void tls_established(struct client *c);

/* ---- life ---- */

/* The states before ST_IDLE in the enum are the session's setup. */
static bool before_ready(enum state st)
{
	return st < ST_IDLE;
}

static void close_conn(struct client *c)
{
	if (c->connect_ev != NULL) {
		event_free(c->connect_ev);
		c->connect_ev = NULL;
	}
	if (c->fd >= 0) {
		close(c->fd);
		c->fd = -1;
	}
	if (c->bev != NULL) {
		/* Frees the unsent output too: libevent then drops the body
		 * references through body_release. */
		bufferevent_free(c->bev);
		c->bev = NULL;
	}
	evtimer_del(c->timer);
	c->state = ST_CLOSED;
	c->body_pending = false;
}

static void destroy(struct client *c)
{
	close_conn(c);
	event_free(c->timer);
	event_free(c->defer_ev);
	reply_free(&c->reply);
	free(c->order);
	free(c->host);
	free(c->helo_name);
	free(c->auth_user);
	free(c->tls_name);
	if (c->auth_secret != NULL) {
		explicit_bzero(c->auth_secret, strlen(c->auth_secret));
		free(c->auth_secret);
	}
	free(c);
}

/* The owner is done with c: close, and free now or on the way out of the
 * callback we are in. */
static void release(struct client *c)
{
	close_conn(c);
	c->owner_gone = true;
	if (c->depth > 0)
		c->free_pending = true;
	else
		destroy(c);
}

static void cb_enter(struct client *c)
{
	c->depth++;
}

static void cb_leave(struct client *c)
{
	if (--c->depth == 0 && c->free_pending)
		destroy(c);
}

static void notify(struct client *c, enum client_event ev, const struct delivery_status *why)
{
	if (!c->owner_gone)
		c->cb.event(c->arg, c, ev, why);
}

static void defer(struct client *c, enum deferred what)
{
	c->deferred = what;
	event_active(c->defer_ev, EV_TIMEOUT, 1);
}

/* ---- statuses ---- */

static enum ds_class class_of(int code)
{
	switch (code / 100) {
	case 2: return DS_OK;
	case 5: return DS_PERM;
	default: return DS_TEMP;
	}
}

static void status_from_reply(struct delivery_status *ds, const struct reply *r,
			      enum client_stage stage)
{
	ds->cls = class_of(r->code);
	ds->stage = stage;
	ds->code = r->code;
	ds->remote = 1;
	if (r->enhanced[0] != '\0')
		snprintf(ds->enhanced, sizeof(ds->enhanced), "%s", r->enhanced);
	else
		snprintf(ds->enhanced, sizeof(ds->enhanced), "%c.0.0",
			 ds->cls == DS_OK ? '2' : ds->cls == DS_PERM ? '5' : '4');
	reply_join_text(r, ds->text, sizeof(ds->text));
}

static int64_t stage_timeout_ms(const struct client *c, enum client_stage stage)
{
	int64_t ms = c->target.timeout_ms[stage];

	return ms > 0 ? ms : FALLBACK_TIMEOUT_MS;
}

/* ---- the transaction's end ---- */

static void decide(struct client *c, size_t i, const struct delivery_status *ds)
{
	c->txn->results[i] = *ds;
	c->rflags[i] |= RF_DECIDED;
}

static void decide_undecided(struct client *c, const struct delivery_status *ds)
{
	if (c->rflags == NULL)
		return; /* a transaction refused whole: all decided already */
	for (size_t i = 0; i < c->txn->n_rcpts; i++)
		if (!(c->rflags[i] & RF_DECIDED))
			decide(c, i, ds);
}

static void finish_txn(struct client *c)
{
	struct client_txn *txn = c->txn;

	c->txn = NULL;
	free(c->order);
	c->order = NULL;
	c->rflags = NULL;
	if (c->deferred == DEFER_TXN_DONE) {
		event_del(c->defer_ev);
		c->deferred = DEFER_NONE;
	}
	if (c->bev != NULL)
		enter(c, ST_IDLE);
	if (!c->owner_gone)
		c->cb.txn_done(c->arg, c, txn);
}

/* Tell the owner the connection is over: FAILED before READY, else the
 * transaction's undecided recipients, then CLOSED. */
static void report_end(struct client *c, enum state was, const struct delivery_status *why)
{
	if (before_ready(was)) {
		notify(c, CLIENT_FAILED, why);
		return;
	}
	if (c->txn != NULL) {
		decide_undecided(c, why);
		finish_txn(c);
		if (c->owner_gone)
			return;
	}
	notify(c, CLIENT_CLOSED, why);
}

/* Every way a connection ends early: timeout, loss, 421, protocol error. */
static void abort_session(struct client *c, const struct delivery_status *why)
{
	enum state was = c->state;

	close_conn(c);
	if (c->owner_gone) {
		release(c); /* quitting: nobody to tell */
		return;
	}
	if (c->in_api) {
		c->deferred_why = *why;
		c->deferred_was = was;
		defer(c, DEFER_ABORT);
		return;
	}
	report_end(c, was, why);
}

static void fail_local(struct client *c, enum client_stage stage, const char *enhanced,
		       const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void fail_local(struct client *c, enum client_stage stage, const char *enhanced,
		       const char *fmt, ...)
{
	struct delivery_status ds;
	va_list ap;

	ds_set_local(&ds, DS_TEMP, stage, enhanced, "%s", "");
	va_start(ap, fmt);
	vsnprintf(ds.text, sizeof(ds.text), fmt, ap);
	va_end(ap);
	abort_session(c, &ds);
}

/* A reply that makes no sense where it came: temporary, and the session
 * is out of step, so it ends. */
static void fail_unexpected(struct client *c, const struct reply *r)
{
	struct delivery_status ds;
	char text[sizeof(ds.text)];

	reply_join_text(r, text, sizeof(text));
	ds_set_local(&ds, DS_TEMP, states[c->state].stage, "4.5.0", "unexpected reply (%s): %d %s",
		     states[c->state].name, r->code, text);
	ds.code = r->code;
	abort_session(c, &ds);
}

/* A 4xx/5xx that ends the session, with the server's own status. */
static void fail_reply(struct client *c, const struct reply *r)
{
	struct delivery_status ds;

	if (r->code / 100 != 4 && r->code / 100 != 5) {
		fail_unexpected(c, r);
		return;
	}
	status_from_reply(&ds, r, states[c->state].stage);
	abort_session(c, &ds);
}

/* ---- writing ---- */

static bool put_line(struct client *c, const char *verb, const char *arg)
{
	struct evbuffer *out = bufferevent_get_output(c->bev);

	if (arg == NULL)
		return evbuffer_add_printf(out, "%s\r\n", verb) >= 0;
	return evbuffer_add_printf(out, "%s %s\r\n", verb, arg) >= 0;
}

/* sb's text and CRLF as one line on the output; false when out of memory. */
static bool put_line_buf(struct client *c, struct strbuf *sb)
{
	strbuf_append(sb, "\r\n", 2);
	return !strbuf_failed(sb) &&
	       evbuffer_add(bufferevent_get_output(c->bev), sb->data, sb->len) == 0;
}

/* Envelope text goes into command lines verbatim: it must not carry a
 * line break (or any control character) that would end the line early. */
static bool clean_text(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)s[i];

		if (ch < 0x20 || ch == 0x7f)
			return false;
	}
	return true;
}

/* xtext (RFC 3461 4): printable ASCII without spaces. */
static bool clean_xtext(const char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f)
			return false;
	return true;
}

/* Base64 of n bytes into out (4 * ((n + 2) / 3) bytes); returns that length. */
/* "PREFIX base64(data)" as one line (prefix at most 15 bytes, n at most
 * AUTH_DATA_MAX). Built on the stack and wiped after: it carries the secret. */
static bool put_base64(struct client *c, const char *prefix, const unsigned char *data, size_t n)
{
	char line[16 + BASE64_ENCODED_LEN(AUTH_DATA_MAX) + 2]; /* the NUL falls where CR goes */
	size_t o = strlen(prefix);
	bool ok;

	memcpy(line, prefix, o);
	o += base64_encode(data, n, line + o);
	line[o++] = '\r';
	line[o++] = '\n';
	ok = evbuffer_add(bufferevent_get_output(c->bev), line, o) == 0;
	explicit_bzero(line, sizeof(line));
	return ok;
}

static bool send_ehlo(struct client *c)
{
	return put_line(c, "EHLO", c->helo_name);
}

static bool send_lhlo(struct client *c)
{
	return put_line(c, "LHLO", c->helo_name);
}

static bool send_helo(struct client *c)
{
	return put_line(c, "HELO", c->helo_name);
}

static bool send_auth_plain(struct client *c)
{
	/* RFC 4616: authzid (empty) NUL authcid NUL passwd, as the initial
	 * response (RFC 4954). Both fields were bounded at connect. */
	unsigned char raw[AUTH_DATA_MAX];
	size_t ul = strlen(c->auth_user), sl = strlen(c->auth_secret), n = 0;
	bool ok;

	raw[n++] = '\0';
	memcpy(raw + n, c->auth_user, ul);
	n += ul;
	raw[n++] = '\0';
	memcpy(raw + n, c->auth_secret, sl);
	n += sl;
	ok = put_base64(c, "AUTH PLAIN ", raw, n);
	explicit_bzero(raw, sizeof(raw));
	return ok;
}

static bool send_auth_login(struct client *c)
{
	return put_line(c, "AUTH LOGIN", NULL);
}

static bool send_login_user(struct client *c)
{
	return put_base64(c, "", (const unsigned char *)c->auth_user, strlen(c->auth_user));
}

static bool send_login_pass(struct client *c)
{
	return put_base64(c, "", (const unsigned char *)c->auth_secret, strlen(c->auth_secret));
}

static bool send_starttls(struct client *c)
{
	return put_line(c, "STARTTLS", NULL);
}

static bool send_quit(struct client *c)
{
	return put_line(c, "QUIT", NULL);
}

static bool write_mail(struct client *c)
{
	const struct message *m = c->txn->msg;
	struct strbuf sb;
	bool ok;

	strbuf_init(&sb);
	strbuf_printf(&sb, "MAIL FROM:<%s>", m->sender);
	if (c->ext & CLIENT_EXT_SIZE)
		strbuf_printf(&sb, " SIZE=%llu", (unsigned long long)m->size);
	/* BINARYMIME is never accepted inbound, so 8BITMIME is the widest. */
	if (m->body_type != MSG_BODY_7BIT && (c->ext & CLIENT_EXT_8BITMIME))
		strbuf_puts(&sb, " BODY=8BITMIME");
	if (m->smtputf8)
		strbuf_puts(&sb, " SMTPUTF8"); /* offered: checked in client_send */
	if (m->requiretls)
		strbuf_puts(&sb, " REQUIRETLS"); /* likewise */
	if (c->ext & CLIENT_EXT_DSN) {
		if (m->ret == MSG_RET_FULL)
			strbuf_puts(&sb, " RET=FULL");
		else if (m->ret == MSG_RET_HDRS)
			strbuf_puts(&sb, " RET=HDRS");
		if (m->envid != NULL)
			strbuf_printf(&sb, " ENVID=%s", m->envid);
	}
	ok = put_line_buf(c, &sb);
	strbuf_free(&sb);
	return ok;
}

static bool write_rcpt(struct client *c, size_t i)
{
	const struct rcpt *r = &c->txn->msg->rcpts[c->txn->rcpt_index[i]];
	struct strbuf sb;
	bool ok;

	strbuf_init(&sb);
	strbuf_puts(&sb, "RCPT TO:<");
	strbuf_append(&sb, r->addr, r->addr_len);
	strbuf_putc(&sb, '>');
	if ((c->ext & CLIENT_EXT_DSN) && r->notify != 0) {
		static const struct { unsigned bit; const char *word; } kinds[] = {
			{ RCPT_NOTIFY_SUCCESS, "SUCCESS" },
			{ RCPT_NOTIFY_FAILURE, "FAILURE" },
			{ RCPT_NOTIFY_DELAY, "DELAY" },
		};
		const char *sep = " NOTIFY=";

		/* RFC 3461 4.1: NEVER stands alone. */
		if (r->notify & RCPT_NOTIFY_NEVER) {
			strbuf_puts(&sb, " NOTIFY=NEVER");
		} else {
			for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
				if (r->notify & kinds[k].bit) {
					strbuf_puts(&sb, sep);
					strbuf_puts(&sb, kinds[k].word);
					sep = ",";
				}
			}
		}
	}
	if ((c->ext & CLIENT_EXT_DSN) && r->orcpt != NULL)
		strbuf_printf(&sb, " ORCPT=%s", r->orcpt);
	ok = put_line_buf(c, &sb);
	strbuf_free(&sb);
	return ok;
}

/* libevent is done with a slice of the body. */
static void body_release(const void *data, size_t len, void *extra)
{
	(void)data;
	(void)len;
	message_body_unref(extra);
}

/* Queue body bytes [off, off+len): by reference, or copied when short. */
static bool body_slice(struct evbuffer *out, struct message_body *b, size_t off, size_t len)
{
	if (len == 0)
		return true;
	if (len < BODY_COPY_MAX)
		return evbuffer_add(out, b->data + off, len) == 0;
	message_body_ref(b);
	if (evbuffer_add_reference(out, b->data + off, len, body_release, b) == 0)
		return true;
	message_body_unref(b); /* libevent calls no cleanup when adding fails */
	return false;
}

static bool body_ends_crlf(const struct message_body *b)
{
	return b->len >= 2 && b->data[b->len - 2] == '\r' && b->data[b->len - 1] == '\n';
}

/*
 * The body for which a transaction holds a const pointer: only its
 * reference count changes, which is bookkeeping of the single event-loop
 * thread, not the message.
 */
static struct message_body *txn_body(struct client *c)
{
	return (struct message_body *)c->txn->body;
}

static bool write_bdat(struct client *c)
{
	struct message_body *b = txn_body(c);
	struct evbuffer *out = bufferevent_get_output(c->bev);
	bool crlf = b->len > 0 && !body_ends_crlf(b);

	/* One chunk, no stuffing (RFC 3030): its length is exact. */
	c->body_pending = true;
	return evbuffer_add_printf(out, "BDAT %zu LAST\r\n", b->len + (crlf ? 2 : 0)) >= 0 &&
	       body_slice(out, b, 0, b->len) && (!crlf || evbuffer_add(out, "\r\n", 2) == 0);
}

/* Entering ST_DOT (after 354): the dot-stuffed body, then ".". */
static bool send_body(struct client *c)
{
	struct message_body *b = txn_body(c);
	struct evbuffer *out = bufferevent_get_output(c->bev);
	size_t seg = 0, line = 0;
	const char *nl;
	bool ok = true;

	c->body_pending = true;
	if (c->n_accepted == 0) /* a 354 with no recipient (pipelined): empty message */
		return evbuffer_add(out, ".\r\n", 3) == 0;
	/*
	 * RFC 5321 4.5.2: a line starting with '.' gets one more. Slices
	 * overlap at each such dot, so it goes out twice without a copy. Any
	 * LF starts a line here, not only CRLF: a server that ends lines at a
	 * bare LF must never see an unstuffed "\n.\r\n".
	 */
	while (ok && line < b->len) {
		if (b->data[line] == '.') {
			ok = body_slice(out, b, seg, line + 1 - seg);
			seg = line;
		}
		nl = memchr(b->data + line, '\n', b->len - line);
		if (nl == NULL)
			break;
		line = (size_t)(nl - b->data) + 1;
	}
	ok = ok && body_slice(out, b, seg, b->len - seg);
	if (ok && b->len > 0 && !body_ends_crlf(b))
		ok = evbuffer_add(out, "\r\n", 2) == 0;
	return ok && evbuffer_add(out, ".\r\n", 3) == 0;
}

/*
 * Sender cursor positions: 0 RSET, 1 MAIL, 2.. RCPT order[pos - 2], then
 * DATA or BDAT (with its chunk) at 2 + n_order.
 */
static size_t txn_end_pos(const struct client *c)
{
	return 2 + c->n_order;
}

static bool write_pos(struct client *c, size_t pos)
{
	if (pos == 0)
		return put_line(c, "RSET", NULL);
	if (pos == 1)
		return write_mail(c);
	if (pos < txn_end_pos(c))
		return write_rcpt(c, c->order[pos - 2]);
	return c->use_bdat ? write_bdat(c) : put_line(c, "DATA", NULL);
}

static bool send_upto(struct client *c, size_t pos)
{
	while (c->send_pos <= pos)
		if (!write_pos(c, c->send_pos++))
			return false;
	return true;
}

/* Entering a transaction state: write what the sender has not yet. */
static bool send_txn(struct client *c)
{
	switch (c->state) {
	case ST_RSET: return send_upto(c, 0);
	case ST_MAIL: return send_upto(c, 1);
	case ST_RCPT: return send_upto(c, 2 + c->rcpt_cur);
	default: return send_upto(c, txn_end_pos(c));
	}
}

static void arm_timer(struct client *c)
{
	const struct state_info *si = &states[c->state];
	int64_t ms;
	struct timeval tv;

	switch (si->timer) {
	case TIMER_NONE:
		evtimer_del(c->timer);
		return;
	case TIMER_QUIT:
		ms = QUIT_TIMEOUT_MS;
		break;
	case TIMER_STAGE:
	case TIMER_STAGE_SHARED:
	default:
		ms = stage_timeout_ms(c, si->stage);
		break;
	}
	tv.tv_sec = (time_t)(ms / 1000);
	tv.tv_usec = (suseconds_t)(ms % 1000) * 1000;
	evtimer_add(c->timer, &tv);
}

static void enter(struct client *c, enum state st)
{
	enum client_stage was = states[c->state].stage;

	c->state = st;
	if (states[st].send != NULL && !states[st].send(c)) {
		fail_local(c, states[st].stage, "4.3.0", "out of memory writing %s", states[st].name);
		return;
	}
	if (states[st].timer != TIMER_STAGE_SHARED || states[st].stage != was)
		arm_timer(c);
}

/* ---- replies: session setup ---- */

static void ready(struct client *c)
{
	enter(c, ST_IDLE);
	notify(c, CLIENT_READY, NULL);
}

static void on_greeting(struct client *c, const struct reply *r)
{
	if (r->code == 220)
		enter(c, c->target.lmtp ? ST_LHLO : ST_EHLO);
	else
		fail_reply(c, r);
}

static bool word_is(const char *s, size_t len, const char *word)
{
	return strlen(word) == len && strncasecmp(s, word, len) == 0;
}

static void parse_auth_mechs(struct client *c, const char *s, size_t len)
{
	size_t i = 0, start;

	while (i < len) {
		while (i < len && s[i] == ' ')
			i++;
		start = i;
		while (i < len && s[i] != ' ')
			i++;
		if (word_is(s + start, i - start, "PLAIN"))
			c->auth_plain = true;
		else if (word_is(s + start, i - start, "LOGIN"))
			c->auth_login = true;
	}
}

/* "SIZE 10240000": no number (or 0, or nonsense) means no fixed limit. */
static uint64_t parse_size(const char *s, size_t len)
{
	uint64_t v = 0;

	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9' || v > (UINT64_MAX - 9) / 10)
			return 0;
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	return v;
}

static void parse_ehlo(struct client *c, const struct reply *r)
{
	static const struct { const char *word; unsigned bit; } exts[] = {
		{ "PIPELINING", CLIENT_EXT_PIPELINING }, { "CHUNKING", CLIENT_EXT_CHUNKING },
		{ "SIZE", CLIENT_EXT_SIZE },             { "8BITMIME", CLIENT_EXT_8BITMIME },
		{ "SMTPUTF8", CLIENT_EXT_SMTPUTF8 },     { "DSN", CLIENT_EXT_DSN },
		{ "STARTTLS", CLIENT_EXT_STARTTLS },     { "AUTH", CLIENT_EXT_AUTH },
		{ "REQUIRETLS", CLIENT_EXT_REQUIRETLS },
	};
	size_t pos = 0, len, kw, off;
	const char *text;

	c->ext = 0;
	c->max_size = 0;
	c->auth_plain = c->auth_login = false;
	/* The first line is the server's name and greeting. */
	reply_line(r, &pos, &text, &len);
	while (reply_line(r, &pos, &text, &len)) {
		/* "AUTH=LOGIN PLAIN" is the old form some servers still send. */
		for (kw = 0; kw < len && text[kw] != ' ' && text[kw] != '='; kw++)
			;
		off = kw < len ? kw + 1 : len;
		for (size_t k = 0; k < sizeof(exts) / sizeof(exts[0]); k++) {
			if (!word_is(text, kw, exts[k].word))
				continue;
			c->ext |= exts[k].bit;
			if (exts[k].bit == CLIENT_EXT_SIZE)
				c->max_size = parse_size(text + off, len - off);
			else if (exts[k].bit == CLIENT_EXT_AUTH)
				parse_auth_mechs(c, text + off, len - off);
		}
	}
}

/*
 * The first hello reply is in: STARTTLS next, or on in clear? Returns
 * true when the session goes on (to AUTH or READY), false when it went to
 * STARTTLS or failed.
 */
static bool settle_tls(struct client *c)
{
	enum tls_use use = c->target.tls.policy.use;

	switch (use) {
	case TLS_USE_OFFERED:
	case TLS_USE_REQUIRED:
		if (c->ext & CLIENT_EXT_STARTTLS) {
			enter(c, ST_STARTTLS);
			return false;
		}
		if (use == TLS_USE_REQUIRED) {
			fail_local(c, STAGE_TLS, "4.7.4", "TLS is required, but %s does not offer STARTTLS",
				   c->host);
			return false;
		}
		c->tls_outcome = TLS_OFF_NOT_OFFERED;
		return true;
	case TLS_USE_NEVER:
	case TLS_USE_IMPLICIT: /* not undecided at a hello: the handshake came first */
		break;
	}
	c->tls_outcome = c->target.tls.after_failure ? TLS_OFF_AFTER_FAILURE : TLS_OFF_DISABLED;
	return true;
}

static void after_hello(struct client *c)
{
	if (c->tls_outcome == TLS_UNDECIDED && !settle_tls(c))
		return;
	if (c->auth_user == NULL)
		ready(c);
	else if (c->auth_plain)
		enter(c, ST_AUTH_PLAIN);
	else if (c->auth_login)
		enter(c, ST_AUTH_LOGIN);
	else
		fail_local(c, STAGE_EHLO, "4.7.0", "server offers no AUTH PLAIN/LOGIN");
}

static void on_ehlo(struct client *c, const struct reply *r)
{
	if (r->code / 100 == 2) {
		parse_ehlo(c, r);
		after_hello(c);
	} else if (r->code / 100 == 5 && c->state == ST_EHLO) {
		enter(c, ST_HELO); /* an SMTP server without ESMTP (LMTP has no HELO) */
	} else {
		fail_reply(c, r);
	}
}

static void on_helo(struct client *c, const struct reply *r)
{
	if (r->code / 100 != 2) {
		fail_reply(c, r);
		return;
	}
	c->ext = 0;
	c->auth_plain = c->auth_login = false;
	after_hello(c);
}

/* 220: the handshake. A refusal: in clear when TLS is only wanted (the
 * session is as after the hello), a failure when it is required. */
static void on_starttls(struct client *c, const struct reply *r)
{
	char text[sizeof(((struct delivery_status *)0)->text)];

	if (r->code == 220) {
		start_tls(c);
		return;
	}
	if (r->code / 100 != 4 && r->code / 100 != 5) {
		fail_unexpected(c, r);
		return;
	}
	if (c->target.tls.policy.use == TLS_USE_REQUIRED) {
		reply_join_text(r, text, sizeof(text));
		fail_local(c, STAGE_TLS, "4.7.4", "TLS is required, but %s refused STARTTLS: %d %s",
			   c->host, r->code, text);
		return;
	}
	c->tls_outcome = TLS_OFF_REFUSED;
	c->tls_refused_code = r->code;
	after_hello(c);
}

static void on_auth_challenge(struct client *c, const struct reply *r)
{
	if (r->code == 334)
		enter(c, c->state == ST_AUTH_LOGIN ? ST_AUTH_LOGIN_USER : ST_AUTH_LOGIN_PASS);
	else
		fail_reply(c, r);
}

static void on_auth_done(struct client *c, const struct reply *r)
{
	if (r->code / 100 == 2)
		ready(c);
	else
		fail_reply(c, r);
}

static void on_idle_reply(struct client *c, const struct reply *r)
{
	fail_unexpected(c, r);
}

static void on_quit(struct client *c, const struct reply *r)
{
	(void)r;
	release(c);
}

/* ---- replies: the transaction ---- */

static void on_rset(struct client *c, const struct reply *r)
{
	if (r->code / 100 != 2) {
		/* Not a verdict on the recipients: the session is just unusable. */
		fail_unexpected(c, r);
		return;
	}
	c->need_rset = false;
	enter(c, ST_MAIL);
}

static void on_mail(struct client *c, const struct reply *r)
{
	struct delivery_status ds;

	if (r->code / 100 == 2) {
		c->mail_ok = true;
		c->need_rset = true; /* until a final reply closes the transaction */
	} else {
		status_from_reply(&ds, r, STAGE_MAIL_FROM);
		decide_undecided(c, &ds);
		if (!c->pipelining) {
			finish_txn(c);
			return;
		}
	}
	/* Pipelined after a refused MAIL: the RCPT and DATA replies still come. */
	c->rcpt_cur = 0;
	enter(c, ST_RCPT);
}

static void on_rcpt(struct client *c, const struct reply *r)
{
	size_t i = c->order[c->rcpt_cur];
	struct delivery_status ds;

	if (!(c->rflags[i] & RF_DECIDED)) {
		if (r->code / 100 == 2) {
			c->rflags[i] |= RF_ACCEPTED;
			c->n_accepted++;
		} else {
			status_from_reply(&ds, r, STAGE_RCPT_TO);
			decide(c, i, &ds);
		}
	}
	if (++c->rcpt_cur < c->n_order) {
		enter(c, ST_RCPT);
		return;
	}
	if (!c->pipelining && c->n_accepted == 0) {
		finish_txn(c); /* nothing to send DATA for; RSET comes next time */
		return;
	}
	c->rcpt_cur = 0;
	c->finals_ok = true;
	if (c->use_bdat) {
		/* LMTP: one reply per accepted recipient (RFC 2033 4.2); a BDAT
		 * for nobody is refused with a single reply. */
		c->finals_left = c->target.lmtp && c->n_accepted > 0 ? c->n_accepted : 1;
		enter(c, ST_BDAT);
	} else {
		enter(c, ST_DATA);
	}
}

static void on_data(struct client *c, const struct reply *r)
{
	struct delivery_status ds;

	if (r->code == 354) {
		/* LMTP replies once per accepted recipient: none when none. */
		c->finals_left = c->target.lmtp ? c->n_accepted : 1;
		enter(c, ST_DOT);
		if (c->state == ST_DOT && c->finals_left == 0)
			finish_txn(c);
		return;
	}
	if (r->code / 100 != 4 && r->code / 100 != 5) {
		fail_unexpected(c, r);
		return;
	}
	status_from_reply(&ds, r, STAGE_DATA);
	decide_undecided(c, &ds);
	finish_txn(c);
}

/* The reply to the final dot or BDAT LAST: for every accepted recipient
 * (SMTP), or for the next accepted one in RCPT order (LMTP). */
static void on_final(struct client *c, const struct reply *r)
{
	struct delivery_status ds;

	status_from_reply(&ds, r, STAGE_DATA);
	if (c->target.lmtp && c->n_accepted > 0) {
		while (c->rcpt_cur < c->n_order && (c->rflags[c->order[c->rcpt_cur]] & RF_DECIDED))
			c->rcpt_cur++;
		if (c->rcpt_cur < c->n_order)
			decide(c, c->order[c->rcpt_cur++], &ds);
	} else {
		decide_undecided(c, &ds);
	}
	if (r->code / 100 != 2)
		c->finals_ok = false;
	if (--c->finals_left > 0) {
		arm_timer(c); /* each LMTP reply gets the full data timeout */
		return;
	}
	if (c->body_pending) {
		/* A verdict before the server had our whole body: what it reads
		 * next would be body taken for commands. */
		fail_local(c, STAGE_DATA, "4.5.0", "server replied before the end of the message body");
		return;
	}
	if (c->finals_ok && c->n_accepted > 0)
		c->need_rset = false;
	finish_txn(c);
}

/* ---- libevent callbacks ---- */

static void dispatch(struct client *c, const struct reply *r)
{
	reply_fn *fn = states[c->state].on_reply;

	/* 421 anywhere: the server is going away (RFC 5321 3.8). */
	if (r->code == 421 && c->state != ST_QUIT) {
		fail_reply(c, r);
		return;
	}
	if (fn == NULL)
		abort(); /* no reply is read in a state without a connection */
	fn(c, r);
}

static void read_replies(struct client *c)
{
	char line[REPLY_LINE_MAX + 1];
	const char *err = NULL;

	/* Bytes that came with the end of the handshake wait for the state
	 * after it (tls_established reads them). */
	while (c->bev != NULL && c->state != ST_TLS_HANDSHAKE) {
		struct evbuffer *in = bufferevent_get_input(c->bev);
		size_t eol_len = 0, len;
		struct evbuffer_ptr p = evbuffer_search_eol(in, NULL, &eol_len, EVBUFFER_EOL_CRLF);
		enum reply_result res;

		if (p.pos < 0) {
			/* The rest of the line is still on its way; a full-length
			 * line may have its CR here and its LF in the next read. */
			if (evbuffer_get_length(in) <= REPLY_LINE_MAX + 1)
				return;
			err = "reply line too long";
			break;
		}
		len = (size_t)p.pos;
		if (len > REPLY_LINE_MAX) {
			err = "reply line too long";
			break;
		}
		evbuffer_remove(in, line, len);
		evbuffer_drain(in, eol_len);
		res = reply_feed(&c->reply, line, len, &err);
		if (res == REPLY_ERROR)
			break;
		if (res == REPLY_DONE) {
			dispatch(c, &c->reply);
			reply_reset(&c->reply);
		}
	}
	if (err != NULL) {
		if (c->state == ST_QUIT)
			release(c);
		else
			fail_local(c, states[c->state].stage, "4.5.0", "malformed reply (%s): %s",
				   states[c->state].name, err);
	}
}

static void on_read(struct bufferevent *bev, void *arg)
{
	struct client *c = arg;

	(void)bev;
	cb_enter(c);
	read_replies(c);
	cb_leave(c);
}

static void on_write(struct bufferevent *bev, void *arg)
{
	struct client *c = arg;

	(void)bev;
	cb_enter(c);
	/* The body is with the kernel: from now on the timer waits for the reply. */
	if (c->body_pending) {
		c->body_pending = false;
		if (c->state == ST_DOT || c->state == ST_BDAT)
			arm_timer(c);
	}
	cb_leave(c);
}

/* Mark the connection's TLS as failed, then fail it (at stage TLS). */
static void fail_tls(struct client *c, const char *enhanced, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void fail_tls(struct client *c, const char *enhanced, const char *fmt, ...)
{
	char text[sizeof(((struct delivery_status *)0)->text)];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	c->tls_outcome = TLS_FAILED;
	fail_local(c, STAGE_TLS, enhanced, "%s", text);
}

/* Why the connection ended, as ": reason" for a status text, or "": on a
 * TLS connection OpenSSL's first error with a reason, else errno on an
 * error. */
static void loss_cause(struct client *c, short what, int err, char *out, size_t outlen)
{
	unsigned long code;
	char reason[128], first[128] = "";

	/* Latest first; none at once for a bufferevent without TLS. */
	while ((code = bufferevent_get_openssl_error(c->bev)) != 0)
		if (tls_error_reason(code, reason, sizeof(reason))[0] != '\0')
			snprintf(first, sizeof(first), "%s", reason);
	if (first[0] != '\0')
		snprintf(out, outlen, ": %s", first);
	else if (what & BEV_EVENT_ERROR)
		snprintf(out, outlen, ": %s", strerror(err));
	else
		out[0] = '\0';
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
	struct client *c = arg;
	int err = EVUTIL_SOCKET_ERROR();
	const char *name = states[c->state].name;
	char cause[160];

	(void)bev;
	if ((what & BEV_EVENT_CONNECTED) && c->state == ST_TLS_HANDSHAKE) {
		cb_enter(c);
		tls_established(c);
		cb_leave(c);
		return;
	}
	if (!(what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)))
		return; /* nothing else is asked for (we connect ourselves) */
	cb_enter(c);
	loss_cause(c, what, err, cause, sizeof(cause));
	if (c->state == ST_QUIT)
		release(c);
	else if (c->state == ST_TLS_HANDSHAKE)
		fail_tls(c, "4.7.5", "TLS handshake failed%s", cause[0] != '\0' ? cause
				: ": connection closed by the server");
	else if (c->state == ST_STARTTLS)
		fail_tls(c, "4.4.2", "connection lost during STARTTLS%s", cause);
	else if (c->state == ST_IDLE)
		fail_local(c, STAGE_MAIL_FROM, "4.4.2", "connection closed by the server while idle%s",
			   cause);
	else if (c->body_pending && (c->state == ST_DOT || c->state == ST_BDAT))
		fail_local(c, STAGE_DATA, "4.4.2", "connection lost while sending the message body%s",
			   cause);
	else
		fail_local(c, states[c->state].stage, "4.4.2", "connection lost during %s%s", name,
			   cause);
	cb_leave(c);
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct client *c = arg;
	const struct state_info *si = &states[c->state];
	char secs[32];

	(void)fd;
	(void)what;
	cb_enter(c);
	snprintf(secs, sizeof(secs), "%g", (double)stage_timeout_ms(c, si->stage) / 1000.0);
	if (c->state == ST_QUIT)
		release(c);
	else if (c->state == ST_CONNECT)
		fail_local(c, STAGE_CONNECT, "4.4.1", "connection to %s timed out after %s s", c->where,
			   secs);
	else if (c->body_pending && (c->state == ST_DOT || c->state == ST_BDAT))
		fail_local(c, STAGE_DATA, "4.4.2", "timed out after %s s sending the message body",
			   secs);
	else if (c->state == ST_TLS_HANDSHAKE)
		fail_tls(c, "4.4.2", "timed out after %s s in %sthe TLS handshake", secs,
			 c->target.tls.policy.use == TLS_USE_IMPLICIT ? "" : "STARTTLS and ");
	else if (c->state == ST_STARTTLS)
		fail_tls(c, "4.4.2", "timed out after %s s waiting for the STARTTLS reply", secs);
	else
		fail_local(c, si->stage, "4.4.2", "timed out after %s s waiting for the %s reply", secs,
			   si->name);
	cb_leave(c);
}

static void on_deferred(evutil_socket_t fd, short what, void *arg)
{
	struct client *c = arg;
	enum deferred d = c->deferred;

	(void)fd;
	(void)what;
	cb_enter(c);
	c->deferred = DEFER_NONE;
	if (d == DEFER_ABORT)
		report_end(c, c->deferred_was, &c->deferred_why);
	else if (d == DEFER_TXN_DONE)
		finish_txn(c);
	cb_leave(c);
}

/* ---- TLS ---- */

/* Wrap the connection in TLS and start the handshake: right after connect
 * (implicit TLS) or after the 220 reply to STARTTLS. */
static void start_tls(struct client *c)
{
	struct bufferevent *plain = c->bev, *tls;
	struct ssl_st *ssl;
	char err[160];

	if (evbuffer_get_length(bufferevent_get_input(plain)) > 0) {
		/* Nothing may come between the 220 and the handshake: such
		 * bytes would be taken for replies that TLS protects. */
		fail_tls(c, "4.7.5", "the server sent more after its 220 reply to STARTTLS");
		return;
	}
	ssl = tls_client_ssl_new(c->target.tls.ctx, c->tls_name, &c->target.tls.policy, err,
				 sizeof(err));
	if (ssl == NULL) {
		fail_local(c, STAGE_TLS, "4.3.0", "cannot start TLS: %s", err);
		return;
	}
	bufferevent_setwatermark(plain, EV_WRITE, TLS_WRITE_LOW, TLS_WRITE_HIGH);
	tls = bufferevent_openssl_filter_new(c->base, plain, ssl, BUFFEREVENT_SSL_CONNECTING,
					     BEV_OPT_CLOSE_ON_FREE);
	if (tls == NULL) {
		/* Depending on where libevent failed, it has freed the SSL and
		 * the plain connection, or not: neither is touched again. Only
		 * memory exhaustion gets here; a leak beats a double free. */
		c->bev = NULL;
		fail_local(c, STAGE_TLS, "4.3.0", "out of memory starting TLS");
		return;
	}
	c->bev = tls;
	bufferevent_openssl_set_allow_dirty_shutdown(tls, 1);
	bufferevent_setcb(tls, on_read, on_write, on_event, c);
	if (bufferevent_enable(tls, EV_READ | EV_WRITE) != 0) {
		fail_local(c, STAGE_TLS, "4.3.0", "cannot watch the connection");
		return;
	}
	enter(c, ST_TLS_HANDSHAKE);
}

/* The handshake is done: the policy judges it, then the greeting
 * (implicit TLS) or a new hello. */
static void tls_established(struct client *c)
{
	tls_describe(bufferevent_openssl_get_ssl(c->bev), &c->target.tls.policy, &c->tls_info);
	c->tls_outcome = TLS_ON;
	if (!tls_policy_met(&c->target.tls.policy, &c->tls_info)) {
		fail_local(c, STAGE_TLS, "4.7.5", "TLS certificate of %s not accepted: %s", c->tls_name,
			   c->tls_info.why_not);
		return;
	}
	if (c->target.tls.policy.use == TLS_USE_IMPLICIT)
		enter(c, ST_GREETING);
	else
		enter(c, c->target.lmtp ? ST_LHLO : ST_EHLO);
	read_replies(c);
}

/* ---- starting ---- */

static void start_session(struct client *c)
{
	c->bev = bufferevent_socket_new(c->base, c->fd, BEV_OPT_CLOSE_ON_FREE);
	if (c->bev == NULL) {
		fail_local(c, STAGE_CONNECT, "4.3.0", "out of memory");
		return;
	}
	c->fd = -1;
	event_free(c->connect_ev);
	c->connect_ev = NULL;
	bufferevent_setcb(c->bev, on_read, on_write, on_event, c);
	if (bufferevent_enable(c->bev, EV_READ | EV_WRITE) != 0) {
		fail_local(c, STAGE_CONNECT, "4.3.0", "cannot watch the connection");
		return;
	}
	if (c->target.tls.policy.use == TLS_USE_IMPLICIT)
		start_tls(c);
	else
		enter(c, ST_GREETING);
}

static void on_connected(evutil_socket_t fd, short what, void *arg)
{
	struct client *c = arg;
	int err = 0;
	socklen_t len = sizeof(err);

	(void)what;
	cb_enter(c);
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
		err = errno;
	if (err != 0)
		fail_local(c, STAGE_CONNECT, "4.4.1", "connection to %s failed: %s", c->where,
			   strerror(err));
	else
		start_session(c);
	cb_leave(c);
}

/* ---- connecting ---- */

static bool bind_source(struct client *c, int family)
{
	struct sockaddr_storage ss;
	socklen_t len;
	char src[IPADDR_STRLEN];
	int one = 1;

	ipaddr_format(&c->target.source, src, sizeof(src));
	if (c->target.source.family != family) {
		fail_local(c, STAGE_CONNECT, "4.3.0", "cannot bind source address %s: not of the family of %s",
			   src, c->peer_text);
		return false;
	}
	memset(&ss, 0, sizeof(ss));
	if (family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&ss;

		sin->sin_family = AF_INET;
		memcpy(&sin->sin_addr, c->target.source.bytes, 4);
		len = sizeof(*sin);
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;

		sin6->sin6_family = AF_INET6;
		memcpy(&sin6->sin6_addr, c->target.source.bytes, 16);
		len = sizeof(*sin6);
	}
	/* Leave the port to connect(), so many connections can share the
	 * address (as nginx does). A kernel without the option still binds. */
	(void)setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
	if (bind(c->fd, (struct sockaddr *)&ss, len) != 0) {
		fail_local(c, STAGE_CONNECT, "4.3.0", "cannot bind source address %s: %s", src,
			   strerror(errno));
		return false;
	}
	return true;
}

static void open_connection(struct client *c)
{
	int family = c->target.addr.ss_family, one = 1;

	if ((family != AF_INET && family != AF_INET6) || c->target.addr_len == 0 ||
	    c->target.addr_len > sizeof(c->target.addr)) {
		fail_local(c, STAGE_CONNECT, "4.4.1", "no usable address to connect to for %s", c->host);
		return;
	}
	if (!clean_text(c->helo_name, strlen(c->helo_name)) || c->helo_name[0] == '\0') {
		fail_local(c, STAGE_CONNECT, "4.3.0", "unusable EHLO name");
		return;
	}
	if (c->auth_user != NULL &&
	    (strlen(c->auth_user) > AUTH_FIELD_MAX || strlen(c->auth_secret) > AUTH_FIELD_MAX)) {
		fail_local(c, STAGE_CONNECT, "4.3.0", "AUTH user name or secret longer than %d bytes",
			   AUTH_FIELD_MAX);
		return;
	}
	if (c->target.tls.policy.use != TLS_USE_NEVER && c->target.tls.ctx == NULL) {
		fail_local(c, STAGE_CONNECT, "4.3.0", "TLS wanted, but no TLS context given");
		return;
	}
	c->fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
	if (c->fd < 0) {
		fail_local(c, STAGE_CONNECT, "4.3.0", "cannot create a socket: %s", strerror(errno));
		return;
	}
	if (c->target.source.family != 0 && !bind_source(c, family))
		return;
	/* Commands are small and each waits for a reply: do not hold them back.
	 * Failing to set it costs latency only. */
	(void)setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(c->fd, (const struct sockaddr *)&c->target.addr, c->target.addr_len) != 0 &&
	    errno != EINPROGRESS) {
		fail_local(c, STAGE_CONNECT, "4.4.1", "connection to %s failed: %s", c->where,
			   strerror(errno));
		return;
	}
	c->connect_ev = event_new(c->base, c->fd, EV_WRITE, on_connected, c);
	if (c->connect_ev == NULL || event_add(c->connect_ev, NULL) != 0) {
		fail_local(c, STAGE_CONNECT, "4.3.0", "out of memory");
		return;
	}
	enter(c, ST_CONNECT);
}

static void describe_target(struct client *c)
{
	const struct sockaddr_storage *ss = &c->target.addr;
	unsigned port = 0;

	c->peer_text[0] = '\0';
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;

		inet_ntop(AF_INET, &sin->sin_addr, c->peer_text, sizeof(c->peer_text));
		port = ntohs(sin->sin_port);
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;

		inet_ntop(AF_INET6, &sin6->sin6_addr, c->peer_text, sizeof(c->peer_text));
		port = ntohs(sin6->sin6_port);
	}
	if (c->target.source.family != 0) {
		char src[IPADDR_STRLEN];

		snprintf(c->where, sizeof(c->where), "%.255s[%s]:%u from %s", c->host, c->peer_text,
			 port, ipaddr_format(&c->target.source, src, sizeof(src)));
	} else {
		snprintf(c->where, sizeof(c->where), "%.255s[%s]:%u", c->host, c->peer_text, port);
	}
}

static bool copy_string(char **dst, const char *src)
{
	*dst = NULL;
	if (src == NULL)
		return true;
	*dst = strdup(src);
	return *dst != NULL;
}

/* ---- the API ---- */

struct client *client_connect(struct event_base *base, const struct client_target *target,
			      const struct client_callbacks *cb, void *arg)
{
	struct client *c = calloc(1, sizeof(*c));
	bool with_auth = target->auth_user != NULL && target->auth_secret != NULL;

	if (c == NULL)
		return NULL;
	c->base = base;
	c->cb = *cb;
	c->arg = arg;
	c->target = *target;
	c->fd = -1;
	reply_init(&c->reply);
	c->timer = evtimer_new(base, on_timeout, c);
	c->defer_ev = event_new(base, -1, 0, on_deferred, c);
	if (c->timer == NULL || c->defer_ev == NULL ||
	    !copy_string(&c->host, target->host != NULL ? target->host : "") ||
	    !copy_string(&c->helo_name, target->helo_name != NULL ? target->helo_name : "") ||
	    !copy_string(&c->auth_user, with_auth ? target->auth_user : NULL) ||
	    !copy_string(&c->auth_secret, with_auth ? target->auth_secret : NULL) ||
	    !copy_string(&c->tls_name, target->tls.name != NULL ? target->tls.name : c->host)) {
		if (c->timer != NULL)
			event_free(c->timer);
		if (c->defer_ev != NULL)
			event_free(c->defer_ev);
		free(c->host);
		free(c->helo_name);
		free(c->auth_user);
		free(c->auth_secret);
		free(c->tls_name);
		free(c);
		return NULL;
	}
	c->target.host = c->host;
	c->target.helo_name = c->helo_name;
	c->target.auth_user = c->auth_user;
	c->target.auth_secret = c->auth_secret;
	c->target.tls.name = c->tls_name;
	describe_target(c);
	c->state = ST_CONNECT;
	c->in_api = true;
	open_connection(c);
	c->in_api = false;
	return c;
}

/* Refuse the whole transaction before anything is sent. */
static void refuse_txn(struct client *c, enum ds_class cls, enum client_stage stage,
		       const char *enhanced, const char *text)
{
	struct delivery_status ds;

	ds_set_local(&ds, cls, stage, enhanced, "%s", text);
	for (size_t i = 0; i < c->txn->n_rcpts; i++)
		c->txn->results[i] = ds;
	free(c->order);
	c->order = NULL;
	c->rflags = NULL;
	defer(c, DEFER_TXN_DONE);
}

static void start_txn(struct client *c)
{
	const struct client_txn *txn = c->txn;
	const struct message *m = txn->msg;
	size_t n = txn->n_rcpts;
	char text[160];

	c->n_order = c->n_accepted = c->rcpt_cur = 0;
	c->mail_ok = c->body_pending = false;
	c->pipelining = (c->ext & CLIENT_EXT_PIPELINING) != 0;
	c->use_bdat = (c->ext & CLIENT_EXT_CHUNKING) != 0;
	if (n > SIZE_MAX / (sizeof(size_t) + 1) ||
	    (c->order = malloc(n * (sizeof(size_t) + 1) + 1)) == NULL) {
		refuse_txn(c, DS_TEMP, STAGE_MAIL_FROM, "4.3.0", "out of memory");
		return;
	}
	c->rflags = (uint8_t *)(c->order + n);
	memset(c->rflags, 0, n);

	if (!clean_text(m->sender, strlen(m->sender))) {
		refuse_txn(c, DS_PERM, STAGE_MAIL_FROM, "5.1.7",
			   "sender address contains control characters");
		return;
	}
	if ((c->ext & CLIENT_EXT_DSN) && m->envid != NULL && !clean_xtext(m->envid)) {
		refuse_txn(c, DS_PERM, STAGE_MAIL_FROM, "5.5.4", "ENVID is not valid xtext");
		return;
	}
	if (m->smtputf8 && !(c->ext & CLIENT_EXT_SMTPUTF8)) {
		refuse_txn(c, DS_PERM, STAGE_MAIL_FROM, "5.6.7",
			   "message needs SMTPUTF8, which the server does not offer");
		return;
	}
	if (m->requiretls && !(c->tls_outcome == TLS_ON && c->tls_info.verified)) {
		/* RFC 8689 §4.2.1: only over TLS whose certificate verified (by
		 * the trust store or DANE), else not at all. */
		refuse_txn(c, DS_PERM, STAGE_MAIL_FROM, "5.7.30",
			   c->tls_outcome == TLS_ON
			   ? "message needs REQUIRETLS, and the server's certificate is not verified"
			   : "message needs REQUIRETLS, and the session is not encrypted");
		return;
	}
	if (m->requiretls && !(c->ext & CLIENT_EXT_REQUIRETLS)) {
		refuse_txn(c, DS_PERM, STAGE_MAIL_FROM, "5.7.30",
			   "message needs REQUIRETLS, which the server does not offer");
		return;
	}
	if ((c->ext & CLIENT_EXT_SIZE) && c->max_size > 0 && m->size > c->max_size) {
		snprintf(text, sizeof(text), "message size %llu exceeds the server's limit of %llu",
			 (unsigned long long)m->size, (unsigned long long)c->max_size);
		refuse_txn(c, DS_PERM, STAGE_MAIL_FROM, "5.3.4", text);
		return;
	}
	for (size_t i = 0; i < n; i++) {
		const struct rcpt *r;
		struct delivery_status ds;

		if (txn->rcpt_index[i] >= m->n_rcpts) {
			ds_set_local(&ds, DS_TEMP, STAGE_RCPT_TO, "4.3.0", "no such recipient (index %zu)",
				     txn->rcpt_index[i]);
			decide(c, i, &ds);
			continue;
		}
		r = &m->rcpts[txn->rcpt_index[i]];
		if (!clean_text(r->addr, r->addr_len) ||
		    ((c->ext & CLIENT_EXT_DSN) && r->orcpt != NULL && !clean_xtext(r->orcpt))) {
			ds_set_local(&ds, DS_PERM, STAGE_RCPT_TO, "5.1.3",
				     "recipient address contains control characters");
			decide(c, i, &ds);
			continue;
		}
		c->order[c->n_order++] = i;
	}
	if (c->n_order == 0) {
		defer(c, DEFER_TXN_DONE); /* every recipient refused here */
		return;
	}
	c->send_pos = c->need_rset ? 0 : 1;
	if (c->pipelining && !send_upto(c, txn_end_pos(c))) {
		fail_local(c, STAGE_MAIL_FROM, "4.3.0", "out of memory writing the commands");
		return;
	}
	enter(c, c->need_rset ? ST_RSET : ST_MAIL);
}

int client_send(struct client *c, struct client_txn *txn)
{
	if (!client_is_idle(c))
		return -1;
	c->txn = txn;
	c->in_api = true;
	start_txn(c);
	c->in_api = false;
	return 0;
}

bool client_is_idle(const struct client *c)
{
	return c->state == ST_IDLE && c->txn == NULL && !c->owner_gone;
}

unsigned client_extensions(const struct client *c)
{
	return c->ext;
}

const char *client_peer_text(const struct client *c)
{
	return c->peer_text;
}

const struct tls_info *client_tls_info(const struct client *c)
{
	return c->tls_outcome == TLS_ON ? &c->tls_info : NULL;
}

const char *client_tls_summary(const struct client *c, char *buf, size_t len)
{
	switch (c->tls_outcome) {
	case TLS_UNDECIDED:
		snprintf(buf, len, "%s", "");
		break;
	case TLS_ON:
		tls_info_format(&c->tls_info, buf, len);
		break;
	case TLS_OFF_DISABLED:
		snprintf(buf, len, "%s", "none(disabled)");
		break;
	case TLS_OFF_NOT_OFFERED:
		snprintf(buf, len, "%s", "none(not offered)");
		break;
	case TLS_OFF_REFUSED:
		snprintf(buf, len, "none(STARTTLS refused: %d)", c->tls_refused_code);
		break;
	case TLS_OFF_AFTER_FAILURE:
		snprintf(buf, len, "%s", "none(after a failed handshake)");
		break;
	case TLS_FAILED:
		snprintf(buf, len, "%s", "none(TLS failed)");
		break;
	}
	return buf;
}

bool client_tls_failed(const struct client *c)
{
	return c->tls_outcome == TLS_FAILED;
}

void client_quit(struct client *c)
{
	if (c == NULL)
		return;
	if (!client_is_idle(c)) {
		client_free(c);
		return;
	}
	/* From here on nobody is told anything: the QUIT reply, a timeout or
	 * the connection's end all just free. */
	c->owner_gone = true;
	enter(c, ST_QUIT);
}

void client_free(struct client *c)
{
	if (c != NULL)
		release(c);
}
