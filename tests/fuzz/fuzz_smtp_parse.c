/*
 * fuzz_smtp_parse.c - libFuzzer harness for what the inbound side reads
 * from the network.
 *
 * Each input is used three ways:
 *  1. every line of it goes through the command parser and the argument
 *     parser of its verb, under several extension offers; results must
 *     point inside the line and replies must be well-formed;
 *  2. it is decoded as DATA bytes whole and again split at every 7th
 *     byte; both must agree, and a message that ends cleanly must
 *     dot-stuff back to exactly the bytes consumed;
 *  3. it is fed to a whole session over a socket pair, with a stand-in
 *     queue, in writes of a size the first byte picks, and the loop is
 *     run dry.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "config/settings.h"
#include "inbound/inbound.h"
#include "inbound/session.h"
#include "inbound/smtp_body.h"
#include "inbound/smtp_parse.h"
#include "queue/message.h"
#include "server/server.h"
#include "util/log.h"
#include "util/strbuf.h"

#define ALL_EXT (SMTP_EXT_SIZE | SMTP_EXT_8BITMIME | SMTP_EXT_SMTPUTF8 | SMTP_EXT_DSN | \
		 SMTP_EXT_CHUNKING | SMTP_EXT_REQUIRETLS | SMTP_EXT_PIPELINING)

static void check_reply(const char *r)
{
	/* "ddd d.d.d text" */
	if (r == NULL)
		return;
	if (strlen(r) < 10 || r[3] != ' ' || r[5] != '.' || (r[0] != '5' && r[0] != '4') ||
	    r[4] != r[0])
		abort();
}

static void within(const char *p, size_t n, const char *line, size_t len)
{
	if (n > 0 && (p < line || p + n > line + len))
		abort();
}

static void parse_line(const char *line, size_t len)
{
	static const unsigned exts[] = { 0, ALL_EXT, SMTP_EXT_SIZE | SMTP_EXT_8BITMIME };
	struct smtp_cmd c;

	smtp_parse_command(line, len, &c);
	within(c.arg, c.arg_len, line, len);
	for (size_t e = 0; e < sizeof(exts) / sizeof(exts[0]); e++) {
		struct smtp_mail m;
		struct smtp_rcpt r;
		const char *name, *err;
		size_t name_len;
		uint64_t size;
		bool last;

		switch (c.verb) {
		case SMTP_HELO:
		case SMTP_EHLO:
		case SMTP_LHLO:
			err = smtp_parse_helo(c.arg, c.arg_len, &name, &name_len);
			check_reply(err);
			if (err == NULL) {
				within(name, name_len, line, len);
				if (name_len > SMTP_HELO_MAX)
					abort();
				smtp_text_safe(name, name_len);
			}
			break;
		case SMTP_MAIL:
			err = smtp_parse_mail(c.arg, c.arg_len, exts[e], &m);
			check_reply(err);
			if (err == NULL) {
				within(m.addr, m.addr_len, line, len);
				within(m.envid, m.envid_len, line, len);
				if (m.addr_len > SMTP_ADDR_MAX || memchr(m.addr, '\r', m.addr_len) ||
				    memchr(m.addr, '\n', m.addr_len) || memchr(m.addr, 0, m.addr_len))
					abort();
				if (m.envid != NULL && !smtp_xtext_valid(m.envid, m.envid_len))
					abort();
			}
			break;
		case SMTP_RCPT:
			err = smtp_parse_rcpt(c.arg, c.arg_len, exts[e], e == 1, &r);
			check_reply(err);
			if (err == NULL) {
				within(r.addr, r.addr_len, line, len);
				within(r.orcpt, r.orcpt_len, line, len);
				if (r.addr_len == 0 || r.addr_len > SMTP_ADDR_MAX ||
				    memchr(r.addr, 0, r.addr_len))
					abort();
				if ((r.notify & RCPT_NOTIFY_NEVER) && r.notify != RCPT_NOTIFY_NEVER)
					abort();
			}
			break;
		case SMTP_BDAT:
			check_reply(smtp_parse_bdat(c.arg, c.arg_len, &size, &last));
			break;
		default:
			smtp_xtext_valid(c.arg, c.arg_len);
			break;
		}
	}
}

static void decode(const uint8_t *data, size_t size)
{
	struct strbuf whole, split, ref;
	struct smtp_body a, b;
	size_t used_a, used_b = 0;

	strbuf_init(&whole);
	strbuf_init(&split);
	smtp_body_begin(&a, &whole, 1 << 20, true, true);
	smtp_body_begin(&b, &split, 1 << 20, true, true);
	used_a = smtp_body_feed(&a, (const char *)data, size);
	for (size_t i = 0; i < size && !b.done; i += 7) {
		size_t n = size - i < 7 ? size - i : 7;

		used_b += smtp_body_feed(&b, (const char *)data + i, n);
	}
	if (used_a != used_b || a.done != b.done || a.bare != b.bare || a.size != b.size ||
	    a.received != b.received || whole.len != split.len ||
	    (whole.len > 0 && memcmp(whole.data, split.data, whole.len) != 0))
		abort();
	if (!a.done && used_a != size)
		abort();
	/* A message that ended without bare CR/LF is CRLF lines, the last
	 * ".": a plain line-by-line unstuffing must give the same bytes. */
	if (a.done && !a.bare) {
		const char *d = (const char *)data;
		size_t i = 0;

		strbuf_init(&ref);
		while (i < used_a) {
			const char *crlf = memmem(d + i, used_a - i, "\r\n", 2);
			size_t n;

			if (crlf == NULL)
				abort();
			n = (size_t)(crlf - (d + i)) + 2;
			if (i + n == used_a) {
				if (n != 3 || d[i] != '.')
					abort();
				break;
			}
			if (d[i] == '.')
				strbuf_append(&ref, d + i + 1, n - 1);
			else
				strbuf_append(&ref, d + i, n);
			i += n;
		}
		if (ref.len != whole.len || (ref.len > 0 && memcmp(ref.data, whole.data, ref.len) != 0))
			abort();
		strbuf_free(&ref);
	}
	strbuf_free(&whole);
	strbuf_free(&split);
}

/* ---- a session without sockets ---- */

static struct event_base *base;
static struct config *cfg;
static struct server srv;
static const struct listener_info li_smtp = { "fuzz", false, "fuzz ESMTP", NULL, false };
static const struct listener_info li_lmtp = { "fuzz", true, "fuzz LMTP", NULL, false };
static int queued;

static int fake_submit(struct queue *q, struct message *msg, struct message_body *body,
		       queue_accept_cb cb, void *arg)
{
	(void)q;
	if (body->len < 10 || memcmp(body->data, "Received: ", 10) != 0 || msg->n_rcpts == 0)
		abort();
	message_free(msg);
	message_body_unref(body);
	/* Alternate outcomes; a callback from inside submit is allowed. */
	switch (queued++ % 3) {
	case 0:
		cb(arg, 0, 1);
		return 0;
	case 1:
		cb(arg, 28 /* ENOSPC */, 0);
		return 0;
	default:
		return 5; /* EIO */
	}
}

static void fake_forget(struct queue *q, void *arg)
{
	(void)q;
	(void)arg;
}

/* Read and drop whatever the session has written. */
static void drain(int fd)
{
	char buf[4096];

	while (recv(fd, buf, sizeof(buf), MSG_DONTWAIT) > 0)
		;
}

static void init(void)
{
	static const char text[] =
		"[server]\nhostname = \"fuzz.example\"\n"
		"[session.rcpt]\nrelay = [ { if = \"rcpt-domain\", eq = \"no.example\", then = false },"
		" { else = true } ]\nmax-recipients = 4\n"
		"[session.data.limits]\nsize = 3000\nmessages = 5\nreceived-headers = 2\n";
	struct diags diags;

	log_set_level(LOG_ERROR);
	diags_init(&diags, "fuzz.toml");
	cfg = config_load_buffer(text, sizeof(text) - 1, "/tmp", 0, &diags);
	diags_free(&diags);
	base = event_base_new();
	if (cfg == NULL || base == NULL)
		abort();
	srv.base = base;
	srv.cfg = cfg;
	srv.hostname = "fuzz.example";
}

static void run_session(const uint8_t *data, size_t size)
{
	struct inbound *in;
	char err[128];
	size_t step;
	int sv[2];

	if (size == 0)
		return;
	in = inbound_start(&srv, err, sizeof(err));
	if (in == NULL || socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) != 0)
		abort();
	in->submit = fake_submit;
	in->forget = fake_forget;
	if (session_start(in, data[0] & 1 ? &li_lmtp : &li_smtp, sv[0], NULL, NULL) != 0)
		abort();
	/* The first byte also picks how the rest is cut into writes. */
	step = 1 + (data[0] >> 1) * 16;
	for (size_t i = 1; i < size;) {
		size_t n = size - i < step ? size - i : step;
		ssize_t w = send(sv[1], data + i, n, MSG_DONTWAIT | MSG_NOSIGNAL);

		if (w > 0)
			i += (size_t)w;
		else if (w < 0 && errno != EAGAIN)
			break;
		for (int k = 0; k < 4; k++) {
			event_base_loop(base, EVLOOP_NONBLOCK);
			drain(sv[1]);
		}
	}
	for (int k = 0; k < 16; k++) {
		event_base_loop(base, EVLOOP_NONBLOCK);
		drain(sv[1]);
	}
	inbound_free(in);
	close(sv[1]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *p = (const char *)data, *end = p + size;

	if (base == NULL)
		init();
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t n = (size_t)((nl != NULL ? nl : end) - p);

		if (n > 0 && p[n - 1] == '\r')
			parse_line(p, n - 1);
		else
			parse_line(p, n);
		p += n + (nl != NULL);
	}
	decode(data, size);
	run_session(data, size);
	return 0;
}
