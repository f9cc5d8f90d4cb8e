/*
 * test_client.c - the outbound SMTP/LMTP client against a scripted peer
 * (tests/system/peers/scripted_smtp.py, started per test and stopped by
 * its PID), on a real libevent loop: replies of every class at every
 * stage, pipelining, BDAT, LMTP, AUTH, reuse, each stage's own timeout,
 * dropped connections, source-address binding, and the STARTTLS decisions
 * that need no handshake (policy against offer, refusal, a STARTTLS that
 * stalls or is cut off: the handshakes themselves are in
 * tests/system/test_tls_outbound.py). The reply parser is tested directly
 * first.
 *
 * Run from the repository root (the peer's path is relative to it).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "outbound/client.h"
#include "outbound/reply.h"
#include "util/fileio.h"
#include "util/strbuf.h"

#define PEER "tests/system/peers/scripted_smtp.py"

/* ---- the scripted peer ---- */

static struct {
	pid_t pid;
	int port;
	char log_path[64];
} peer;

static void peer_start_at(const char *script, const char *host)
{
	int out[2], fd;
	char buf[64];
	size_t n = 0;
	struct pollfd pfd;

	snprintf(peer.log_path, sizeof(peer.log_path), "/tmp/tern-test-client-XXXXXX");
	fd = mkstemp(peer.log_path);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(pipe(out), 0);
	peer.pid = fork();
	assert_true(peer.pid >= 0);
	if (peer.pid == 0) {
		dup2(out[1], STDOUT_FILENO);
		close(out[0]);
		close(out[1]);
		execl("/usr/bin/python3", "python3", PEER, "--script", script, "--log", peer.log_path,
		      "--host", host, (char *)NULL);
		_exit(127);
	}
	close(out[1]);
	/* The peer prints its port once it listens. */
	pfd.fd = out[0];
	pfd.events = POLLIN;
	while (n < sizeof(buf) - 1 && memchr(buf, '\n', n) == NULL) {
		ssize_t got;

		assert_int_equal(poll(&pfd, 1, 10000), 1);
		got = read(out[0], buf + n, sizeof(buf) - 1 - n);
		assert_true(got > 0);
		n += (size_t)got;
	}
	close(out[0]);
	buf[n] = '\0';
	peer.port = atoi(buf);
	assert_true(peer.port > 0);
}

static void peer_start(const char *script)
{
	peer_start_at(script, "127.0.0.1");
}

static int peer_stop(void **state)
{
	char tmp[80];

	(void)state;
	if (peer.pid > 0) {
		kill(peer.pid, SIGTERM);
		waitpid(peer.pid, NULL, 0);
		peer.pid = 0;
		unlink(peer.log_path);
		snprintf(tmp, sizeof(tmp), "%s.tmp", peer.log_path);
		unlink(tmp);
	}
	return 0;
}

static char *peer_log(void)
{
	char *data = NULL;
	size_t len = 0;

	assert_int_equal(file_read_all(peer.log_path, 64u << 20, &data, &len), 0);
	return data;
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static bool log_has(const char *needle)
{
	char *log = peer_log();
	bool found = strstr(log, needle) != NULL;

	free(log);
	return found;
}

/* The peer logs a connection's end a moment after it happens. */
static void wait_log(const char *needle)
{
	for (int i = 0; i < 200 && !log_has(needle); i++)
		usleep(10000);
	assert_true(log_has(needle));
}

/* replies_before of the nth (from 0) command starting with prefix; -1 if none. */
static int cmd_tag(const char *prefix, int nth)
{
	char *log = peer_log(), *line, *save = NULL, want[256];
	int tag = -1;

	snprintf(want, sizeof(want), "\"line\": \"%s", prefix);
	for (line = strtok_r(log, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
		const char *t;

		if (strstr(line, "\"event\": \"command\"") == NULL || strstr(line, want) == NULL)
			continue;
		if (nth-- > 0)
			continue;
		t = strstr(line, "\"replies_before\": ");
		if (t != NULL)
			tag = atoi(t + strlen("\"replies_before\": "));
		break;
	}
	free(log);
	return tag;
}

static int count_in_log(const char *needle)
{
	char *log = peer_log();
	int n = 0;

	for (const char *p = strstr(log, needle); p != NULL; p = strstr(p + 1, needle))
		n++;
	free(log);
	return n;
}

/* Offset of needle in the log, for order checks; -1 if absent. */
static long log_offset(const char *needle, int nth)
{
	char *log = peer_log();
	const char *p = strstr(log, needle);
	long off;

	while (p != NULL && nth-- > 0)
		p = strstr(p + 1, needle);
	off = p != NULL ? p - log : -1;
	free(log);
	return off;
}

/* As Python's json.dumps writes a string (ASCII input). */
static void json_escape(struct strbuf *sb, const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)s[i];

		if (ch == '"' || ch == '\\') {
			strbuf_putc(sb, '\\');
			strbuf_putc(sb, (char)ch);
		} else if (ch == '\r') {
			strbuf_puts(sb, "\\r");
		} else if (ch == '\n') {
			strbuf_puts(sb, "\\n");
		} else if (ch == '\t') {
			strbuf_puts(sb, "\\t");
		} else if (ch < 0x20) {
			strbuf_printf(sb, "\\u%04x", ch);
		} else {
			strbuf_putc(sb, (char)ch);
		}
	}
}

/* ---- messages ---- */

struct fixture {
	struct message *m;
	struct message_body *body;
	size_t idx[8];
	struct delivery_status results[8];
	struct client_txn txn;
};

static void fixture_init(struct fixture *f, const char *sender, const char *const *rcpts,
			 size_t n, const char *body, size_t body_len)
{
	memset(f, 0, sizeof(*f));
	f->m = message_new(sender, strlen(sender));
	assert_non_null(f->m);
	for (size_t i = 0; i < n; i++) {
		assert_non_null(message_add_rcpt(f->m, rcpts[i], strlen(rcpts[i])));
		f->idx[i] = i;
		/* Poison: every result must be written by the client. */
		f->results[i].code = -1;
		f->results[i].cls = (enum ds_class)99;
	}
	f->body = message_body_new(body_len);
	assert_non_null(f->body);
	memcpy(f->body->data, body, body_len);
	f->m->size = body_len;
	f->txn.msg = f->m;
	f->txn.rcpt_index = f->idx;
	f->txn.n_rcpts = n;
	f->txn.body = f->body;
	f->txn.results = f->results;
}

static void fixture_free(struct fixture *f)
{
	message_free(f->m);
	message_body_unref(f->body);
}

static const char *const two_rcpts[] = { "alice@example.net", "bob@example.net" };
static const char simple_body[] = "Subject: hi\r\n\r\nhello\r\n";

static void simple_fixture(struct fixture *f)
{
	fixture_init(f, "sender@example.org", two_rcpts, 2, simple_body, strlen(simple_body));
}

/* ---- driving a client ---- */

enum end_action { END_QUIT, END_FREE, END_WAIT_CLOSE };

struct run {
	struct event_base *base;
	struct client *c;
	struct client_target target;
	struct client_txn *txns[3];
	size_t n_txns, sent;
	enum end_action end;
	int ready, failed, closed, done;
	bool idle_after[3];
	int send_rc, send_again_rc;
	unsigned ext;
	char peer_text[64];
	struct delivery_status why;
	double t0, t_ready, t_end, t_send[3], t_done[3];
	bool finished, watchdog_fired;
	char tls[TLS_SUMMARY_MAX];    /* client_tls_summary at the last event */
	bool tls_failed;              /* client_tls_failed at the end */
};

static void next_step(struct run *r, struct client *c)
{
	if (r->sent < r->n_txns) {
		r->t_send[r->sent] = now();
		r->send_rc |= client_send(c, r->txns[r->sent]);
		/* Busy now: a second transaction must be refused. */
		r->send_again_rc = client_send(c, r->txns[r->sent]);
		r->sent++;
		return;
	}
	switch (r->end) {
	case END_QUIT:
		client_quit(c);
		r->c = NULL;
		r->finished = true;
		break;
	case END_FREE:
		client_free(c);
		r->c = NULL;
		r->finished = true;
		break;
	case END_WAIT_CLOSE:
		break;
	}
}

static void on_event(void *arg, struct client *c, enum client_event ev,
		     const struct delivery_status *why)
{
	struct run *r = arg;

	client_tls_summary(c, r->tls, sizeof(r->tls));
	r->tls_failed = client_tls_failed(c);
	switch (ev) {
	case CLIENT_READY:
		r->ready++;
		r->t_ready = now();
		r->ext = client_extensions(c);
		snprintf(r->peer_text, sizeof(r->peer_text), "%s", client_peer_text(c));
		next_step(r, c);
		return;
	case CLIENT_FAILED:
		r->failed++;
		break;
	case CLIENT_CLOSED:
		r->closed++;
		break;
	}
	r->why = *why;
	r->t_end = now();
	client_free(c);
	r->c = NULL;
	r->finished = true;
}

static void on_txn_done(void *arg, struct client *c, struct client_txn *txn)
{
	struct run *r = arg;

	(void)txn;
	r->t_done[r->done] = now();
	r->idle_after[r->done] = client_is_idle(c);
	r->done++;
	if (client_is_idle(c))
		next_step(r, c);
	/* else CLIENT_CLOSED follows */
}

static const struct client_callbacks callbacks = { on_event, on_txn_done };

static void run_init(struct run *r, int port)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)&r->target.addr;

	memset(r, 0, sizeof(*r));
	r->target.host = "peer.test";
	sin->sin_family = AF_INET;
	sin->sin_port = htons((uint16_t)port);
	sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	r->target.addr_len = sizeof(*sin);
	r->target.helo_name = "client.test";
	for (int s = 0; s < STAGE_COUNT; s++)
		r->target.timeout_ms[s] = 10000;
}

static void on_watchdog(evutil_socket_t fd, short what, void *arg)
{
	struct run *r = arg;

	(void)fd;
	(void)what;
	r->watchdog_fired = true;
}

static void run_client(struct run *r)
{
	struct event *watchdog;
	struct timeval limit = { 20, 0 };

	r->base = event_base_new();
	assert_non_null(r->base);
	r->t0 = now();
	r->c = client_connect(r->base, &r->target, &callbacks, r);
	assert_non_null(r->c);
	watchdog = evtimer_new(r->base, on_watchdog, r);
	evtimer_add(watchdog, &limit);
	while (!r->finished && !r->watchdog_fired)
		event_base_loop(r->base, EVLOOP_ONCE);
	event_free(watchdog);
	if (r->c != NULL)
		client_free(r->c);
	/* Let a QUIT finish: the client frees itself, then nothing is left. */
	event_base_dispatch(r->base);
	event_base_free(r->base);
	assert_false(r->watchdog_fired);
}

static void assert_status(const struct delivery_status *ds, enum ds_class cls,
			  enum client_stage stage, int code, const char *enhanced)
{
	if (ds->cls != cls || ds->stage != stage || ds->code != code ||
	    strcmp(ds->enhanced, enhanced) != 0)
		print_error("status: cls %d stage %d code %d enhanced %s text \"%s\"\n", ds->cls,
			    ds->stage, ds->code, ds->enhanced, ds->text);
	assert_int_equal(ds->cls, cls);
	assert_int_equal(ds->stage, stage);
	assert_int_equal(ds->code, code);
	assert_string_equal(ds->enhanced, enhanced);
}

static void assert_text_has(const struct delivery_status *ds, const char *needle)
{
	if (strstr(ds->text, needle) == NULL)
		print_error("text \"%s\" lacks \"%s\"\n", ds->text, needle);
	assert_non_null(strstr(ds->text, needle));
}

/* One transaction on a fresh connection, then QUIT. */
static void run_one(struct run *r, struct fixture *f)
{
	r->txns[0] = &f->txn;
	r->n_txns = 1;
	run_client(r);
}

/* ---- the reply parser ---- */

static enum reply_result feed(struct reply *r, const char *line)
{
	const char *err = NULL;

	return reply_feed(r, line, strlen(line), &err);
}

static void test_reply_parser(void **state)
{
	struct reply r;
	char text[512], small[16];
	const char *err = NULL;
	char big[REPLY_LINE_MAX + 2];

	(void)state;
	reply_init(&r);
	assert_int_equal(feed(&r, "250-mx.example.net Hello"), REPLY_MORE);
	assert_int_equal(feed(&r, "250-PIPELINING"), REPLY_MORE);
	assert_int_equal(feed(&r, "250 SIZE 1000"), REPLY_DONE);
	assert_int_equal(r.code, 250);
	assert_string_equal(r.enhanced, "");
	assert_int_equal(r.n_lines, 3);
	reply_join_text(&r, text, sizeof(text));
	assert_string_equal(text, "mx.example.net Hello; PIPELINING; SIZE 1000");

	/* The enhanced code: first line, matching class, left out of the text. */
	reply_reset(&r);
	assert_int_equal(feed(&r, "550-5.1.1 no such user"), REPLY_MORE);
	assert_int_equal(feed(&r, "550 5.1.1 here"), REPLY_DONE);
	assert_string_equal(r.enhanced, "5.1.1");
	reply_join_text(&r, text, sizeof(text));
	assert_string_equal(text, "no such user; here");
	reply_reset(&r);
	assert_int_equal(feed(&r, "250 5.1.1 class differs"), REPLY_DONE);
	assert_string_equal(r.enhanced, "");
	reply_reset(&r);
	assert_int_equal(feed(&r, "250 2.1.0x not a code"), REPLY_DONE);
	assert_string_equal(r.enhanced, "");
	reply_reset(&r);
	assert_int_equal(feed(&r, "451 4.123.456"), REPLY_DONE);
	assert_string_equal(r.enhanced, "4.123.456");
	reply_reset(&r);
	assert_int_equal(feed(&r, "221"), REPLY_DONE);
	assert_int_equal(r.code, 221);

	/* Malformed: code changes, bad separator, bad digits, too long. */
	reply_reset(&r);
	assert_int_equal(feed(&r, "250-a"), REPLY_MORE);
	assert_int_equal(feed(&r, "251 b"), REPLY_ERROR);
	reply_reset(&r);
	assert_int_equal(feed(&r, "250:x"), REPLY_ERROR);
	reply_reset(&r);
	assert_int_equal(feed(&r, "650 x"), REPLY_ERROR);
	reply_reset(&r);
	assert_int_equal(feed(&r, "2"), REPLY_ERROR);
	reply_reset(&r);
	memset(big, 'a', sizeof(big));
	memcpy(big, "250 ", 4);
	assert_int_equal(reply_feed(&r, big, REPLY_LINE_MAX, &err), REPLY_DONE);
	reply_reset(&r);
	assert_int_equal(reply_feed(&r, big, REPLY_LINE_MAX + 1, &err), REPLY_ERROR);
	assert_string_equal(err, "reply line too long");
	reply_reset(&r);
	memcpy(big, "250-", 4);
	for (size_t total = 0; total + REPLY_LINE_MAX <= REPLY_MAX; total += REPLY_LINE_MAX)
		assert_int_equal(reply_feed(&r, big, REPLY_LINE_MAX, &err), REPLY_MORE);
	assert_int_equal(reply_feed(&r, big, REPLY_LINE_MAX, &err), REPLY_ERROR);
	assert_string_equal(err, "reply too long");

	/* Long text is cut with "...", control characters become spaces,
	 * and a UTF-8 sequence is never split. */
	reply_reset(&r);
	assert_int_equal(reply_feed(&r, big, REPLY_LINE_MAX, &err), REPLY_MORE);
	assert_int_equal(feed(&r, "250 end"), REPLY_DONE);
	reply_join_text(&r, text, sizeof(text));
	assert_int_equal(strlen(text), sizeof(text) - 1);
	assert_string_equal(text + sizeof(text) - 4, "...");
	reply_reset(&r);
	assert_int_equal(reply_feed(&r, "250 a\tb\x01", 8, &err), REPLY_DONE);
	reply_join_text(&r, text, sizeof(text));
	assert_string_equal(text, "a b ");
	reply_reset(&r);
	/* 16 bytes: 12 of text, "..." and the NUL. */
	assert_int_equal(feed(&r, "250 abcdefghijk\xc3\xa9xyz"), REPLY_DONE);
	reply_join_text(&r, small, sizeof(small));
	assert_string_equal(small, "abcdefghijk...");
	reply_reset(&r);
	assert_int_equal(feed(&r, "250 abcdefghij\xc3\xa9xyz"), REPLY_DONE);
	reply_join_text(&r, small, sizeof(small));
	assert_string_equal(small, "abcdefghij\xc3\xa9...");
	reply_free(&r);
}

/* ---- sessions ---- */

static void test_pipelined(void **state)
{
	struct run r;
	struct fixture f;
	char want[128];

	(void)state;
	peer_start("{\"extensions\": [\"PIPELINING\", \"SIZE 1000000\", \"8BITMIME\", \"DSN\"]}");
	simple_fixture(&f);
	run_init(&r, peer.port);
	run_one(&r, &f);

	assert_int_equal(r.ready, 1);
	assert_int_equal(r.failed + r.closed, 0);
	assert_int_equal(r.send_rc, 0);
	assert_int_equal(r.send_again_rc, -1);
	assert_true(r.idle_after[0]);
	assert_int_equal(r.ext, CLIENT_EXT_PIPELINING | CLIENT_EXT_SIZE | CLIENT_EXT_8BITMIME |
				       CLIENT_EXT_DSN);
	assert_string_equal(r.peer_text, "127.0.0.1");
	for (int i = 0; i < 2; i++) {
		assert_status(&f.results[i], DS_OK, STAGE_DATA, 250, "2.0.0");
		assert_string_equal(f.results[i].text, "Ok: queued");
		assert_int_equal(f.results[i].remote, 1);
	}
	snprintf(want, sizeof(want), "\"line\": \"MAIL FROM:<sender@example.org> SIZE=%zu\"",
		 strlen(simple_body));
	assert_true(log_has(want));
	/* One write: every command arrived before any of their replies went. */
	assert_int_equal(cmd_tag("EHLO client.test", 0), 1);
	assert_int_equal(cmd_tag("MAIL FROM:", 0), 2);
	assert_int_equal(cmd_tag("RCPT TO:<alice@example.net>", 0), 2);
	assert_int_equal(cmd_tag("RCPT TO:<bob@example.net>", 0), 2);
	assert_int_equal(cmd_tag("DATA", 0), 2);
	assert_true(log_has("\"data\": \"Subject: hi\\r\\n\\r\\nhello\\r\\n\""));
	assert_true(log_has("\"rcpts\": [\"alice@example.net\", \"bob@example.net\"]"));
	/* client_quit: QUIT, and the peer sees us go. */
	wait_log("\"line\": \"QUIT\"");
	wait_log("\"event\": \"disconnect\"");
	fixture_free(&f);
}

static void test_lockstep(void **state)
{
	struct run r;
	struct fixture f;

	(void)state;
	peer_start("{}");
	simple_fixture(&f);
	run_init(&r, peer.port);
	run_one(&r, &f);

	assert_int_equal(r.ext, 0);
	assert_status(&f.results[0], DS_OK, STAGE_DATA, 250, "2.0.0");
	assert_status(&f.results[1], DS_OK, STAGE_DATA, 250, "2.0.0");
	/* No SIZE offered, none sent; each command waited for its reply. */
	assert_true(log_has("\"line\": \"MAIL FROM:<sender@example.org>\""));
	assert_int_equal(cmd_tag("MAIL FROM:", 0), 2);
	assert_int_equal(cmd_tag("RCPT TO:", 0), 3);
	assert_int_equal(cmd_tag("RCPT TO:", 1), 4);
	assert_int_equal(cmd_tag("DATA", 0), 5);
	assert_true(log_has("\"data\": \"Subject: hi\\r\\n\\r\\nhello\\r\\n\""));
	wait_log("\"line\": \"QUIT\"");
	fixture_free(&f);
}

static void test_bdat(void **state)
{
	static const char body[] = "Subject: chunk\r\n\r\n.no stuffing here\r\nno final CRLF";
	struct run r;
	struct fixture f;
	char want[64];

	(void)state;
	peer_start("{\"extensions\": [\"PIPELINING\", \"CHUNKING\"]}");
	fixture_init(&f, "sender@example.org", two_rcpts, 1, body, strlen(body));
	run_init(&r, peer.port);
	run_one(&r, &f);

	assert_status(&f.results[0], DS_OK, STAGE_DATA, 250, "2.0.0");
	snprintf(want, sizeof(want), "\"line\": \"BDAT %zu LAST\"", strlen(body) + 2);
	assert_true(log_has(want));
	assert_int_equal(cmd_tag("BDAT", 0), cmd_tag("MAIL FROM:", 0));
	assert_false(log_has("\"line\": \"DATA\""));
	assert_true(log_has("\"via\": \"BDAT\""));
	assert_true(log_has("\"data\": \"Subject: chunk\\r\\n\\r\\n.no stuffing here\\r\\nno final CRLF\\r\\n\""));
	fixture_free(&f);
}

static void test_lmtp(void **state)
{
	static const char *const rcpts[] = { "a@lmtp.test", "b@lmtp.test", "c@lmtp.test" };
	struct run r;
	struct fixture f;

	(void)state;
	peer_start("{\"lmtp\": true, \"extensions\": [\"PIPELINING\", \"ENHANCEDSTATUSCODES\"],"
		   " \"rcpt\": [\"250 2.1.5 ok\", \"550 5.1.1 no such user\", \"250 2.1.5 ok\"],"
		   " \"final\": [\"250 2.0.0 delivered\", \"452 4.2.2 mailbox full\"]}");
	fixture_init(&f, "sender@example.org", rcpts, 3, simple_body, strlen(simple_body));
	run_init(&r, peer.port);
	r.target.lmtp = true;
	run_one(&r, &f);

	assert_true(log_has("\"line\": \"LHLO client.test\""));
	assert_status(&f.results[0], DS_OK, STAGE_DATA, 250, "2.0.0");
	assert_string_equal(f.results[0].text, "delivered");
	assert_status(&f.results[1], DS_PERM, STAGE_RCPT_TO, 550, "5.1.1");
	assert_string_equal(f.results[1].text, "no such user");
	assert_status(&f.results[2], DS_TEMP, STAGE_DATA, 452, "4.2.2");
	assert_string_equal(f.results[2].text, "mailbox full");
	assert_true(r.idle_after[0]);
	fixture_free(&f);
}

static void test_lmtp_bdat(void **state)
{
	static const char *const rcpts[] = { "a@lmtp.test", "b@lmtp.test" };
	struct run r;
	struct fixture f;

	(void)state;
	peer_start("{\"lmtp\": true, \"extensions\": [\"PIPELINING\", \"CHUNKING\"],"
		   " \"final\": [\"550 5.2.2 over quota\", \"250 2.0.0 delivered\"]}");
	fixture_init(&f, "sender@example.org", rcpts, 2, simple_body, strlen(simple_body));
	run_init(&r, peer.port);
	r.target.lmtp = true;
	run_one(&r, &f);
	/* BDAT LAST, like the final dot, gets one reply per recipient. */
	assert_true(log_has("\"via\": \"BDAT\""));
	assert_status(&f.results[0], DS_PERM, STAGE_DATA, 550, "5.2.2");
	assert_status(&f.results[1], DS_OK, STAGE_DATA, 250, "2.0.0");
	assert_true(r.idle_after[0]);
	fixture_free(&f);
}

static void test_lmtp_lhlo_refused(void **state)
{
	struct run r;

	(void)state;
	peer_start("{\"lmtp\": true, \"lhlo\": \"550 5.7.0 go away\"}");
	run_init(&r, peer.port);
	r.target.lmtp = true;
	run_client(&r);
	/* LMTP has no HELO to fall back to. */
	assert_int_equal(r.failed, 1);
	assert_status(&r.why, DS_PERM, STAGE_EHLO, 550, "5.7.0");
	assert_false(log_has("HELO client.test\""));
}

static void expect_failure(const char *script, enum ds_class cls, enum client_stage stage,
			   int code, const char *enhanced, const char *text)
{
	struct run r;

	peer_start(script);
	run_init(&r, peer.port);
	run_client(&r);
	assert_int_equal(r.ready, 0);
	assert_int_equal(r.failed, 1);
	assert_status(&r.why, cls, stage, code, enhanced);
	assert_text_has(&r.why, text);
}

static void test_greeting_421(void **state)
{
	(void)state;
	expect_failure("{\"greeting\": \"421 4.3.2 busy, try later\"}", DS_TEMP, STAGE_GREETING, 421,
		       "4.3.2", "busy, try later");
}

static void test_greeting_554(void **state)
{
	(void)state;
	expect_failure("{\"greeting\": \"554 no SMTP service here\"}", DS_PERM, STAGE_GREETING, 554,
		       "5.0.0", "no SMTP service here");
}

static void test_ehlo_4xx(void **state)
{
	(void)state;
	expect_failure("{\"ehlo\": \"451 4.3.0 try again\"}", DS_TEMP, STAGE_EHLO, 451, "4.3.0",
		       "try again");
}

static void test_helo_fallback(void **state)
{
	struct run r;
	struct fixture f;

	(void)state;
	peer_start("{\"extensions\": [\"PIPELINING\"], \"ehlo\": \"502 5.5.2 no EHLO here\"}");
	simple_fixture(&f);
	run_init(&r, peer.port);
	run_one(&r, &f);
	assert_int_equal(r.ready, 1);
	assert_int_equal(r.ext, 0);
	assert_true(log_has("\"line\": \"HELO client.test\""));
	assert_status(&f.results[0], DS_OK, STAGE_DATA, 250, "2.0.0");
	assert_status(&f.results[1], DS_OK, STAGE_DATA, 250, "2.0.0");
	/* HELO means no PIPELINING: lockstep. */
	assert_int_equal(cmd_tag("RCPT TO:", 0) + 1, cmd_tag("RCPT TO:", 1));
	fixture_free(&f);
}

static void test_mail_rejected_pipelined(void **state)
{
	struct run r;
	struct fixture f;

	(void)state;
	peer_start("{\"extensions\": [\"PIPELINING\"], \"mail\": \"550 5.7.1 sender blocked\"}");
	simple_fixture(&f);
	run_init(&r, peer.port);
	run_one(&r, &f);
	for (int i = 0; i < 2; i++) {
		assert_status(&f.results[i], DS_PERM, STAGE_MAIL_FROM, 550, "5.7.1");
		assert_string_equal(f.results[i].text, "sender blocked");
	}
	/* The pipelined RCPT and DATA replies (503s) were read, and the
	 * connection stayed usable. */
	assert_true(r.idle_after[0]);
	assert_int_equal(r.closed, 0);
	wait_log("\"line\": \"QUIT\"");
	fixture_free(&f);
}

static void test_mail_rejected_lockstep(void **state)
{
	struct run r;
	struct fixture f;

	(void)state;
	peer_start("{\"mail\": \"451 4.3.0 not now\"}");
	simple_fixture(&f);
	run_init(&r, peer.port);
	run_one(&r, &f);
	assert_status(&f.results[0], DS_TEMP, STAGE_MAIL_FROM, 451, "4.3.0");
	assert_status(&f.results[1], DS_TEMP, STAGE_MAIL_FROM, 451, "4.3.0");
	assert_false(log_has("RCPT TO"));
	assert_false(log_has("\"line\": \"DATA\""));
	fixture_free(&f);
}

static void test_rcpt_mixed(void **state)
{
	static const char *const rcpts[] = { "a@x.test", "b@x.test", "c@x.test" };
	struct run r;
	struct fixture f;

	(void)state;
	peer_start("{\"extensions\": [\"PIPELINING\"],"
		   " \"rcpt\": [\"250 2.1.5 ok\", \"550 5.1.1 unknown\", \"450 4.2.0 greylisted\"]}");
	fixture_init(&f, "sender@example.org", rcpts, 3, simple_body, strlen(simple_body));
	run_init(&r, peer.port);
	r.end = END_FREE; /* client_free from inside txn_done */
	run_one(&r, &f);
	assert_status(&f.results[0], DS_OK, STAGE_DATA, 250, "2.0.0");
	assert_status(&f.results[1], DS_PERM, STAGE_RCPT_TO, 550, "5.1.1");
	assert_string_equal(f.results[1].text, "unknown");
	assert_status(&f.results[2], DS_TEMP, STAGE_RCPT_TO, 450, "4.2.0");
	assert_true(log_has("\"rcpts\": [\"a@x.test\"]"));
	fixture_free(&f);
}

/* Every RCPT refused, then a second transaction on the same connection. */
static void all_rejected_then_reuse(const char *script, bool pipelined)
{
	static const char *const one[] = { "carol@example.net" };
	struct run r;
	struct fixture f1, f2;

	peer_start(script);
	simple_fixture(&f1);
	fixture_init(&f2, "other@example.org", one, 1, simple_body, strlen(simple_body));
	run_init(&r, peer.port);
	r.txns[0] = &f1.txn;
	r.txns[1] = &f2.txn;
	r.n_txns = 2;
	run_client(&r);

	assert_int_equal(r.done, 2);
	assert_status(&f1.results[0], DS_PERM, STAGE_RCPT_TO, 550, "5.1.1");
	assert_status(&f1.results[1], DS_PERM, STAGE_RCPT_TO, 550, "5.1.1");
	assert_status(&f2.results[0], DS_OK, STAGE_DATA, 250, "2.0.0");
	assert_true(r.idle_after[0]);
	assert_true(r.idle_after[1]);
	/* Pipelined, DATA went out with the RCPTs and its 554 was read;
	 * in lockstep DATA was never sent for nobody. */
	assert_int_equal(count_in_log("\"line\": \"DATA\""), pipelined ? 2 : 1);
	/* RSET before the second MAIL, on the same connection. */
	assert_int_equal(count_in_log("\"line\": \"RSET\""), 1);
	assert_true(log_offset("\"line\": \"RSET\"", 0) < log_offset("\"line\": \"MAIL FROM:", 1));
	assert_true(log_offset("\"line\": \"RSET\"", 0) > log_offset("\"line\": \"MAIL FROM:", 0));
	assert_int_equal(count_in_log("\"event\": \"connect\""), 1);
	assert_true(log_has("\"mail_from\": \"other@example.org\", \"rcpts\": [\"carol@example.net\"]"));
	fixture_free(&f1);
	fixture_free(&f2);
}

static void test_all_rcpt_rejected_pipelined(void **state)
{
	(void)state;
	all_rejected_then_reuse("{\"extensions\": [\"PIPELINING\"], \"rcpt\": [\"550 5.1.1 unknown\","
				" \"550 5.1.1 unknown\", \"250 2.1.5 ok\"]}", true);
}

static void test_all_rcpt_rejected_lockstep(void **state)
{
	(void)state;
	all_rejected_then_reuse("{\"rcpt\": [\"550 5.1.1 unknown\", \"550 5.1.1 unknown\","
				" \"250 2.1.5 ok\"]}", false);
}

static void test_data_rejected(void **state)
{
	struct run r;
	struct fixture f;

	(void)state;
	peer_start("{\"extensions\": [\"PIPELINING\"], \"data\": \"554 5.7.0 no data for you\"}");
	simple_fixture(&f);
	run_init(&r, peer.port);
	run_one(&r, &f);
	assert_status(&f.results[0], DS_PERM, STAGE_DATA, 554, "5.7.0");
	assert_status(&f.results[1], DS_PERM, STAGE_DATA, 554, "5.7.0");
	assert_string_equal(f.results[0].text, "no data for you");
	assert_true(r.idle_after[0]);
	fixture_free(&f);
}

static void test_final_rejected_then_reuse(void **state)
{
	struct run r;
	struct fixture f1, f2;

	(void)state;
	peer_start("{\"final\": [\"451 4.3.0 queue trouble\", \"250 2.0.0 fine now\"]}");
	simple_fixture(&f1);
	simple_fixture(&f2);
	run_init(&r, peer.port);
	r.txns[0] = &f1.txn;
	r.txns[1] = &f2.txn;
	r.n_txns = 2;
	run_client(&r);
	assert_status(&f1.results[0], DS_TEMP, STAGE_DATA, 451, "4.3.0");
	assert_status(&f1.results[1], DS_TEMP, STAGE_DATA, 451, "4.3.0");
	assert_status(&f2.results[0], DS_OK, STAGE_DATA, 250, "2.0.0");
	assert_string_equal(f2.results[0].text, "fine now");
	assert_int_equal(count_in_log("\"event\": \"message\""), 2);
	fixture_free(&f1);
	fixture_free(&f2);
}

static void test_two_transactions(void **state)
{
	struct run r;
	struct fixture f1, f2;

	(void)state;
	peer_start("{\"extensions\": [\"PIPELINING\"]}");
	simple_fixture(&f1);
	fixture_init(&f2, "second@example.org", two_rcpts + 1, 1, "x\r\n", 3);
	run_init(&r, peer.port);
	r.txns[0] = &f1.txn;
	r.txns[1] = &f2.txn;
	r.n_txns = 2;
	run_client(&r);
	assert_int_equal(r.done, 2);
	assert_status(&f1.results[1], DS_OK, STAGE_DATA, 250, "2.0.0");
	assert_status(&f2.results[0], DS_OK, STAGE_DATA, 250, "2.0.0");
	/* Both went well: no RSET between them; one connection. */
	assert_false(log_has("RSET"));
	assert_int_equal(count_in_log("\"event\": \"connect\""), 1);
	assert_int_equal(count_in_log("\"event\": \"message\""), 2);
	wait_log("\"line\": \"QUIT\"");
	fixture_free(&f1);
	fixture_free(&f2);
}

static void test_per_connection_script(void **state)
{
	struct run r1, r2;
	struct fixture f;

	(void)state;
	/* The first connection is turned away, the next one served: what a
	 * connector retrying the same host sees. */
	peer_start("{\"connections\": [{\"greeting\": \"421 4.3.2 busy\"}]}");
	run_init(&r1, peer.port);
	run_client(&r1);
	assert_int_equal(r1.failed, 1);
	assert_int_equal(r1.why.code, 421);
	simple_fixture(&f);
	run_init(&r2, peer.port);
	run_one(&r2, &f);
	assert_status(&f.results[0], DS_OK, STAGE_DATA, 250, "2.0.0");
	assert_true(log_has("\"conn\": 2, \"event\": \"message\""));
	fixture_free(&f);
}

/* ---- timeouts: the stage under test 1 s, every other 10 s ---- */

static void assert_about_1s(double elapsed)
{
	if (elapsed < 0.9 || elapsed > 2.5)
		print_error("elapsed %.3f s\n", elapsed);
	assert_true(elapsed >= 0.9 && elapsed <= 2.5);
}

static void setup_timeout(struct run *r, const char *script, enum client_stage stage)
{
	peer_start(script);
	run_init(r, peer.port);
	r->target.timeout_ms[stage] = 1000;
}

static void expect_setup_timeout(const char *script, enum client_stage stage, const char *text)
{
	struct run r;

	setup_timeout(&r, script, stage);
	run_client(&r);
	assert_int_equal(r.failed, 1);
	assert_status(&r.why, DS_TEMP, stage, 0, "4.4.2");
	assert_string_equal(r.why.text, text);
	assert_about_1s(r.t_end - r.t0);
}

static void test_timeout_greeting(void **state)
{
	(void)state;
	expect_setup_timeout("{\"greeting\": {\"action\": \"hang\"}}", STAGE_GREETING,
			     "timed out after 1 s waiting for the greeting reply");
}

static void test_timeout_ehlo(void **state)
{
	(void)state;
	expect_setup_timeout("{\"ehlo\": {\"action\": \"hang\"}}", STAGE_EHLO,
			     "timed out after 1 s waiting for the EHLO reply");
}

static void test_timeout_auth(void **state)
{
	struct run r;

	(void)state;
	setup_timeout(&r, "{\"extensions\": [\"AUTH PLAIN\"], \"auth\": {\"action\": \"hang\"}}",
		      STAGE_EHLO);
	r.target.auth_user = "u";
	r.target.auth_secret = "p";
	run_client(&r);
	assert_int_equal(r.failed, 1);
	assert_status(&r.why, DS_TEMP, STAGE_EHLO, 0, "4.4.2");
	assert_string_equal(r.why.text, "timed out after 1 s waiting for the AUTH reply");
}

/* A transaction stage times out: every undecided recipient gets it, then
 * the connection closes. */
static void expect_txn_timeout(const char *script, enum client_stage stage, const char *text,
			       size_t body_len)
{
	struct run r;
	struct fixture f;
	char *body = malloc(body_len + 1);

	assert_non_null(body);
	memset(body, 'x', body_len);
	if (body_len >= 2)
		memcpy(body + body_len - 2, "\r\n", 2);
	setup_timeout(&r, script, stage);
	fixture_init(&f, "sender@example.org", two_rcpts, 2, body, body_len);
	free(body);
	run_one(&r, &f);
	assert_int_equal(r.done, 1);
	assert_false(r.idle_after[0]);
	assert_int_equal(r.closed, 1);
	for (int i = 0; i < 2; i++) {
		assert_status(&f.results[i], DS_TEMP, stage, 0, "4.4.2");
		assert_string_equal(f.results[i].text, text);
	}
	assert_about_1s(r.t_done[0] - r.t_send[0]);
	fixture_free(&f);
}

static void test_timeout_mail(void **state)
{
	(void)state;
	expect_txn_timeout("{\"extensions\": [\"PIPELINING\"], \"mail\": {\"action\": \"hang\"}}",
			   STAGE_MAIL_FROM, "timed out after 1 s waiting for the MAIL FROM reply", 64);
}

static void test_timeout_rcpt(void **state)
{
	(void)state;
	/* The first RCPT is accepted: the second's reply never comes. */
	expect_txn_timeout("{\"rcpt\": [\"250 2.1.5 ok\", {\"action\": \"hang\"}]}", STAGE_RCPT_TO,
			   "timed out after 1 s waiting for the RCPT TO reply", 64);
}

static void test_timeout_data(void **state)
{
	(void)state;
	expect_txn_timeout("{\"data\": {\"action\": \"hang\"}}", STAGE_DATA,
			   "timed out after 1 s waiting for the DATA reply", 64);
}

static void test_timeout_final(void **state)
{
	(void)state;
	expect_txn_timeout("{\"final\": {\"action\": \"hang\"}}", STAGE_DATA,
			   "timed out after 1 s waiting for the end of DATA reply", 64);
}

static void test_timeout_body(void **state)
{
	(void)state;
	/* The peer stops reading: 32 MB cannot fit the socket buffers. */
	expect_txn_timeout("{\"body\": {\"action\": \"stall\"}}", STAGE_DATA,
			   "timed out after 1 s sending the message body", 32u << 20);
}

static void test_timeout_connect(void **state)
{
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);
	int lfd, filler;
	struct run r;
	char want[64];

	(void)state;
	/* A listener with a full accept queue drops further SYNs: connect hangs. */
	lfd = socket(AF_INET, SOCK_STREAM, 0);
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(lfd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(listen(lfd, 0), 0);
	assert_int_equal(getsockname(lfd, (struct sockaddr *)&sin, &len), 0);
	filler = socket(AF_INET, SOCK_STREAM, 0);
	assert_int_equal(connect(filler, (struct sockaddr *)&sin, sizeof(sin)), 0);

	run_init(&r, ntohs(sin.sin_port));
	r.target.timeout_ms[STAGE_CONNECT] = 1000;
	run_client(&r);
	close(filler);
	close(lfd);
	assert_int_equal(r.failed, 1);
	assert_status(&r.why, DS_TEMP, STAGE_CONNECT, 0, "4.4.1");
	snprintf(want, sizeof(want), "connection to peer.test[127.0.0.1]:%u timed out after 1 s",
		 ntohs(sin.sin_port));
	assert_string_equal(r.why.text, want);
	assert_about_1s(r.t_end - r.t0);
}

/* ---- connections lost, 421, bad replies ---- */

static void test_drop_mid_data(void **state)
{
	struct run r;
	struct fixture f;

	(void)state;
	peer_start("{\"body\": {\"action\": \"close\"}}");
	simple_fixture(&f);
	run_init(&r, peer.port);
	run_one(&r, &f);
	assert_int_equal(r.done, 1);
	assert_int_equal(r.closed, 1);
	for (int i = 0; i < 2; i++) {
		assert_status(&f.results[i], DS_TEMP, STAGE_DATA, 0, "4.4.2");
		assert_text_has(&f.results[i], "connection lost");
	}
	fixture_free(&f);
}

static void test_421_during_rcpt(void **state)
{
	static const char *const rcpts[] = { "a@x.test", "b@x.test", "c@x.test" };
	struct run r;
	struct fixture f;

	(void)state;
	peer_start("{\"extensions\": [\"PIPELINING\"],"
		   " \"rcpt\": [\"250 2.1.5 ok\", \"421 4.3.2 shutting down\"]}");
	fixture_init(&f, "sender@example.org", rcpts, 3, simple_body, strlen(simple_body));
	run_init(&r, peer.port);
	run_one(&r, &f);
	/* The accepted one and the rest alike: the server is going away. */
	for (int i = 0; i < 3; i++) {
		assert_status(&f.results[i], DS_TEMP, STAGE_RCPT_TO, 421, "4.3.2");
		assert_string_equal(f.results[i].text, "shutting down");
	}
	assert_int_equal(r.closed, 1);
	assert_int_equal(r.why.code, 421);
	fixture_free(&f);
}

static void test_multiline_and_malformed(void **state)
{
	static const char *const rcpts[] = { "a@x.test", "b@x.test" };
	struct run r;
	struct fixture f;

	(void)state;
	peer_start("{\"rcpt\": [\"550-5.7.1 first line\\n550-5.7.1 second line\\n550 5.7.1 third\","
		   " \"250-ok\\n251 code changed\"]}");
	fixture_init(&f, "sender@example.org", rcpts, 2, simple_body, strlen(simple_body));
	run_init(&r, peer.port);
	run_one(&r, &f);
	assert_status(&f.results[0], DS_PERM, STAGE_RCPT_TO, 550, "5.7.1");
	assert_string_equal(f.results[0].text, "first line; second line; third");
	assert_status(&f.results[1], DS_TEMP, STAGE_RCPT_TO, 0, "4.5.0");
	assert_text_has(&f.results[1], "malformed reply");
	assert_int_equal(r.closed, 1);
	fixture_free(&f);
}

static void test_reply_line_too_long(void **state)
{
	struct run r;
	struct fixture f;
	struct strbuf script;

	(void)state;
	strbuf_init(&script);
	strbuf_puts(&script, "{\"mail\": \"250 ");
	for (int i = 0; i < REPLY_LINE_MAX; i++)
		strbuf_putc(&script, 'x');
	strbuf_puts(&script, "\"}");
	peer_start(script.data);
	strbuf_free(&script);
	simple_fixture(&f);
	run_init(&r, peer.port);
	run_one(&r, &f);
	assert_status(&f.results[0], DS_TEMP, STAGE_MAIL_FROM, 0, "4.5.0");
	assert_string_equal(f.results[0].text, "malformed reply (MAIL FROM): reply line too long");
	assert_int_equal(r.closed, 1);
	fixture_free(&f);
}

static void test_idle_close(void **state)
{
	struct run r;
	struct fixture f;

	(void)state;
	peer_start("{\"final\": {\"reply\": \"250 2.0.0 ok, bye\", \"close\": true}}");
	simple_fixture(&f);
	run_init(&r, peer.port);
	r.end = END_WAIT_CLOSE;
	run_one(&r, &f);
	assert_status(&f.results[0], DS_OK, STAGE_DATA, 250, "2.0.0");
	assert_true(r.idle_after[0]);
	assert_int_equal(r.closed, 1);
	assert_int_equal(r.why.cls, DS_TEMP);
	assert_text_has(&r.why, "closed by the server while idle");
	fixture_free(&f);
}

/* ---- the body ---- */

static void test_dot_stuffing(void **state)
{
	struct run r;
	struct fixture f;
	struct strbuf body, want;

	(void)state;
	strbuf_init(&body);
	/* Dots at the start, alone on a line, doubled, after long stretches
	 * (sent by reference) and short ones (copied), and no final CRLF. */
	strbuf_puts(&body, ".starts with a dot\r\nline\r\n.\r\n..two\r\n");
	for (int i = 0; i < 40; i++) {
		for (int k = 0; k < 30 + i * 7; k++)
			strbuf_puts(&body, "filler text ");
		strbuf_puts(&body, i % 3 == 0 ? "\r\n.dot line\r\n" : "\r\n");
	}
	strbuf_puts(&body, ".\r\n.\r\nlast line");
	assert_false(strbuf_failed(&body));

	peer_start("{\"extensions\": [\"PIPELINING\"]}");
	fixture_init(&f, "sender@example.org", two_rcpts, 1, body.data, body.len);
	run_init(&r, peer.port);
	run_one(&r, &f);
	assert_status(&f.results[0], DS_OK, STAGE_DATA, 250, "2.0.0");

	/* The peer unstuffs: what it got is the body, plus the CRLF it lacked. */
	strbuf_init(&want);
	strbuf_puts(&want, "\"data\": \"");
	json_escape(&want, body.data, body.len);
	strbuf_puts(&want, "\\r\\n\"");
	assert_true(log_has(want.data));
	strbuf_free(&want);
	strbuf_free(&body);
	fixture_free(&f);
}

static void test_empty_body(void **state)
{
	struct run r;
	struct fixture f;

	(void)state;
	peer_start("{}");
	fixture_init(&f, "", two_rcpts, 1, "", 0);
	run_init(&r, peer.port);
	run_one(&r, &f);
	assert_status(&f.results[0], DS_OK, STAGE_DATA, 250, "2.0.0");
	assert_true(log_has("\"line\": \"MAIL FROM:<>\""));
	assert_true(log_has("\"data\": \"\""));
	fixture_free(&f);
}

/* ---- envelope parameters ---- */

static void test_size(void **state)
{
	struct run r;
	struct fixture f1, f2;

	(void)state;
	peer_start("{\"extensions\": [\"PIPELINING\", \"SIZE 1000\"]}");
	simple_fixture(&f1);
	simple_fixture(&f2);
	f2.m->size = 5000;
	run_init(&r, peer.port);
	r.txns[0] = &f1.txn;
	r.txns[1] = &f2.txn;
	r.n_txns = 2;
	run_client(&r);
	assert_status(&f1.results[0], DS_OK, STAGE_DATA, 250, "2.0.0");
	for (int i = 0; i < 2; i++) {
		assert_status(&f2.results[i], DS_PERM, STAGE_MAIL_FROM, 0, "5.3.4");
		assert_string_equal(f2.results[i].text,
				    "message size 5000 exceeds the server's limit of 1000");
	}
	/* Refused without a word to the server, which stays usable. */
	assert_int_equal(count_in_log("MAIL FROM"), 1);
	assert_true(r.idle_after[1]);
	wait_log("\"line\": \"QUIT\"");
	fixture_free(&f1);
	fixture_free(&f2);
}

static void test_dsn_8bit_utf8(void **state)
{
	static const char *const rcpts[] = { "a@x.test", "b@x.test", "c@x.test" };
	struct run r;
	struct fixture f;

	(void)state;
	peer_start("{\"extensions\": [\"PIPELINING\", \"DSN\", \"8BITMIME\", \"SMTPUTF8\"]}");
	fixture_init(&f, "sender@example.org", rcpts, 3, simple_body, strlen(simple_body));
	f.m->ret = MSG_RET_HDRS;
	assert_true(message_set_string(&f.m->envid, "QQ314159", 8));
	f.m->body_type = MSG_BODY_8BITMIME;
	f.m->smtputf8 = true;
	f.m->rcpts[0].notify = RCPT_NOTIFY_SUCCESS | RCPT_NOTIFY_DELAY;
	assert_true(message_set_string(&f.m->rcpts[0].orcpt, "rfc822;a+2Bb@x.test", 19));
	f.m->rcpts[1].notify = RCPT_NOTIFY_NEVER;
	run_init(&r, peer.port);
	run_one(&r, &f);
	assert_true(log_has("\"line\": \"MAIL FROM:<sender@example.org> BODY=8BITMIME SMTPUTF8"
			    " RET=HDRS ENVID=QQ314159\""));
	assert_true(log_has("\"line\": \"RCPT TO:<a@x.test> NOTIFY=SUCCESS,DELAY"
			    " ORCPT=rfc822;a+2Bb@x.test\""));
	assert_true(log_has("\"line\": \"RCPT TO:<b@x.test> NOTIFY=NEVER\""));
	assert_true(log_has("\"line\": \"RCPT TO:<c@x.test>\""));
	fixture_free(&f);
}

static void test_no_dsn_params_without_dsn(void **state)
{
	struct run r;
	struct fixture f;

	(void)state;
	peer_start("{\"extensions\": [\"PIPELINING\", \"8BITMIME\"]}");
	simple_fixture(&f);
	f.m->ret = MSG_RET_FULL;
	assert_true(message_set_string(&f.m->envid, "ID", 2));
	f.m->rcpts[0].notify = RCPT_NOTIFY_FAILURE;
	run_init(&r, peer.port);
	run_one(&r, &f);
	assert_status(&f.results[0], DS_OK, STAGE_DATA, 250, "2.0.0");
	assert_true(log_has("\"line\": \"MAIL FROM:<sender@example.org>\""));
	assert_true(log_has("\"line\": \"RCPT TO:<alice@example.net>\""));
	fixture_free(&f);
}

static void test_smtputf8_not_offered(void **state)
{
	struct run r;
	struct fixture f;

	(void)state;
	peer_start("{\"extensions\": [\"PIPELINING\"]}");
	simple_fixture(&f);
	f.m->smtputf8 = true;
	run_init(&r, peer.port);
	run_one(&r, &f);
	assert_status(&f.results[0], DS_PERM, STAGE_MAIL_FROM, 0, "5.6.7");
	assert_status(&f.results[1], DS_PERM, STAGE_MAIL_FROM, 0, "5.6.7");
	assert_false(log_has("MAIL FROM"));
	fixture_free(&f);
}

/* RFC 8689: a REQUIRETLS message never goes over a session in clear, even
 * to a server that offers REQUIRETLS (which it should not do in clear). */
static void test_requiretls_needs_verified_tls(void **state)
{
	struct run r;
	struct fixture f;

	(void)state;
	peer_start("{\"extensions\": [\"PIPELINING\", \"REQUIRETLS\"]}");
	simple_fixture(&f);
	f.m->requiretls = true;
	run_init(&r, peer.port);
	run_one(&r, &f);
	assert_status(&f.results[0], DS_PERM, STAGE_MAIL_FROM, 0, "5.7.30");
	assert_string_equal(f.results[0].text,
			    "message needs REQUIRETLS, and the session is not encrypted");
	assert_false(log_has("MAIL FROM"));
	fixture_free(&f);
}

static void test_crlf_in_recipient(void **state)
{
	static const char *const rcpts[] = { "ok@x.test", "bad\r\nRSET@x.test" };
	struct run r;
	struct fixture f;

	(void)state;
	peer_start("{\"extensions\": [\"PIPELINING\"]}");
	fixture_init(&f, "sender@example.org", rcpts, 2, simple_body, strlen(simple_body));
	run_init(&r, peer.port);
	run_one(&r, &f);
	assert_status(&f.results[0], DS_OK, STAGE_DATA, 250, "2.0.0");
	assert_status(&f.results[1], DS_PERM, STAGE_RCPT_TO, 0, "5.1.3");
	assert_false(log_has("bad"));
	assert_false(log_has("RSET"));
	fixture_free(&f);
}

/* ---- AUTH ---- */

static void run_auth(struct run *r, const char *script)
{
	peer_start(script);
	run_init(r, peer.port);
	r->target.auth_user = "alice";
	r->target.auth_secret = "s3cret pass";
	run_client(r);
}

static void test_auth_plain(void **state)
{
	struct run r;

	(void)state;
	run_auth(&r, "{\"extensions\": [\"AUTH LOGIN PLAIN\"]}");
	assert_int_equal(r.ready, 1);
	assert_int_equal(r.ext, CLIENT_EXT_AUTH);
	assert_true(log_has("\"event\": \"auth\", \"mechanism\": \"PLAIN\", \"user\": \"alice\","
			    " \"secret\": \"s3cret pass\""));
}

static void test_auth_login(void **state)
{
	struct run r;

	(void)state;
	run_auth(&r, "{\"extensions\": [\"AUTH=LOGIN\"]}");
	assert_int_equal(r.ready, 1);
	assert_true(log_has("\"event\": \"auth\", \"mechanism\": \"LOGIN\", \"user\": \"alice\","
			    " \"secret\": \"s3cret pass\""));
}

static void test_auth_rejected(void **state)
{
	struct run r;

	(void)state;
	run_auth(&r, "{\"extensions\": [\"AUTH PLAIN\"], \"auth\": \"535 5.7.8 bad credentials\"}");
	assert_int_equal(r.failed, 1);
	assert_status(&r.why, DS_PERM, STAGE_EHLO, 535, "5.7.8");
	assert_string_equal(r.why.text, "bad credentials");
}

static void test_auth_temp_failure(void **state)
{
	struct run r;

	(void)state;
	run_auth(&r, "{\"extensions\": [\"AUTH LOGIN\"], \"auth\": \"454 4.7.0 try later\"}");
	assert_int_equal(r.failed, 1);
	assert_status(&r.why, DS_TEMP, STAGE_EHLO, 454, "4.7.0");
}

static void test_auth_not_offered(void **state)
{
	struct run r;

	(void)state;
	run_auth(&r, "{\"extensions\": [\"AUTH CRAM-MD5\"]}");
	assert_int_equal(r.failed, 1);
	assert_int_equal(r.why.cls, DS_TEMP);
	assert_string_equal(r.why.text, "server offers no AUTH PLAIN/LOGIN");
}

static void test_auth_long_fields(void **state)
{
	char user[257], secret[257];
	struct strbuf want;
	struct run r;

	(void)state;
	/* 255 bytes each is the most the client sends... */
	memset(user, 'u', 255);
	user[255] = '\0';
	memset(secret, 's', 255);
	secret[255] = '\0';
	peer_start("{\"extensions\": [\"AUTH PLAIN\"]}");
	run_init(&r, peer.port);
	r.target.auth_user = user;
	r.target.auth_secret = secret;
	run_client(&r);
	assert_int_equal(r.ready, 1);
	strbuf_init(&want);
	strbuf_printf(&want, "\"user\": \"%s\", \"secret\": \"%s\"", user, secret);
	assert_true(log_has(want.data));
	strbuf_free(&want);

	/* ...one more is refused before connecting. */
	strcpy(secret + 255, "s");
	run_init(&r, peer.port);
	r.target.auth_user = user;
	r.target.auth_secret = secret;
	run_client(&r);
	assert_int_equal(r.failed, 1);
	assert_status(&r.why, DS_TEMP, STAGE_CONNECT, 0, "4.3.0");
	assert_string_equal(r.why.text, "AUTH user name or secret longer than 255 bytes");
	assert_int_equal(count_in_log("\"event\": \"connect\""), 1);
}

/* ---- connecting ---- */

static void test_bind_unavailable_source(void **state)
{
	struct run r;

	(void)state;
	run_init(&r, 9);
	assert_true(ipaddr_parse("192.0.2.1", 9, &r.target.source));
	run_client(&r);
	assert_int_equal(r.failed, 1);
	assert_status(&r.why, DS_TEMP, STAGE_CONNECT, 0, "4.3.0");
	assert_text_has(&r.why, "192.0.2.1");
	assert_text_has(&r.why, "Cannot assign requested address");
}

static void test_bind_source(void **state)
{
	struct run r;
	struct fixture f;

	(void)state;
	peer_start("{}");
	simple_fixture(&f);
	run_init(&r, peer.port);
	/* All of 127/8 is local: the peer sees the chosen one. */
	assert_true(ipaddr_parse("127.0.0.2", 9, &r.target.source));
	run_one(&r, &f);
	assert_status(&f.results[0], DS_OK, STAGE_DATA, 250, "2.0.0");
	assert_true(log_has("\"event\": \"connect\", \"peer\": \"127.0.0.2\""));
	fixture_free(&f);
}

static void test_ipv6(void **state)
{
	struct run r;
	struct fixture f;
	struct sockaddr_in6 *sin6;

	(void)state;
	peer_start_at("{\"extensions\": [\"PIPELINING\"]}", "::1");
	simple_fixture(&f);
	run_init(&r, 0);
	memset(&r.target.addr, 0, sizeof(r.target.addr));
	sin6 = (struct sockaddr_in6 *)&r.target.addr;
	sin6->sin6_family = AF_INET6;
	sin6->sin6_port = htons((uint16_t)peer.port);
	sin6->sin6_addr = in6addr_loopback;
	r.target.addr_len = sizeof(*sin6);
	assert_true(ipaddr_parse("::1", 3, &r.target.source));
	run_one(&r, &f);
	assert_string_equal(r.peer_text, "::1");
	assert_status(&f.results[0], DS_OK, STAGE_DATA, 250, "2.0.0");
	assert_true(log_has("\"event\": \"connect\", \"peer\": \"::1\""));
	fixture_free(&f);
}

static void test_source_family_mismatch(void **state)
{
	struct run r;

	(void)state;
	run_init(&r, 9);
	assert_true(ipaddr_parse("2001:db8::1", 11, &r.target.source));
	run_client(&r);
	assert_int_equal(r.failed, 1);
	assert_status(&r.why, DS_TEMP, STAGE_CONNECT, 0, "4.3.0");
	assert_string_equal(r.why.text,
			    "cannot bind source address 2001:db8::1: not of the family of 127.0.0.1");
}

static void test_connect_refused(void **state)
{
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct run r;

	(void)state;
	/* A port that was free a moment ago and has no listener. */
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
	close(fd);
	run_init(&r, ntohs(sin.sin_port));
	run_client(&r);
	assert_int_equal(r.failed, 1);
	assert_status(&r.why, DS_TEMP, STAGE_CONNECT, 0, "4.4.1");
	assert_text_has(&r.why, "Connection refused");
}

static void test_free_before_connected(void **state)
{
	struct event_base *base = event_base_new();
	struct run r;
	struct client *c;

	(void)state;
	peer_start("{}");
	run_init(&r, peer.port);
	c = client_connect(base, &r.target, &callbacks, &r);
	assert_non_null(c);
	assert_false(client_is_idle(c));
	client_quit(c); /* not idle: frees at once */
	event_base_dispatch(base);
	event_base_free(base);
	assert_int_equal(r.ready + r.failed + r.closed, 0);
}

/* ---- STARTTLS: what the policy does with the server's offer ---- */

/* One transaction with the given TLS use; a context only when TLS may be
 * spoken (the client refuses to start without one). */
static void run_starttls(struct run *r, struct fixture *f, const char *script, enum tls_use use,
			 bool after_failure)
{
	char err[256];
	struct tls_client *tc = NULL;

	if (use != TLS_USE_NEVER) {
		tc = tls_client_new(err, sizeof(err));
		assert_non_null(tc);
	}
	peer_start(script);
	run_init(r, peer.port);
	r->target.tls.policy.use = use;
	r->target.tls.policy.verify = use == TLS_USE_REQUIRED ? TLS_VERIFY_NAME : TLS_VERIFY_NONE;
	r->target.tls.name = "peer.test";
	r->target.tls.ctx = tc;
	r->target.tls.after_failure = after_failure;
	r->target.timeout_ms[STAGE_TLS] = 1000;
	simple_fixture(f);
	run_one(r, f);
	tls_client_free(tc);
}

static void test_starttls_refused_goes_on_in_clear(void **state)
{
	struct run r;
	struct fixture f;

	(void)state;
	run_starttls(&r, &f, "{\"extensions\": [\"STARTTLS\", \"PIPELINING\"]}", TLS_USE_OFFERED,
		     false);
	assert_int_equal(r.done, 1);
	assert_status(&f.results[0], DS_OK, STAGE_DATA, 250, "2.0.0");
	assert_string_equal(r.tls, "none(STARTTLS refused: 454)");
	assert_false(r.tls_failed);
	/* The session went on as after the EHLO: PIPELINING still counts. */
	assert_int_equal(r.ext, CLIENT_EXT_STARTTLS | CLIENT_EXT_PIPELINING);
	assert_true(cmd_tag("STARTTLS", 0) >= 0);
	assert_int_equal(count_in_log("\"line\": \"EHLO "), 1);
	fixture_free(&f);
}

static void test_starttls_not_offered(void **state)
{
	struct run r;
	struct fixture f;

	(void)state;
	run_starttls(&r, &f, "{}", TLS_USE_OFFERED, false);
	assert_status(&f.results[0], DS_OK, STAGE_DATA, 250, "2.0.0");
	assert_string_equal(r.tls, "none(not offered)");
	assert_int_equal(cmd_tag("STARTTLS", 0), -1);
	fixture_free(&f);
}

static void test_starttls_never_said_when_disabled(void **state)
{
	struct run r;
	struct fixture f;

	(void)state;
	run_starttls(&r, &f, "{\"extensions\": [\"STARTTLS\"]}", TLS_USE_NEVER, false);
	assert_status(&f.results[0], DS_OK, STAGE_DATA, 250, "2.0.0");
	assert_string_equal(r.tls, "none(disabled)");
	assert_int_equal(cmd_tag("STARTTLS", 0), -1);
	fixture_free(&f);
	peer_stop(NULL);

	run_starttls(&r, &f, "{\"extensions\": [\"STARTTLS\"]}", TLS_USE_NEVER, true);
	assert_status(&f.results[0], DS_OK, STAGE_DATA, 250, "2.0.0");
	assert_string_equal(r.tls, "none(after a failed handshake)");
	assert_int_equal(cmd_tag("STARTTLS", 0), -1);
	fixture_free(&f);
}

static void test_starttls_required(void **state)
{
	struct run r;
	struct fixture f;

	(void)state;
	run_starttls(&r, &f, "{}", TLS_USE_REQUIRED, false);
	assert_int_equal(r.failed, 1);
	assert_status(&r.why, DS_TEMP, STAGE_TLS, 0, "4.7.4");
	assert_string_equal(r.why.text, "TLS is required, but peer.test does not offer STARTTLS");
	assert_false(r.tls_failed);
	assert_int_equal(cmd_tag("MAIL", 0), -1);
	fixture_free(&f);
	peer_stop(NULL);

	run_starttls(&r, &f, "{\"extensions\": [\"STARTTLS\"]}", TLS_USE_REQUIRED, false);
	assert_int_equal(r.failed, 1);
	assert_status(&r.why, DS_TEMP, STAGE_TLS, 0, "4.7.4");
	assert_string_equal(r.why.text,
			    "TLS is required, but peer.test refused STARTTLS: 454 TLS not available");
	assert_false(r.tls_failed);
	assert_int_equal(cmd_tag("MAIL", 0), -1);
	fixture_free(&f);
}

/* A STARTTLS that gets no reply, or whose 220 is followed by the
 * connection's end or by bytes before the handshake: a TLS failure the
 * owner can tell, so it may connect again in clear. The text has text or
 * or_text in it. */
static void expect_tls_failure(const char *script, const char *enhanced, const char *text,
			       const char *or_text)
{
	struct run r;
	struct fixture f;
	bool as_expected;

	run_starttls(&r, &f, script, TLS_USE_OFFERED, false);
	assert_int_equal(r.failed, 1);
	assert_status(&r.why, DS_TEMP, STAGE_TLS, 0, enhanced);
	as_expected = strstr(r.why.text, text) != NULL ||
		      (or_text != NULL && strstr(r.why.text, or_text) != NULL);
	if (!as_expected)
		print_error("text \"%s\"\n", r.why.text);
	assert_true(as_expected);
	assert_true(r.tls_failed);
	assert_string_equal(r.tls, "none(TLS failed)");
	assert_int_equal(cmd_tag("MAIL", 0), -1);
	fixture_free(&f);
}

static void test_starttls_stalls(void **state)
{
	(void)state;
	expect_tls_failure("{\"extensions\": [\"STARTTLS\"], \"starttls\": {\"action\": \"hang\"}}",
			   "4.4.2", "timed out after 1 s waiting for the STARTTLS reply", NULL);
}

static void test_starttls_then_close(void **state)
{
	(void)state;
	expect_tls_failure("{\"extensions\": [\"STARTTLS\"], "
			   "\"starttls\": {\"reply\": \"220 2.0.0 go ahead\", \"close\": true}}",
			   "4.7.5", "TLS handshake failed: connection closed by the server",
			   /* the close may come as a reset, our ClientHello unread */
			   "TLS handshake failed: Connection reset by peer");
}

static void test_starttls_bytes_before_the_handshake(void **state)
{
	(void)state;
	/* Both lines leave in one write, so they arrive together; should the
	 * second come later, it breaks the handshake instead. */
	expect_tls_failure("{\"extensions\": [\"STARTTLS\"], "
			   "\"starttls\": \"220 2.0.0 go ahead\\n250 injected\"}",
			   "4.7.5", "the server sent more after its 220 reply to STARTTLS",
			   "TLS handshake failed");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_reply_parser),
		cmocka_unit_test_teardown(test_pipelined, peer_stop),
		cmocka_unit_test_teardown(test_lockstep, peer_stop),
		cmocka_unit_test_teardown(test_bdat, peer_stop),
		cmocka_unit_test_teardown(test_lmtp, peer_stop),
		cmocka_unit_test_teardown(test_lmtp_bdat, peer_stop),
		cmocka_unit_test_teardown(test_lmtp_lhlo_refused, peer_stop),
		cmocka_unit_test_teardown(test_greeting_421, peer_stop),
		cmocka_unit_test_teardown(test_greeting_554, peer_stop),
		cmocka_unit_test_teardown(test_ehlo_4xx, peer_stop),
		cmocka_unit_test_teardown(test_helo_fallback, peer_stop),
		cmocka_unit_test_teardown(test_mail_rejected_pipelined, peer_stop),
		cmocka_unit_test_teardown(test_mail_rejected_lockstep, peer_stop),
		cmocka_unit_test_teardown(test_rcpt_mixed, peer_stop),
		cmocka_unit_test_teardown(test_all_rcpt_rejected_pipelined, peer_stop),
		cmocka_unit_test_teardown(test_all_rcpt_rejected_lockstep, peer_stop),
		cmocka_unit_test_teardown(test_data_rejected, peer_stop),
		cmocka_unit_test_teardown(test_final_rejected_then_reuse, peer_stop),
		cmocka_unit_test_teardown(test_two_transactions, peer_stop),
		cmocka_unit_test_teardown(test_per_connection_script, peer_stop),
		cmocka_unit_test_teardown(test_timeout_greeting, peer_stop),
		cmocka_unit_test_teardown(test_timeout_ehlo, peer_stop),
		cmocka_unit_test_teardown(test_timeout_auth, peer_stop),
		cmocka_unit_test_teardown(test_timeout_mail, peer_stop),
		cmocka_unit_test_teardown(test_timeout_rcpt, peer_stop),
		cmocka_unit_test_teardown(test_timeout_data, peer_stop),
		cmocka_unit_test_teardown(test_timeout_final, peer_stop),
		cmocka_unit_test_teardown(test_timeout_body, peer_stop),
		cmocka_unit_test(test_timeout_connect),
		cmocka_unit_test_teardown(test_drop_mid_data, peer_stop),
		cmocka_unit_test_teardown(test_421_during_rcpt, peer_stop),
		cmocka_unit_test_teardown(test_multiline_and_malformed, peer_stop),
		cmocka_unit_test_teardown(test_reply_line_too_long, peer_stop),
		cmocka_unit_test_teardown(test_idle_close, peer_stop),
		cmocka_unit_test_teardown(test_dot_stuffing, peer_stop),
		cmocka_unit_test_teardown(test_empty_body, peer_stop),
		cmocka_unit_test_teardown(test_size, peer_stop),
		cmocka_unit_test_teardown(test_dsn_8bit_utf8, peer_stop),
		cmocka_unit_test_teardown(test_no_dsn_params_without_dsn, peer_stop),
		cmocka_unit_test_teardown(test_smtputf8_not_offered, peer_stop),
		cmocka_unit_test_teardown(test_requiretls_needs_verified_tls, peer_stop),
		cmocka_unit_test_teardown(test_crlf_in_recipient, peer_stop),
		cmocka_unit_test_teardown(test_auth_plain, peer_stop),
		cmocka_unit_test_teardown(test_auth_login, peer_stop),
		cmocka_unit_test_teardown(test_auth_rejected, peer_stop),
		cmocka_unit_test_teardown(test_auth_temp_failure, peer_stop),
		cmocka_unit_test_teardown(test_auth_not_offered, peer_stop),
		cmocka_unit_test_teardown(test_auth_long_fields, peer_stop),
		cmocka_unit_test(test_bind_unavailable_source),
		cmocka_unit_test_teardown(test_bind_source, peer_stop),
		cmocka_unit_test_teardown(test_ipv6, peer_stop),
		cmocka_unit_test(test_source_family_mismatch),
		cmocka_unit_test(test_connect_refused),
		cmocka_unit_test_teardown(test_free_before_connected, peer_stop),
		cmocka_unit_test_teardown(test_starttls_refused_goes_on_in_clear, peer_stop),
		cmocka_unit_test_teardown(test_starttls_not_offered, peer_stop),
		cmocka_unit_test_teardown(test_starttls_never_said_when_disabled, peer_stop),
		cmocka_unit_test_teardown(test_starttls_required, peer_stop),
		cmocka_unit_test_teardown(test_starttls_stalls, peer_stop),
		cmocka_unit_test_teardown(test_starttls_then_close, peer_stop),
		cmocka_unit_test_teardown(test_starttls_bytes_before_the_handshake, peer_stop),
	};

	/* libevent writes with writev(): a peer that closed first would
	 * raise SIGPIPE. The server ignores it at start-up; so do we. */
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
