/*
 * test_session.c - the inbound SMTP/LMTP session driven over real sockets
 * in a real event loop, with a queue_submit of this file standing in for
 * the queue (so the test binary links src/inbound, config, util and
 * message.c, not queue.c).
 *
 * The client is this same thread: it writes to its socket, then runs the
 * loop without blocking until the replies it waits for have arrived. For
 * STARTTLS the client's side of the handshake is a nonblocking OpenSSL
 * client driven the same way; the server's certificate is made here, in
 * memory, once.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "config/settings.h"
#include "inbound/inbound.h"
#include "inbound/session.h"
#include "queue/queue.h"
#include "server/server.h"
#include "tls/server.h"
#include "util/base64.h"
#include "util/log.h"

/* ---- the stand-in queue ---- */

enum qmode {
	Q_ASYNC,       /* callback from the loop, like the spool's group commit */
	Q_SYNC,        /* callback from inside queue_submit */
	Q_DEFER,       /* callback when the test says so */
	Q_ENOSPC,      /* callback with ENOSPC */
	Q_EIO_RETURN,  /* queue_submit itself fails */
};

#define QMAX 64

static struct {
	enum qmode mode;
	struct message *msgs[QMAX];
	struct message_body *bodies[QMAX];
	size_t n;
	queue_accept_cb cb; /* the pending callback, NULL when none */
	void *arg;
	int err;
	uint64_t next_id;
	unsigned forgotten;
} q;

static struct event_base *base;

static void fire_pending(void)
{
	queue_accept_cb cb = q.cb;

	if (cb != NULL) {
		q.cb = NULL;
		cb(q.arg, q.err, q.err == 0 ? q.next_id : 0);
	}
}

static void fire_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	fire_pending();
}

int queue_submit(struct queue *qq, struct message *msg, struct message_body *body,
		 queue_accept_cb cb, void *arg)
{
	struct timeval now = { 0, 0 };

	(void)qq;
	if (q.mode == Q_EIO_RETURN) {
		message_free(msg);
		message_body_unref(body);
		return EIO;
	}
	assert_true(q.n < QMAX);
	assert_null(q.cb);
	msg->size = body->len;
	q.msgs[q.n] = msg;
	q.bodies[q.n] = body;
	q.n++;
	q.next_id = 0x1000 + q.n;
	q.cb = cb;
	q.arg = arg;
	q.err = q.mode == Q_ENOSPC ? ENOSPC : 0;
	if (q.mode == Q_SYNC)
		fire_pending();
	else if (q.mode != Q_DEFER)
		event_base_once(base, -1, EV_TIMEOUT, fire_cb, NULL, &now);
	return 0;
}

void queue_forget_submitter(struct queue *qq, void *arg)
{
	(void)qq;
	if (q.cb != NULL && q.arg == arg)
		q.cb = NULL;
	q.forgotten++;
}

static void queue_reset(void)
{
	for (size_t i = 0; i < q.n; i++) {
		message_free(q.msgs[i]);
		message_body_unref(q.bodies[i]);
	}
	memset(&q, 0, sizeof(q));
}

/* ---- the server side ---- */

static const char base_config[] =
	"[server]\n"
	"hostname = \"mx.test.example\"\n"
	"greeting = \"tern test\"\n"
	"[server.listener.\"api\"]\n"
	"bind = \"127.0.0.1:1\"\n"
	"protocol = \"http\"\n"
	"[session.rcpt]\n"
	"relay = [ { if = \"rcpt-domain\", eq = \"allowed.example\", then = true },\n"
	"          { else = false } ]\n"
	"max-recipients = 3\n"
	"[session.data.limits]\n"
	"size = 1000\n"
	"messages = 3\n"
	"received-headers = 3\n";

struct fixture {
	struct config *cfg;
	struct server srv;
	struct inbound *in;
};

static struct fixture fx;
static const struct listener_info smtp_li = { "smtp-in", false, "tern test", NULL, false };
static const struct listener_info lmtp_li = { "lmtp-in", true, "tern lmtp", NULL, false };

static void setup_with(const char *extra)
{
	static char text[16384];
	struct diags diags;
	char err[256];

	snprintf(text, sizeof(text), "%s%s", base_config, extra);
	diags_init(&diags, "test.toml");
	fx.cfg = config_load_buffer(text, strlen(text), "/tmp", 0, &diags);
	if (fx.cfg == NULL)
		diags_print(&diags, stderr);
	diags_free(&diags);
	assert_non_null(fx.cfg);
	base = event_base_new();
	assert_non_null(base);
	memset(&fx.srv, 0, sizeof(fx.srv));
	fx.srv.base = base;
	fx.srv.cfg = fx.cfg;
	fx.srv.hostname = config_get(fx.cfg, CFG_SERVER_HOSTNAME)->str;
	fx.srv.queue = (struct queue *)&q; /* only passed back to our queue_submit */
	fx.in = inbound_start(&fx.srv, err, sizeof(err));
	assert_non_null(fx.in);
	fx.srv.inbound = fx.in;
}

static int setup(void **state)
{
	(void)state;
	setup_with("");
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	inbound_free(fx.in);
	event_base_free(base);
	config_free(fx.cfg);
	queue_reset();
	return 0;
}

/* ---- the client side ---- */

struct client {
	int fd;
	SSL *ssl; /* once STARTTLS has been done */
	char buf[1 << 16];
	size_t len, pos; /* received, and consumed by the test */
	bool eof;
	char last[1 << 16];
};

static void set_nonblock(int fd)
{
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

/* A TCP connection over loopback with a session on its server end. */
static struct client *connect_session(const struct listener_info *li)
{
	struct client *c = calloc(1, sizeof(*c));
	struct sockaddr_in sin = { .sin_family = AF_INET };
	struct sockaddr_storage peer, local;
	socklen_t len = sizeof(sin), plen = sizeof(peer), llen = sizeof(local);
	int lfd, sfd;

	assert_non_null(c);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	lfd = socket(AF_INET, SOCK_STREAM, 0);
	assert_int_equal(bind(lfd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(listen(lfd, 1), 0);
	assert_int_equal(getsockname(lfd, (struct sockaddr *)&sin, &len), 0);
	c->fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_int_equal(connect(c->fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	sfd = accept(lfd, (struct sockaddr *)&peer, &plen);
	assert_true(sfd >= 0);
	close(lfd);
	getsockname(sfd, (struct sockaddr *)&local, &llen);
	set_nonblock(sfd);
	set_nonblock(c->fd);
	assert_int_equal(session_start(fx.in, li, sfd, (struct sockaddr *)&peer,
				       (struct sockaddr *)&local), 0);
	return c;
}

static void client_free(struct client *c)
{
	SSL_free(c->ssl);
	close(c->fd);
	free(c);
}

static void client_read(struct client *c)
{
	while (!c->eof && c->len < sizeof(c->buf) - 1) {
		ssize_t n;

		if (c->ssl != NULL) {
			int r = SSL_read(c->ssl, c->buf + c->len, (int)(sizeof(c->buf) - 1 - c->len));
			int e = r > 0 ? 0 : SSL_get_error(c->ssl, r);

			ERR_clear_error();
			if (r > 0)
				c->len += (size_t)r;
			else if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
				break;
			else
				c->eof = true;
			continue;
		}
		n = recv(c->fd, c->buf + c->len, sizeof(c->buf) - 1 - c->len, MSG_DONTWAIT);
		if (n > 0)
			c->len += (size_t)n;
		else if (n == 0 || (errno != EAGAIN && errno != EINTR))
			c->eof = true;
		else
			break;
	}
	c->buf[c->len] = '\0';
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* One turn of the loop and of the client's reading. */
static void pump(struct client *c)
{
	struct pollfd p = { .fd = c != NULL ? c->fd : -1, .events = POLLIN };

	event_base_loop(base, EVLOOP_NONBLOCK);
	poll(&p, c != NULL ? 1 : 0, 1);
	event_base_loop(base, EVLOOP_NONBLOCK);
	if (c != NULL)
		client_read(c);
}

static void pump_for(struct client *c, int ms)
{
	int64_t end = now_ms() + ms;

	while (now_ms() < end)
		pump(c);
}

static void client_send(struct client *c, const char *data, size_t len)
{
	int64_t end = now_ms() + 10000;

	while (len > 0) {
		ssize_t n = c->ssl != NULL ? SSL_write(c->ssl, data, (int)len)
					   : send(c->fd, data, len, MSG_DONTWAIT | MSG_NOSIGNAL);

		if (c->ssl != NULL && n <= 0) {
			int e = SSL_get_error(c->ssl, (int)n);

			assert_true(e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE);
			assert_true(now_ms() < end);
			event_base_loop(base, EVLOOP_NONBLOCK);
			continue;
		}

		if (n > 0) {
			data += n;
			len -= (size_t)n;
		} else {
			assert_true(n < 0 && errno == EAGAIN);
			assert_true(now_ms() < end);
			pump(c);
		}
	}
}

static void say(struct client *c, const char *text)
{
	client_send(c, text, strlen(text));
}

/* Complete replies (last line "ddd ...") after pos. */
static unsigned count_replies(const struct client *c, size_t *end)
{
	unsigned n = 0;
	size_t i = c->pos;

	for (;;) {
		const char *nl = memchr(c->buf + i, '\n', c->len - i);

		if (nl == NULL)
			break;
		if ((size_t)(nl - (c->buf + i)) >= 4 && c->buf[i + 3] == ' ')
			n++, *end = (size_t)(nl - c->buf) + 1;
		else if ((size_t)(nl - (c->buf + i)) < 4)
			n++, *end = (size_t)(nl - c->buf) + 1;
		i = (size_t)(nl - c->buf) + 1;
	}
	return n;
}

/* Wait for n replies and return their text (all lines, CRLFs included). */
static const char *replies(struct client *c, unsigned n)
{
	int64_t end = now_ms() + 5000;
	size_t stop = c->pos;

	while (count_replies(c, &stop) < n && !c->eof && now_ms() < end)
		pump(c);
	if (count_replies(c, &stop) < n)
		fail_msg("waited for %u replies, have: [%s]", n, c->buf + c->pos);
	/* Exactly n: the end of the n-th. */
	{
		size_t i = c->pos, e = c->pos;
		unsigned k = 0;

		while (k < n) {
			const char *nl = memchr(c->buf + i, '\n', c->len - i);
			size_t l = (size_t)(nl - (c->buf + i));

			if (l < 4 || c->buf[i + 3] == ' ')
				k++;
			i = (size_t)(nl - c->buf) + 1;
			e = i;
		}
		memcpy(c->last, c->buf + c->pos, e - c->pos);
		c->last[e - c->pos] = '\0';
		c->pos = e;
	}
	return c->last;
}

static const char *reply1(struct client *c)
{
	return replies(c, 1);
}

/* Nothing more has arrived after pumping a while. */
static void no_reply(struct client *c, int ms)
{
	pump_for(c, ms);
	if (c->len != c->pos)
		fail_msg("unexpected: [%s]", c->buf + c->pos);
}

static void wait_eof(struct client *c)
{
	int64_t end = now_ms() + 5000;

	while (!c->eof && now_ms() < end)
		pump(c);
	assert_true(c->eof);
}

static struct client *greeted(const struct listener_info *li)
{
	struct client *c = connect_session(li);

	assert_string_equal(reply1(c), li->lmtp ? "220 mx.test.example tern lmtp\r\n"
					       : "220 mx.test.example tern test\r\n");
	say(c, li->lmtp ? "LHLO client.example\r\n" : "EHLO client.example\r\n");
	assert_memory_equal(reply1(c), "250-mx.test.example\r\n", 21);
	return c;
}

/* The data of a queued message, after the Received field we prepend. */
static const char *body_data(size_t i)
{
	const char *p = q.bodies[i]->data;

	assert_memory_equal(p, "Received: ", 10);
	for (;;) {
		p = strstr(p, "\r\n");
		assert_non_null(p);
		p += 2;
		if (*p != '\t')
			return p;
	}
}

/* ---- tests ---- */

static void test_banner_and_ehlo(void **state)
{
	struct client *c = connect_session(&smtp_li);

	(void)state;
	assert_string_equal(reply1(c), "220 mx.test.example tern test\r\n");
	say(c, "EHLO client.example\r\n");
	assert_string_equal(reply1(c), "250-mx.test.example\r\n"
					"250-PIPELINING\r\n"
					"250-SIZE 1000\r\n"
					"250-8BITMIME\r\n"
					"250-SMTPUTF8\r\n"
					"250-ENHANCEDSTATUSCODES\r\n"
					"250-CHUNKING\r\n"
					"250 DSN\r\n");
	say(c, "HELO client.example\r\n");
	assert_string_equal(reply1(c), "250 mx.test.example\r\n");
	/* After HELO, no ESMTP parameters */
	say(c, "MAIL FROM:<a@b.example> SIZE=10\r\n");
	assert_string_equal(reply1(c), "555 5.5.4 Unsupported parameter\r\n");
	say(c, "EHLO\r\n");
	assert_string_equal(reply1(c), "501 5.5.4 Syntax: EHLO hostname\r\n");
	say(c, "LHLO x\r\n");
	assert_string_equal(reply1(c), "500 5.5.1 Command unrecognized\r\n");
	say(c, "QUIT\r\n");
	assert_string_equal(reply1(c), "221 2.0.0 mx.test.example Bye\r\n");
	wait_eof(c);
	client_free(c);
}

static void test_extensions_by_rule(void **state)
{
	struct client *c;

	(void)state;
	teardown(NULL);
	setup_with("[session.extensions]\n"
		   "pipelining = [ { if = \"listener\", eq = \"smtp-in\", then = false }, { else = true } ]\n"
		   "chunking = [ { if = \"remote-ip\", eq = \"127.0.0.0/8\", then = false }, { else = true } ]\n"
		   "dsn = false\n"
		   "requiretls = true\n");
	c = connect_session(&smtp_li);
	reply1(c);
	say(c, "EHLO client.example\r\n");
	/* REQUIRETLS is for TLS sessions only (RFC 8689), none yet */
	assert_string_equal(reply1(c), "250-mx.test.example\r\n"
					"250-SIZE 1000\r\n"
					"250-8BITMIME\r\n"
					"250-SMTPUTF8\r\n"
					"250 ENHANCEDSTATUSCODES\r\n");
	say(c, "MAIL FROM:<a@b.example> RET=FULL\r\n");
	assert_string_equal(reply1(c), "555 5.5.4 Unsupported parameter\r\n");
	say(c, "MAIL FROM:<a@b.example> BODY=BINARYMIME\r\n");
	assert_string_equal(reply1(c), "555 5.5.4 BODY=BINARYMIME requires CHUNKING\r\n");
	say(c, "MAIL FROM:<a@b.example> REQUIRETLS\r\n");
	assert_string_equal(reply1(c), "555 5.5.4 Unsupported parameter\r\n");
	/* BDAT without CHUNKING: its octets are still read, not run */
	say(c, "MAIL FROM:<a@b.example>\r\nRCPT TO:<x@allowed.example>\r\nBDAT 6\r\nQUIT\r\nNOOP\r\n");
	assert_string_equal(replies(c, 4), "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"
					   "503 5.5.1 Error: CHUNKING was not offered\r\n"
					   "250 2.0.0 Ok\r\n");
	client_free(c);
}

/* Pipelined commands: in order, and all in one write. A SEQPACKET socket
 * pair keeps each write a record of its own, so one recv shows one write. */
static void test_pipelining_one_batch(void **state)
{
	static const char cmds[] = "EHLO client.example\r\n"
				   "MAIL FROM:<sender@example.com> SIZE=100\r\n"
				   "RCPT TO:<one@allowed.example>\r\n"
				   "RCPT TO:<two@elsewhere.example>\r\n"
				   "RCPT TO:<bad address>\r\n"
				   "RCPT TO:<three@allowed.example> NOTIFY=NEVER\r\n"
				   "NOOP\r\n";
	int sv[2];
	char buf[8192];
	ssize_t n;
	struct pollfd p;

	(void)state;
	assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv), 0);
	set_nonblock(sv[0]);
	assert_int_equal(session_start(fx.in, &smtp_li, sv[0], NULL, NULL), 0);
	for (int i = 0; i < 100; i++)
		event_base_loop(base, EVLOOP_NONBLOCK);
	n = recv(sv[1], buf, sizeof(buf), 0);
	assert_true(n > 0);
	assert_memory_equal(buf, "220 ", 4);
	assert_int_equal(send(sv[1], cmds, sizeof(cmds) - 1, 0), (ssize_t)sizeof(cmds) - 1);
	p.fd = sv[1];
	p.events = POLLIN;
	for (int i = 0; i < 500 && poll(&p, 1, 0) == 0; i++) {
		event_base_loop(base, EVLOOP_NONBLOCK);
		usleep(1000);
	}
	for (int i = 0; i < 20; i++)
		event_base_loop(base, EVLOOP_NONBLOCK);
	n = recv(sv[1], buf, sizeof(buf) - 1, MSG_DONTWAIT);
	assert_true(n > 0);
	buf[n] = '\0';
	assert_string_equal(buf, "250-mx.test.example\r\n250-PIPELINING\r\n250-SIZE 1000\r\n"
				 "250-8BITMIME\r\n250-SMTPUTF8\r\n250-ENHANCEDSTATUSCODES\r\n"
				 "250-CHUNKING\r\n250 DSN\r\n"
				 "250 2.1.0 Ok\r\n"
				 "250 2.1.5 Ok\r\n"
				 "550 5.7.1 Relaying denied\r\n"
				 "501 5.1.3 Bad recipient address syntax\r\n"
				 "250 2.1.5 Ok\r\n"
				 "250 2.0.0 Ok\r\n");
	/* and nothing else was written */
	assert_true(recv(sv[1], buf, sizeof(buf), MSG_DONTWAIT) < 0);
	close(sv[1]);
	for (int i = 0; i < 20; i++)
		event_base_loop(base, EVLOOP_NONBLOCK);
}

static void test_simple_message(void **state)
{
	struct client *c = greeted(&smtp_li);
	struct message *m;

	(void)state;
	say(c, "MAIL FROM:<Sender@Example.COM> RET=HDRS ENVID=abc+2Bdef\r\n"
	       "RCPT TO:<one@allowed.example> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;one+40x\r\n"
	       "RCPT TO:<two@ALLOWED.example>\r\n"
	       "DATA\r\n");
	assert_string_equal(replies(c, 4), "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n"
					   "354 End data with <CR><LF>.<CR><LF>\r\n");
	say(c, "Subject: hi\r\n\r\nHello\r\n.\r\n");
	assert_string_equal(reply1(c), "250 2.0.0 Ok: queued as 0000000000001001\r\n");
	assert_int_equal(q.n, 1);
	m = q.msgs[0];
	assert_string_equal(m->sender, "Sender@Example.COM");
	assert_int_equal(m->ret, MSG_RET_HDRS);
	assert_string_equal(m->envid, "abc+2Bdef");
	assert_int_equal(m->body_type, MSG_BODY_7BIT);
	assert_int_equal(m->n_rcpts, 2);
	assert_string_equal(m->rcpts[0].addr, "one@allowed.example");
	assert_int_equal(m->rcpts[0].notify, RCPT_NOTIFY_SUCCESS | RCPT_NOTIFY_FAILURE);
	assert_string_equal(m->rcpts[0].orcpt, "rfc822;one+40x");
	assert_string_equal(m->rcpts[1].addr, "two@ALLOWED.example");
	assert_null(m->rcpts[1].orcpt);
	assert_string_equal(body_data(0), "Subject: hi\r\n\r\nHello\r\n");
	assert_int_equal(m->size, q.bodies[0]->len);
	/* Two recipients: no "for" clause */
	assert_null(strstr(q.bodies[0]->data, "\tfor <"));
	/* The session goes on */
	say(c, "MAIL FROM:<>\r\nRCPT TO:<x@allowed.example>\r\nDATA\r\n");
	assert_string_equal(replies(c, 3), "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"
					   "354 End data with <CR><LF>.<CR><LF>\r\n");
	say(c, ".\r\n");
	assert_string_equal(reply1(c), "250 2.0.0 Ok: queued as 0000000000001002\r\n");
	assert_string_equal(q.msgs[1]->sender, "");
	assert_string_equal(body_data(1), "");
	client_free(c);
}

static void test_received_header(void **state)
{
	struct client *c = connect_session(&smtp_li);
	const char *b;
	char date[64];

	(void)state;
	reply1(c);
	say(c, "EHLO good-name.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<Only@allowed.example>\r\n"
	       "DATA\r\n");
	replies(c, 4);
	say(c, "X: y\r\n.\r\n");
	assert_memory_equal(reply1(c), "250 2.0.0 Ok", 12);
	b = q.bodies[0]->data;
	assert_memory_equal(b, "Received: from good-name.example ([127.0.0.1])\r\n"
			       "\tby mx.test.example (tern) with ESMTP id ", 88);
	assert_non_null(strstr(b, "\r\n\tfor <Only@allowed.example>;\r\n\t"));
	/* RFC 5322 date, then the message */
	b = strstr(b, ";\r\n\t") + 4;
	assert_int_equal(sscanf(b, "%*3s, %*2d %*3s %*4d %*2d:%*2d:%*2d %63[-+0-9]", date), 1);
	assert_int_equal(strlen(date), 5);
	assert_string_equal(body_data(0), "X: y\r\n");

	/* A HELO name that is not plain host-name text is never copied */
	say(c, "HELO evil(name)\r\n");
	reply1(c);
	say(c, "MAIL FROM:<a@b.example>\r\nRCPT TO:<x@allowed.example>\r\nDATA\r\n.\r\n");
	replies(c, 4);
	assert_memory_equal(q.bodies[1]->data, "Received: from [invalid] ([127.0.0.1])\r\n"
					      "\tby mx.test.example (tern) with SMTP id ", 79);
	{
		static const char nul_helo[] = "EHLO a\0b\r\n";

		client_send(c, nul_helo, sizeof(nul_helo) - 1);
	}
	reply1(c);
	say(c, "MAIL FROM:<a@b.example>\r\nRCPT TO:<\"x y;z\"@allowed.example>\r\nDATA\r\n.\r\n");
	replies(c, 4);
	assert_memory_equal(q.bodies[2]->data, "Received: from [invalid] ([127.0.0.1])\r\n", 40);
	/* a recipient that could restructure the field is left out */
	assert_null(strstr(q.bodies[2]->data, "for <"));
	client_free(c);
}

static void test_relay_denied_and_max_rcpts(void **state)
{
	struct client *c = greeted(&smtp_li);

	(void)state;
	say(c, "RCPT TO:<x@allowed.example>\r\n");
	assert_string_equal(reply1(c), "503 5.5.1 Error: need MAIL command\r\n");
	say(c, "MAIL FROM:<a@b.example>\r\n"
	       "RCPT TO:<x@other.example>\r\n"
	       "RCPT TO:<x@sub.allowed.example>\r\n"
	       "RCPT TO:<1@allowed.example>\r\n"
	       "RCPT TO:<2@allowed.example>\r\n"
	       "RCPT TO:<3@allowed.example>\r\n"
	       "RCPT TO:<4@allowed.example>\r\n"
	       "RCPT TO:<5@other.example>\r\n");
	assert_string_equal(replies(c, 8), "250 2.1.0 Ok\r\n"
					   "550 5.7.1 Relaying denied\r\n"
					   "550 5.7.1 Relaying denied\r\n"
					   "250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n"
					   "452 4.5.3 Too many recipients\r\n"
					   "452 4.5.3 Too many recipients\r\n");
	client_free(c);
}

static void test_size_limit(void **state)
{
	struct client *c = greeted(&smtp_li);
	char big[3000];

	(void)state;
	say(c, "MAIL FROM:<a@b.example> SIZE=1001\r\n");
	assert_string_equal(reply1(c), "552 5.3.4 Message size exceeds fixed maximum message size\r\n");
	say(c, "RCPT TO:<x@allowed.example>\r\n");
	assert_string_equal(reply1(c), "503 5.5.1 Error: need MAIL command\r\n");
	say(c, "MAIL FROM:<a@b.example> SIZE=1000\r\nRCPT TO:<x@allowed.example>\r\nDATA\r\n");
	replies(c, 3);
	/* 2,900 bytes of data: read to the end, then refused; in step after */
	for (size_t i = 0; i < sizeof(big); i += 100) {
		memset(big + i, 'x', 98);
		memcpy(big + i + 98, "\r\n", 2);
	}
	client_send(c, big, sizeof(big) - 100);
	say(c, ".\r\nNOOP\r\n");
	assert_string_equal(replies(c, 2), "552 5.3.4 Message size exceeds fixed maximum message size\r\n"
					   "250 2.0.0 Ok\r\n");
	assert_int_equal(q.n, 0);
	/* exactly the limit is fine: 10 lines of 100 bytes */
	say(c, "MAIL FROM:<a@b.example>\r\nRCPT TO:<x@allowed.example>\r\nDATA\r\n");
	replies(c, 3);
	client_send(c, big, 1000);
	say(c, ".\r\n");
	assert_memory_equal(reply1(c), "250 2.0.0 Ok: queued", 20);
	assert_int_equal(strlen(body_data(0)), 1000);
	client_free(c);
}

static void data_message(struct client *c, const char *data, size_t len)
{
	say(c, "MAIL FROM:<a@b.example>\r\nRCPT TO:<x@allowed.example>\r\nDATA\r\n");
	assert_string_equal(replies(c, 3), "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"
					   "354 End data with <CR><LF>.<CR><LF>\r\n");
	client_send(c, data, len);
}

static void test_bare_lf_and_cr(void **state)
{
	static const char *const bodies[] = {
		"Subject: a\r\n\r\nline\nmore\r\n.\r\n",
		"Subject: a\r\n\r\nline\rmore\r\n.\r\n",
		"Subject: a\r\n\r\nline\r\r\n.\r\n",
		"Subject: a\n\r\n.\r\n",
		"\n.\r\n.\r\n", /* the first is a line "." after a bare LF */
	};
	struct client *c = greeted(&smtp_li);

	(void)state;
	for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
		data_message(c, bodies[i], strlen(bodies[i]));
		assert_string_equal(reply1(c), "550 5.6.0 Message contains bare CR or LF\r\n");
	}
	assert_int_equal(q.n, 0);
	client_free(c);
}

/* SMTP smuggling: a second message hidden behind an end marker that is
 * not CRLF.CRLF must not be queued; the whole is one (refused) message. */
static void test_smuggling(void **state)
{
	static const char *const markers[] = { "\n.\n", "\n.\r\n", "\r.\r\n", "\r\n.\n", "\r.\r" };
	struct client *c = greeted(&smtp_li);
	char body[1000];

	(void)state;
	for (size_t i = 0; i < sizeof(markers) / sizeof(markers[0]); i++) {
		snprintf(body, sizeof(body),
			 "Subject: innocent\r\n\r\nhello%s"
			 "MAIL FROM:<evil@attacker.example>\r\n"
			 "RCPT TO:<victim@allowed.example>\r\n"
			 "DATA\r\n"
			 "Subject: smuggled\r\n\r\nsmuggled\r\n.\r\n"
			 "NOOP\r\n", markers[i]);
		data_message(c, body, strlen(body));
		assert_string_equal(replies(c, 2), "550 5.6.0 Message contains bare CR or LF\r\n"
						   "250 2.0.0 Ok\r\n");
	}
	assert_int_equal(q.n, 0);
	client_free(c);
}

static void test_dot_unstuffing(void **state)
{
	static const char data[] = "Subject: dots\r\n\r\n"
				   "..leading dot\r\n"
				   "...two\r\n"
				   ". space\r\n"
				   "..\r\n"
				   "mid.dle\r\n"
				   ".\r\n";
	struct client *c = greeted(&smtp_li);

	(void)state;
	data_message(c, data, sizeof(data) - 1);
	assert_memory_equal(reply1(c), "250 2.0.0 Ok: queued", 20);
	assert_string_equal(body_data(0), "Subject: dots\r\n\r\n"
					  ".leading dot\r\n"
					  "..two\r\n"
					  " space\r\n"
					  ".\r\n"
					  "mid.dle\r\n");
	client_free(c);
}

/* The end marker split across reads, one byte at a time. */
static void test_data_byte_by_byte(void **state)
{
	static const char data[] = "A: b\r\n\r\n..x\r\ny\r\n.\r\n";
	struct client *c = greeted(&smtp_li);

	(void)state;
	say(c, "MAIL FROM:<a@b.example>\r\nRCPT TO:<x@allowed.example>\r\nDATA\r\n");
	replies(c, 3);
	for (size_t i = 0; i + 1 < sizeof(data); i++) {
		client_send(c, data + i, 1);
		pump(c);
	}
	assert_memory_equal(reply1(c), "250 2.0.0 Ok: queued", 20);
	assert_string_equal(body_data(0), "A: b\r\n\r\n.x\r\ny\r\n");
	client_free(c);
}

static void test_received_loop(void **state)
{
	static const char three[] = "Received: from a\r\nReceived: from b\r\n"
				    "received: from c\r\n\tfolded\r\nSubject: x\r\n\r\n"
				    "Received: in the body does not count\r\n.\r\n";
	static const char four[] = "Received: from a\r\nReceived: from b\r\n"
				   "Received: from c\r\nRECEIVED: from d\r\n\r\nbody\r\n.\r\n";
	struct client *c = greeted(&smtp_li);

	(void)state;
	data_message(c, three, sizeof(three) - 1);
	assert_memory_equal(reply1(c), "250 2.0.0 Ok: queued", 20);
	data_message(c, four, sizeof(four) - 1);
	assert_string_equal(reply1(c), "554 5.4.6 Too many Received headers: mail loop\r\n");
	assert_int_equal(q.n, 1);
	client_free(c);
}

static void test_bdat(void **state)
{
	static const char chunks[] = "BDAT 12\r\nSubject: x\r\n"
				     "BDAT 0\r\n"
				     "BDAT 9\r\n\r\nbody\r\n\r"
				     "BDAT 6 LAST\r\n\nend\r\n";
	struct client *c = greeted(&smtp_li);

	(void)state;
	say(c, "MAIL FROM:<a@b.example>\r\nRCPT TO:<x@allowed.example>\r\n");
	say(c, chunks);
	assert_string_equal(replies(c, 6), "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"
					   "250 2.0.0 Ok: 12 octets received\r\n"
					   "250 2.0.0 Ok: 0 octets received\r\n"
					   "250 2.0.0 Ok: 9 octets received\r\n"
					   "250 2.0.0 Ok: queued as 0000000000001001\r\n");
	/* the CR ending one chunk and the LF starting the next are a pair */
	assert_string_equal(body_data(0), "Subject: x\r\n\r\nbody\r\n\r\nend\r\n");
	assert_memory_equal(q.bodies[0]->data, "Received: from client.example ([127.0.0.1])\r\n", 45);

	/* DATA after BDAT, BDAT before RCPT: refused after reading the octets */
	say(c, "MAIL FROM:<a@b.example>\r\nBDAT 4\r\nQUITRCPT TO:<x@allowed.example>\r\n"
	       "BDAT 3\r\nabcDATA\r\nBDAT 2 LAST\r\nxy");
	assert_string_equal(replies(c, 6), "250 2.1.0 Ok\r\n"
					   "554 5.5.1 Error: no valid recipients\r\n"
					   "250 2.1.5 Ok\r\n"
					   "250 2.0.0 Ok: 3 octets received\r\n"
					   "503 5.5.1 Error: DATA after BDAT\r\n"
					   "250 2.0.0 Ok: queued as 0000000000001002\r\n");
	assert_string_equal(body_data(1), "abcxy");
	say(c, "BDAT 5 LAST\r\nhello");
	assert_string_equal(reply1(c), "503 5.5.1 Error: need MAIL command\r\n");
	say(c, "BDAT nope\r\n");
	assert_string_equal(reply1(c), "501 5.5.4 Syntax: BDAT size [LAST]\r\n");
	client_free(c);
}

static void test_bdat_binarymime_and_bare_lf(void **state)
{
	static const char bin[] = "A: b\r\n\r\n\n\r\x00\xff.\r\n";
	char cmd[64];
	struct client *c = greeted(&smtp_li);

	(void)state;
	say(c, "MAIL FROM:<a@b.example> BODY=BINARYMIME\r\nRCPT TO:<x@allowed.example>\r\nDATA\r\n");
	assert_string_equal(replies(c, 3), "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"
					   "503 5.5.1 Error: BODY=BINARYMIME requires BDAT\r\n");
	snprintf(cmd, sizeof(cmd), "BDAT %zu LAST\r\n", sizeof(bin) - 1);
	say(c, cmd);
	client_send(c, bin, sizeof(bin) - 1);
	assert_memory_equal(reply1(c), "250 2.0.0 Ok: queued", 20);
	assert_int_equal(q.msgs[0]->body_type, MSG_BODY_BINARYMIME);
	assert_memory_equal(body_data(0), bin, sizeof(bin) - 1);
	/* without BINARYMIME, a bare LF in a chunk fails the message */
	say(c, "MAIL FROM:<a@b.example> BODY=8BITMIME\r\nRCPT TO:<x@allowed.example>\r\n"
	       "BDAT 9 LAST\r\nA: b\n\r\n\r\n");
	assert_string_equal(replies(c, 3), "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"
					   "550 5.6.0 Message contains bare CR or LF\r\n");
	/* ... and so does a CR at the very end */
	say(c, "MAIL FROM:<a@b.example>\r\nRCPT TO:<x@allowed.example>\r\nBDAT 7 LAST\r\nA: b\r\n\r");
	assert_string_equal(replies(c, 3), "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"
					   "550 5.6.0 Message contains bare CR or LF\r\n");
	assert_int_equal(q.n, 1);
	client_free(c);
}

static void test_bdat_oversize(void **state)
{
	char chunk[700];
	struct client *c = greeted(&smtp_li);

	(void)state;
	memset(chunk, 'x', sizeof(chunk));
	say(c, "MAIL FROM:<a@b.example>\r\nRCPT TO:<x@allowed.example>\r\nBDAT 700\r\n");
	client_send(c, chunk, 700);
	say(c, "BDAT 700\r\n");
	client_send(c, chunk, 700);
	say(c, "BDAT 700 LAST\r\n");
	client_send(c, chunk, 700);
	assert_string_equal(replies(c, 5), "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"
					   "250 2.0.0 Ok: 700 octets received\r\n"
					   "552 5.3.4 Message size exceeds fixed maximum message size\r\n"
					   "503 5.5.1 Error: need MAIL command\r\n");
	assert_int_equal(q.n, 0);
	client_free(c);
}

static void test_rset_and_sequence(void **state)
{
	struct client *c = connect_session(&smtp_li);

	(void)state;
	reply1(c);
	say(c, "MAIL FROM:<a@b.example>\r\nDATA\r\nBOGUS\r\nEXPN list\r\nVRFY x\r\nVRFY\r\nHELP\r\n"
	       "NOOP anything\r\nRSET x\r\nRSET\r\n");
	assert_string_equal(replies(c, 10), "503 5.5.1 Error: send HELO/EHLO first\r\n"
					    "503 5.5.1 Error: need MAIL command\r\n"
					    "500 5.5.1 Command unrecognized\r\n"
					    "502 5.5.1 Command not implemented\r\n"
					    "252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery\r\n"
					    "501 5.5.4 Syntax: VRFY address\r\n"
					    "214 2.0.0 Commands: HELO EHLO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP\r\n"
					    "250 2.0.0 Ok\r\n"
					    "501 5.5.4 Syntax: RSET\r\n"
					    "250 2.0.0 Ok\r\n");
	say(c, "EHLO x\r\n");
	reply1(c);
	say(c, "MAIL FROM:<a@b.example>\r\nMAIL FROM:<a@b.example>\r\nDATA\r\n"
	       "RCPT TO:<x@allowed.example>\r\nRSET\r\nRCPT TO:<x@allowed.example>\r\nDATA\r\n"
	       "STARTTLS\r\nAUTH PLAIN\r\n");
	assert_string_equal(replies(c, 9), "250 2.1.0 Ok\r\n"
					   "503 5.5.1 Error: nested MAIL command\r\n"
					   "554 5.5.1 Error: no valid recipients\r\n"
					   "250 2.1.5 Ok\r\n"
					   "250 2.0.0 Ok\r\n"
					   "503 5.5.1 Error: need MAIL command\r\n"
					   "503 5.5.1 Error: need MAIL command\r\n"
					   "502 5.5.1 Command not implemented\r\n"
					   "502 5.5.1 Command not implemented\r\n");
	/* EHLO in a transaction resets it */
	say(c, "MAIL FROM:<a@b.example>\r\nEHLO y\r\nRCPT TO:<x@allowed.example>\r\n");
	assert_string_equal(reply1(c), "250 2.1.0 Ok\r\n");
	assert_memory_equal(reply1(c), "250-mx.test.example\r\n", 21);
	assert_string_equal(reply1(c), "503 5.5.1 Error: need MAIL command\r\n");
	client_free(c);
}

static void test_line_too_long(void **state)
{
	char line[5000];
	struct client *c = greeted(&smtp_li);

	(void)state;
	memset(line, 'A', sizeof(line));
	memcpy(line, "NOOP ", 5);
	memcpy(line + 3000, "\r\n", 2);
	client_send(c, line, 3002);
	say(c, "NOOP\r\n");
	assert_string_equal(replies(c, 2), "500 5.5.2 Line too long\r\n250 2.0.0 Ok\r\n");
	/* 2,048 with the CRLF is the most; 2,049 is too long */
	memcpy(line + 2046, "\r\n", 2);
	client_send(c, line, 2048);
	assert_string_equal(reply1(c), "250 2.0.0 Ok\r\n");
	line[2046] = 'A';
	memcpy(line + 2047, "\r\n", 2);
	client_send(c, line, 2049);
	assert_string_equal(reply1(c), "500 5.5.2 Line too long\r\n");
	/* a long line arriving in pieces is refused once */
	for (int i = 0; i < 5; i++) {
		client_send(c, line + 5, 1000);
		pump_for(c, 5);
	}
	say(c, "\r\nNOOP\r\n");
	assert_string_equal(replies(c, 2), "500 5.5.2 Line too long\r\n250 2.0.0 Ok\r\n");
	client_free(c);
}

static void test_timeout(void **state)
{
	struct client *c;
	int64_t t0;

	(void)state;
	teardown(NULL);
	setup_with("[session]\ntimeout = \"300ms\"\n");
	c = greeted(&smtp_li);
	t0 = now_ms();
	assert_string_equal(reply1(c), "421 4.4.2 mx.test.example Timeout\r\n");
	assert_true(now_ms() - t0 >= 250);
	wait_eof(c);
	client_free(c);

	/* in DATA too, per read */
	c = greeted(&smtp_li);
	data_message(c, "Subject: slow\r\n", 15);
	pump_for(c, 200);
	say(c, "more\r\n");
	pump_for(c, 200);
	assert_int_equal(c->len, c->pos);
	assert_string_equal(reply1(c), "421 4.4.2 mx.test.example Timeout\r\n");
	wait_eof(c);
	assert_int_equal(q.n, 0);
	client_free(c);

	/* waiting for the queue is not idleness */
	q.mode = Q_DEFER;
	c = greeted(&smtp_li);
	data_message(c, ".\r\n", 3);
	no_reply(c, 700);
	fire_pending();
	assert_memory_equal(reply1(c), "250 2.0.0 Ok: queued", 20);
	client_free(c);
}

static void test_reply_waits_for_queue(void **state)
{
	struct client *c = greeted(&smtp_li);

	(void)state;
	q.mode = Q_DEFER;
	say(c, "MAIL FROM:<a@b.example>\r\nRCPT TO:<x@allowed.example>\r\nDATA\r\n");
	replies(c, 3);
	say(c, "A: b\r\n\r\nc\r\n.\r\nNOOP\r\nQUIT\r\n");
	no_reply(c, 100);
	assert_int_equal(q.n, 1);
	q.next_id = 0x1234;
	fire_pending();
	assert_string_equal(replies(c, 3), "250 2.0.0 Ok: queued as 0000000000001234\r\n"
					   "250 2.0.0 Ok\r\n"
					   "221 2.0.0 mx.test.example Bye\r\n");
	wait_eof(c);
	client_free(c);
}

static void test_queue_failures(void **state)
{
	struct client *c = greeted(&smtp_li);

	(void)state;
	q.mode = Q_ENOSPC;
	data_message(c, ".\r\n", 3);
	assert_string_equal(reply1(c), "452 4.3.1 Insufficient system storage\r\n");
	q.mode = Q_EIO_RETURN;
	data_message(c, ".\r\n", 3);
	assert_string_equal(reply1(c), "451 4.3.0 Local error; try again later\r\n");
	/* a callback from inside queue_submit is fine too */
	q.mode = Q_SYNC;
	data_message(c, ".\r\nNOOP\r\n", 9);
	assert_string_equal(replies(c, 2), "250 2.0.0 Ok: queued as 0000000000001002\r\n"
					   "250 2.0.0 Ok\r\n");
	client_free(c);
}

static void test_disconnect_while_queued(void **state)
{
	struct client *c = greeted(&smtp_li);

	(void)state;
	q.mode = Q_DEFER;
	data_message(c, ".\r\n", 3);
	no_reply(c, 50);
	assert_non_null(q.cb);
	client_free(c);
	for (int i = 0; i < 100 && q.cb != NULL; i++)
		pump(NULL);
	assert_null(q.cb);
	assert_int_equal(q.forgotten, 1);
	assert_int_equal(q.n, 1); /* the message stays queued */
}

static void test_messages_per_session(void **state)
{
	struct client *c = greeted(&smtp_li);

	(void)state;
	for (int i = 0; i < 3; i++) {
		data_message(c, ".\r\n", 3);
		assert_memory_equal(reply1(c), "250 2.0.0 Ok: queued", 20);
	}
	say(c, "MAIL FROM:<a@b.example>\r\n");
	assert_string_equal(reply1(c), "421 4.7.0 mx.test.example Too many messages in this session\r\n");
	wait_eof(c);
	assert_int_equal(q.n, 3);
	client_free(c);
}

static void test_lmtp(void **state)
{
	struct client *c = connect_session(&lmtp_li);

	(void)state;
	assert_string_equal(reply1(c), "220 mx.test.example tern lmtp\r\n");
	say(c, "EHLO x\r\nHELO x\r\nLHLO client.example\r\n");
	assert_string_equal(replies(c, 3), "500 5.5.1 Error: this is LMTP, use LHLO\r\n"
					   "500 5.5.1 Error: this is LMTP, use LHLO\r\n"
					   "250-mx.test.example\r\n250-PIPELINING\r\n250-SIZE 1000\r\n"
					   "250-8BITMIME\r\n250-SMTPUTF8\r\n250-ENHANCEDSTATUSCODES\r\n"
					   "250-CHUNKING\r\n250 DSN\r\n");
	say(c, "MAIL FROM:<a@b.example>\r\nRCPT TO:<1@allowed.example>\r\nRCPT TO:<2@nope.example>\r\n"
	       "RCPT TO:<3@allowed.example>\r\nDATA\r\n");
	replies(c, 5);
	say(c, "A: b\r\n\r\n.\r\n");
	assert_string_equal(replies(c, 2), "250 2.0.0 Ok: queued as 0000000000001001\r\n"
					   "250 2.0.0 Ok: queued as 0000000000001001\r\n");
	assert_non_null(strstr(q.bodies[0]->data, " with LMTP id "));
	/* refusals come once per recipient too */
	say(c, "MAIL FROM:<a@b.example>\r\nRCPT TO:<1@allowed.example>\r\nRCPT TO:<2@allowed.example>\r\n"
	       "BDAT 4 LAST\r\na\nb\r");
	assert_string_equal(replies(c, 5), "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n"
					   "550 5.6.0 Message contains bare CR or LF\r\n"
					   "550 5.6.0 Message contains bare CR or LF\r\n");
	client_free(c);
}

static void test_stop(void **state)
{
	struct client *idle = greeted(&smtp_li);
	struct client *busy = greeted(&smtp_li);

	(void)state;
	say(busy, "MAIL FROM:<a@b.example>\r\nRCPT TO:<x@allowed.example>\r\n");
	replies(busy, 2);
	inbound_stop(fx.in);
	assert_string_equal(reply1(idle), "421 4.3.2 mx.test.example Service shutting down\r\n");
	wait_eof(idle);
	/* the transaction may finish, then the session closes */
	no_reply(busy, 50);
	say(busy, "DATA\r\nA: b\r\n\r\n.\r\n");
	assert_string_equal(replies(busy, 3), "354 End data with <CR><LF>.<CR><LF>\r\n"
					      "250 2.0.0 Ok: queued as 0000000000001001\r\n"
					      "421 4.3.2 mx.test.example Service shutting down\r\n");
	wait_eof(busy);
	client_free(idle);
	client_free(busy);
}

static void test_utf8_and_addresses(void **state)
{
	struct client *c = greeted(&smtp_li);

	(void)state;
	say(c, "MAIL FROM:<j\xc3\xb8rn@b.example>\r\n"
	       "MAIL FROM:<j\xc3\xb8rn@b.example> SMTPUTF8\r\n"
	       "RCPT TO:<\xc3\xb8@allowed.example>\r\n"
	       "RCPT TO:<x@allowed.example\r\n"
	       "RCPT TO:<x@allowed.example>>\r\n");
	assert_string_equal(replies(c, 5), "553 5.6.7 Non-ASCII address requires SMTPUTF8\r\n"
					   "250 2.1.0 Ok\r\n"
					   "250 2.1.5 Ok\r\n"
					   "501 5.5.4 Syntax: RCPT TO:<address> [parameters]\r\n"
					   "501 5.5.4 Syntax: RCPT TO:<address> [parameters]\r\n");
	client_free(c);
}

/* A client that pipelines without reading its replies: the session stops
 * processing once replies pile up, then stops reading (the client's sends
 * block), and catches up in order once the client reads. */
static void test_backpressure(void **state)
{
	enum { CMDS = 200000 };
	static const char noop[] = "NOOP\r\n";
	int sv[2], small = 4096;
	size_t sent = 0, got = 0, tail = 0;
	int idle = 0;
	char buf[65536];

	(void)state;
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	for (int i = 0; i < 2; i++) {
		setsockopt(sv[i], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
		setsockopt(sv[i], SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
		set_nonblock(sv[i]);
	}
	assert_int_equal(session_start(fx.in, &smtp_li, sv[0], NULL, NULL), 0);
	/* Send until the server has not taken anything for a while. */
	while (sent < CMDS * 6 && idle < 200) {
		ssize_t n = send(sv[1], noop + sent % 6, 6 - sent % 6, MSG_DONTWAIT);

		if (n > 0) {
			sent += (size_t)n;
			idle = 0;
		} else {
			idle++;
			event_base_loop(base, EVLOOP_NONBLOCK);
		}
	}
	/* It stopped well short: input and replies are bounded. */
	assert_true(sent < 400 * 1000); /* IN_HIGH_WATER, a read, OUT_HIGH_WATER of replies */
	/* Now read, and send the rest; every NOOP gets its reply, in order. */
	while (got < CMDS + 1) {
		ssize_t n;

		if (sent < CMDS * 6) {
			n = send(sv[1], noop + sent % 6, 6 - sent % 6, MSG_DONTWAIT);
			if (n > 0)
				sent += (size_t)n;
		}
		event_base_loop(base, EVLOOP_NONBLOCK);
		n = recv(sv[1], buf + tail, sizeof(buf) - tail, MSG_DONTWAIT);
		if (n <= 0)
			continue;
		tail += (size_t)n;
		for (;;) {
			char *nl = memchr(buf, '\n', tail);
			size_t l;

			if (nl == NULL)
				break;
			l = (size_t)(nl - buf) + 1;
			if (got == 0)
				assert_memory_equal(buf, "220 ", 4);
			else if (l != 14 || memcmp(buf, "250 2.0.0 Ok\r\n", 14) != 0)
				fail_msg("reply %zu: %.*s", got, (int)l, buf);
			got++;
			memmove(buf, buf + l, tail - l);
			tail -= l;
		}
	}
	close(sv[1]);
	for (int i = 0; i < 20; i++)
		event_base_loop(base, EVLOOP_NONBLOCK);
}

/* The real listener: max-connections, and the 421 beyond it. */
static void test_listener_max_connections(void **state)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t len = sizeof(sin);
	char extra[256];
	int fd = socket(AF_INET, SOCK_STREAM, 0), c1, c2;
	struct client *c;
	char buf[256];
	ssize_t n;

	(void)state;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	bind(fd, (struct sockaddr *)&sin, sizeof(sin));
	getsockname(fd, (struct sockaddr *)&sin, &len);
	close(fd);
	teardown(NULL);
	snprintf(extra, sizeof(extra),
		 "[server.listener.\"mx\"]\nbind = [\"127.0.0.1:%d\"]\ngreeting = \"listener greeting\"\n"
		 "[server.listener.\"lm\"]\nbind = \"127.0.0.1:%d\"\nprotocol = \"lmtp\"\n",
		 ntohs(sin.sin_port), ntohs(sin.sin_port) + 1);
	setup_with(extra);
	/* base_config has no max-connections; a second load for it would
	 * redefine [server]: set the limit directly. */
	fx.in->max_sessions = 1;
	c = calloc(1, sizeof(*c));
	c->fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_int_equal(connect(c->fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	set_nonblock(c->fd);
	assert_string_equal(reply1(c), "220 mx.test.example listener greeting\r\n");
	c1 = socket(AF_INET, SOCK_STREAM, 0);
	assert_int_equal(connect(c1, (struct sockaddr *)&sin, sizeof(sin)), 0);
	for (int i = 0; i < 200; i++) {
		struct pollfd p = { .fd = c1, .events = POLLIN };

		event_base_loop(base, EVLOOP_NONBLOCK);
		if (poll(&p, 1, 1) > 0)
			break;
	}
	n = recv(c1, buf, sizeof(buf) - 1, MSG_DONTWAIT);
	assert_true(n > 0);
	buf[n] = '\0';
	assert_string_equal(buf, "421 4.3.2 Too many connections\r\n");
	close(c1);
	client_free(c);
	/* the LMTP listener, once the slot is free again */
	for (int i = 0; i < 50; i++)
		pump(NULL);
	sin.sin_port = htons((uint16_t)(ntohs(sin.sin_port) + 1));
	c2 = socket(AF_INET, SOCK_STREAM, 0);
	assert_int_equal(connect(c2, (struct sockaddr *)&sin, sizeof(sin)), 0);
	c = calloc(1, sizeof(*c));
	c->fd = c2;
	set_nonblock(c2);
	assert_string_equal(reply1(c), "220 mx.test.example tern test\r\n");
	say(c, "LHLO x\r\n");
	assert_memory_equal(reply1(c), "250-mx.test.example\r\n", 21);
	client_free(c);
	/* a bind that cannot be had is an error naming it */
	{
		struct config *cfg2;
		struct diags diags;
		char text[1024], err[256];
		struct server srv2 = fx.srv;

		snprintf(text, sizeof(text), "[server.listener.\"x\"]\nbind = \"127.0.0.1:%d\"\n",
			 ntohs(sin.sin_port));
		diags_init(&diags, "t.toml");
		cfg2 = config_load_buffer(text, strlen(text), "/tmp", 0, &diags);
		diags_free(&diags);
		assert_non_null(cfg2);
		srv2.cfg = cfg2;
		assert_null(inbound_start(&srv2, err, sizeof(err)));
		snprintf(text, sizeof(text), "cannot listen on 127.0.0.1:%d: Address already in use",
			 ntohs(sin.sin_port));
		assert_string_equal(err, text);
		config_free(cfg2);
	}
}

/* ---- TLS, AUTH and REQUIRETLS ---- */

static char cert_pem[4096], key_pem[2048];
static struct tls_server *fx_tls;
static struct listener_info tls_li = { "smtp-tls", false, "tern test", NULL, false };

static void pem_of(BIO *b, char *out, size_t cap)
{
	int n = BIO_read(b, out, (int)cap - 1);

	assert_true(n > 0);
	out[n] = '\0';
	BIO_free(b);
}

/* A self-signed P-256 certificate for the server, in memory. */
static void make_certificate(void)
{
	EVP_PKEY *key = EVP_EC_gen("P-256");
	X509 *x = X509_new();
	X509_NAME *name;
	BIO *b;

	assert_non_null(key);
	assert_non_null(x);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
	X509_gmtime_adj(X509_getm_notBefore(x), -60);
	X509_gmtime_adj(X509_getm_notAfter(x), 86400);
	X509_set_pubkey(x, key);
	name = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"mx.test.example",
				   -1, -1, 0);
	X509_set_issuer_name(x, name);
	assert_true(X509_sign(x, key, EVP_sha256()) > 0);
	b = BIO_new(BIO_s_mem());
	PEM_write_bio_X509(b, x);
	pem_of(b, cert_pem, sizeof(cert_pem));
	b = BIO_new(BIO_s_mem());
	PEM_write_bio_PrivateKey(b, key, NULL, NULL, 0, NULL, NULL);
	pem_of(b, key_pem, sizeof(key_pem));
	X509_free(x);
	EVP_PKEY_free(key);
}

/* The base config, the certificate inline, extra; tls_li has it. */
static void setup_tls_with(const char *extra)
{
	char text[sizeof(cert_pem) + sizeof(key_pem) + 2048], err[256];

	snprintf(text, sizeof(text),
		 "[certificate.\"test\"]\ncert = \"\"\"\n%s\"\"\"\nprivate-key = \"\"\"\n%s\"\"\"\n%s",
		 cert_pem, key_pem, extra);
	setup_with(text);
	fx_tls = tls_server_new(fx.cfg, "test", err, sizeof(err));
	if (fx_tls == NULL)
		fail_msg("%s", err);
	tls_li.tls = fx_tls;
}

#define AUTH_CONFIG                                                                    \
	"[list]\nusers = [\"alice:s3cret\"]\n"                                         \
	"[session.auth]\nmechanisms = [\"plain\", \"login\"]\nlookup = \"list/users\"\n"

static int setup_tls(void **state)
{
	(void)state;
	setup_tls_with(AUTH_CONFIG "[session.extensions]\nrequiretls = true\n");
	return 0;
}

static int setup_tls_require(void **state)
{
	(void)state;
	setup_tls_with(AUTH_CONFIG "require = true\n");
	return 0;
}

static int setup_auth_clear(void **state)
{
	(void)state;
	setup_with(AUTH_CONFIG "allow-plain-text = true\n");
	return 0;
}

static int teardown_tls(void **state)
{
	teardown(state);
	tls_server_free(fx_tls);
	fx_tls = NULL;
	tls_li.tls = NULL;
	return 0;
}

/* After the server's 220: the client's side of the handshake. */
static void client_handshake(struct client *c)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	int64_t end = now_ms() + 5000;

	assert_non_null(ctx);
	c->ssl = SSL_new(ctx);
	SSL_CTX_free(ctx);
	assert_non_null(c->ssl);
	SSL_set_fd(c->ssl, c->fd);
	for (;;) {
		int r = SSL_connect(c->ssl), e;

		if (r == 1)
			break;
		e = SSL_get_error(c->ssl, r);
		if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
			fail_msg("handshake failed: %d", e);
		assert_true(now_ms() < end);
		pump(NULL);
	}
}

static const char *plain_ir(const char *user, const char *pass, char *out)
{
	char raw[128];
	size_t ul = strlen(user), pl = strlen(pass);

	raw[0] = '\0';
	memcpy(raw + 1, user, ul);
	raw[1 + ul] = '\0';
	memcpy(raw + 2 + ul, pass, pl);
	base64_encode(raw, ul + pl + 2, out);
	return out;
}

static void test_starttls_advertised_only_with_certificate(void **state)
{
	struct client *c = greeted(&smtp_li);

	(void)state;
	assert_null(strstr(c->last, "STARTTLS"));
	say(c, "STARTTLS\r\n");
	assert_string_equal(reply1(c), "502 5.5.1 Command not implemented\r\n");
	client_free(c);

	c = connect_session(&tls_li);
	reply1(c);
	say(c, "STARTTLS\r\n");
	assert_string_equal(reply1(c), "503 5.5.1 Error: send HELO/EHLO first\r\n");
	say(c, "EHLO client.example\r\n");
	assert_non_null(strstr(reply1(c), "250 STARTTLS\r\n"));
	/* REQUIRETLS and AUTH (not allowed in clear) are not offered yet */
	assert_null(strstr(c->last, "REQUIRETLS"));
	assert_null(strstr(c->last, "AUTH"));
	say(c, "STARTTLS now\r\n");
	assert_string_equal(reply1(c), "501 5.5.4 Syntax: STARTTLS\r\n");
	say(c, "MAIL FROM:<a@b.example>\r\nSTARTTLS\r\nRSET\r\n");
	assert_string_equal(replies(c, 3), "250 2.1.0 Ok\r\n"
					   "503 5.5.1 Error: MAIL transaction in progress\r\n"
					   "250 2.0.0 Ok\r\n");
	client_free(c);
}

static void test_starttls_discards_input_and_resets(void **state)
{
	struct client *c = greeted(&tls_li);

	(void)state;
	/* Pipelined after STARTTLS in one packet: must never be answered. */
	say(c, "STARTTLS\r\nRSET\r\nMAIL FROM:<evil@b.example>\r\n");
	assert_string_equal(reply1(c), "220 2.0.0 Ready to start TLS\r\n");
	client_handshake(c);
	no_reply(c, 100);
	/* As after the banner: no EHLO, no transaction */
	say(c, "MAIL FROM:<a@b.example>\r\n");
	assert_string_equal(reply1(c), "503 5.5.1 Error: send HELO/EHLO first\r\n");
	say(c, "EHLO client.example\r\n");
	reply1(c);
	assert_null(strstr(c->last, "STARTTLS"));
	assert_non_null(strstr(c->last, "250-AUTH PLAIN LOGIN\r\n"));
	assert_non_null(strstr(c->last, "REQUIRETLS\r\n"));
	say(c, "STARTTLS\r\n");
	assert_string_equal(reply1(c), "503 5.5.1 Error: TLS already active\r\n");
	client_free(c);
}

static void test_requiretls_and_received_under_tls(void **state)
{
	struct client *c = greeted(&tls_li);
	char ir[128];

	(void)state;
	say(c, "MAIL FROM:<a@b.example> REQUIRETLS\r\n");
	assert_string_equal(reply1(c), "555 5.5.4 Unsupported parameter\r\n");
	say(c, "AUTH PLAIN\r\n");
	assert_string_equal(reply1(c), "538 5.7.11 Encryption required for requested "
				       "authentication mechanism\r\n");
	say(c, "STARTTLS\r\n");
	reply1(c);
	client_handshake(c);
	say(c, "EHLO client.example\r\n");
	reply1(c);
	say(c, "MAIL FROM:<a@b.example> REQUIRETLS\r\nRCPT TO:<x@allowed.example>\r\nDATA\r\n");
	assert_string_equal(replies(c, 3), "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"
					   "354 End data with <CR><LF>.<CR><LF>\r\n");
	say(c, "Subject: s\r\n\r\nx\r\n.\r\n");
	assert_memory_equal(reply1(c), "250 2.0.0 Ok: queued", 20);
	assert_true(q.msgs[0]->requiretls);
	assert_non_null(strstr(q.bodies[0]->data, "\r\n\t(using TLSv1."));
	assert_non_null(strstr(q.bodies[0]->data, " with ESMTPS id "));
	/* Authenticated too: ESMTPSA */
	say(c, "AUTH PLAIN ");
	say(c, plain_ir("alice", "s3cret", ir));
	say(c, "\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<x@allowed.example>\r\nDATA\r\n");
	assert_string_equal(replies(c, 4), "235 2.7.0 Authentication successful\r\n"
					   "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"
					   "354 End data with <CR><LF>.<CR><LF>\r\n");
	say(c, "x\r\n.\r\n");
	assert_memory_equal(reply1(c), "250 2.0.0 Ok: queued", 20);
	assert_false(q.msgs[1]->requiretls);
	assert_non_null(strstr(q.bodies[1]->data, " with ESMTPSA id "));
	client_free(c);
}

static void test_auth_state_machine(void **state)
{
	struct client *c = connect_session(&smtp_li);
	char ir[128];

	(void)state;
	reply1(c);
	say(c, "AUTH PLAIN\r\n");
	assert_string_equal(reply1(c), "503 5.5.1 Error: send HELO/EHLO first\r\n");
	say(c, "EHLO client.example\r\n");
	assert_non_null(strstr(reply1(c), "250 AUTH PLAIN LOGIN\r\n"));
	say(c, "AUTH\r\nAUTH CRAM-MD5\r\nAUTH PLAIN not*base64\r\nAUTH PLAIN\r\n");
	assert_string_equal(replies(c, 4), "501 5.5.4 Syntax: AUTH mechanism [initial-response]\r\n"
					   "504 5.5.4 Unrecognized authentication type\r\n"
					   "501 5.5.2 Cannot decode response\r\n"
					   "334 \r\n");
	say(c, "*\r\n");
	assert_string_equal(reply1(c), "501 5.0.0 Authentication cancelled\r\n");
	/* LOGIN: user name, then a wrong password */
	say(c, "AUTH LOGIN\r\n");
	assert_string_equal(reply1(c), "334 VXNlcm5hbWU6\r\n");
	say(c, "YWxpY2U=\r\n");
	assert_string_equal(reply1(c), "334 UGFzc3dvcmQ6\r\n");
	say(c, "d3Jvbmc=\r\n");
	assert_string_equal(reply1(c), "535 5.7.8 Authentication credentials invalid\r\n");
	/* PLAIN with an authzid that is someone else */
	base64_encode("bob\0alice\0s3cret", 16, ir);
	say(c, "AUTH PLAIN ");
	say(c, ir);
	say(c, "\r\n");
	assert_string_equal(reply1(c), "535 5.7.8 Authentication credentials invalid\r\n");
	/* PLAIN, the initial response in the command */
	say(c, "AUTH PLAIN ");
	say(c, plain_ir("alice", "s3cret", ir));
	say(c, "\r\n");
	assert_string_equal(reply1(c), "235 2.7.0 Authentication successful\r\n");
	say(c, "AUTH PLAIN\r\nEHLO client.example\r\n");
	assert_string_equal(reply1(c), "503 5.5.1 Error: already authenticated\r\n");
	assert_null(strstr(reply1(c), "AUTH"));
	say(c, "MAIL FROM:<a@b.example>\r\nAUTH LOGIN\r\n");
	assert_string_equal(replies(c, 2), "250 2.1.0 Ok\r\n"
					   "503 5.5.1 Error: MAIL transaction in progress\r\n");
	client_free(c);
}

/* The third refused password in a session ends it. */
static void test_auth_failures_end_the_session(void **state)
{
	struct client *c = connect_session(&smtp_li);
	char ir[128];

	(void)state;
	reply1(c);
	say(c, "EHLO client.example\r\n");
	reply1(c);
	for (int i = 0; i < 2; i++) {
		say(c, "AUTH PLAIN ");
		say(c, plain_ir("alice", "wrong", ir));
		say(c, "\r\n");
		assert_string_equal(reply1(c), "535 5.7.8 Authentication credentials invalid\r\n");
	}
	say(c, "AUTH PLAIN ");
	say(c, plain_ir("alice", "s3cret-not", ir));
	say(c, "\r\n");
	assert_string_equal(reply1(c),
			    "421 4.7.0 mx.test.example Too many failed authentication attempts\r\n");
	wait_eof(c);
	client_free(c);
}

static void test_auth_require(void **state)
{
	struct client *c = greeted(&tls_li);
	char ir[128];

	(void)state;
	say(c, "MAIL FROM:<a@b.example>\r\n");
	assert_string_equal(reply1(c), "530 5.7.0 Authentication required\r\n");
	say(c, "STARTTLS\r\n");
	reply1(c);
	client_handshake(c);
	say(c, "EHLO client.example\r\nAUTH PLAIN ");
	say(c, plain_ir("alice", "s3cret", ir));
	say(c, "\r\nMAIL FROM:<a@b.example>\r\n");
	assert_string_equal(strstr(replies(c, 3), "235"), "235 2.7.0 Authentication successful\r\n"
							  "250 2.1.0 Ok\r\n");
	client_free(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_banner_and_ehlo, setup, teardown),
		cmocka_unit_test_setup_teardown(test_extensions_by_rule, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pipelining_one_batch, setup, teardown),
		cmocka_unit_test_setup_teardown(test_simple_message, setup, teardown),
		cmocka_unit_test_setup_teardown(test_received_header, setup, teardown),
		cmocka_unit_test_setup_teardown(test_relay_denied_and_max_rcpts, setup, teardown),
		cmocka_unit_test_setup_teardown(test_size_limit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bare_lf_and_cr, setup, teardown),
		cmocka_unit_test_setup_teardown(test_smuggling, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dot_unstuffing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_data_byte_by_byte, setup, teardown),
		cmocka_unit_test_setup_teardown(test_received_loop, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bdat, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bdat_binarymime_and_bare_lf, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bdat_oversize, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rset_and_sequence, setup, teardown),
		cmocka_unit_test_setup_teardown(test_line_too_long, setup, teardown),
		cmocka_unit_test_setup_teardown(test_timeout, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reply_waits_for_queue, setup, teardown),
		cmocka_unit_test_setup_teardown(test_queue_failures, setup, teardown),
		cmocka_unit_test_setup_teardown(test_disconnect_while_queued, setup, teardown),
		cmocka_unit_test_setup_teardown(test_messages_per_session, setup, teardown),
		cmocka_unit_test_setup_teardown(test_lmtp, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stop, setup, teardown),
		cmocka_unit_test_setup_teardown(test_utf8_and_addresses, setup, teardown),
		cmocka_unit_test_setup_teardown(test_backpressure, setup, teardown),
		cmocka_unit_test_setup_teardown(test_listener_max_connections, setup, teardown),
		cmocka_unit_test_setup_teardown(test_starttls_advertised_only_with_certificate,
						setup_tls, teardown_tls),
		cmocka_unit_test_setup_teardown(test_starttls_discards_input_and_resets, setup_tls,
						teardown_tls),
		cmocka_unit_test_setup_teardown(test_requiretls_and_received_under_tls, setup_tls,
						teardown_tls),
		cmocka_unit_test_setup_teardown(test_auth_state_machine, setup_auth_clear, teardown),
		cmocka_unit_test_setup_teardown(test_auth_failures_end_the_session, setup_auth_clear,
						teardown),
		cmocka_unit_test_setup_teardown(test_auth_require, setup_tls_require, teardown_tls),
	};

	log_set_level(LOG_WARN);
	signal(SIGPIPE, SIG_IGN); /* as tern serve does */
	make_certificate();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
