/*
 * test_spool.c - unit tests for the durable spool (src/spool/).
 *
 * Each test runs a libevent loop against a spool in its own mkdtemp
 * directory under /tmp, removed afterwards. They cover group commit,
 * round trips of every envelope field through close and recovery, recipient
 * updates and releases, kill -9 in the middle of a stream of submits
 * (every acknowledged message must come back), torn and damaged records,
 * a failed write being cut off again, removal and compaction of segments
 * (with TERN_SPOOL_SEGMENT_BYTES making them small), and the directory
 * lock. What they cannot do is make fdatasync itself fail.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "spool/internal.h"
#include "spool/journal.h"
#include "spool/spool.h"
#include "util/log.h"
#include "util/strbuf.h"

#define ARRIVAL_BASE 1700000000000ll

struct fixture {
	char tmp[64];
	char dir[96];
	struct event_base *base;
	struct spool *s;
};

/* ---- helpers ---- */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	snprintf(f->tmp, sizeof(f->tmp), "/tmp/tern-spool-test-XXXXXX");
	assert_non_null(mkdtemp(f->tmp));
	/* A directory that does not exist yet: spool_open creates it. */
	snprintf(f->dir, sizeof(f->dir), "%s/var/spool", f->tmp);
	f->base = event_base_new();
	assert_non_null(f->base);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	if (f->s != NULL)
		spool_close(f->s);
	event_base_free(f->base);
	nftw(f->tmp, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	unsetenv("TERN_SPOOL_SEGMENT_BYTES");
	free(f);
	return 0;
}

static struct spool *open_spool(struct fixture *f)
{
	char err[256];
	struct spool *s = spool_open(f->base, f->dir, err, sizeof(err));

	if (s == NULL)
		fail_msg("spool_open: %s", err);
	return s;
}

static void reopen(struct fixture *f)
{
	spool_close(f->s);
	f->s = open_spool(f);
}

static void run_for_ms(struct fixture *f, long ms)
{
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };

	event_base_loopexit(f->base, &tv);
	event_base_dispatch(f->base);
}

/* Body byte i of message k. */
static char body_byte(int k, size_t i)
{
	return (char)('a' + (k * 7 + (int)(i % 251) * 3) % 26);
}

static char *make_body(int k, size_t len)
{
	char *b = malloc(len + 1);

	assert_non_null(b);
	for (size_t i = 0; i < len; i++)
		b[i] = body_byte(k, i);
	if (len >= 2) {
		b[len - 2] = '\r';
		b[len - 1] = '\n';
	}
	return b;
}

static size_t body_len_of(int k)
{
	return 100 + (size_t)(k % 9) * 777;
}

/* Message k: every envelope field derived from k, so a recovered one can
 * be checked knowing only its arrival time. */
static struct message *make_msg(int k, int n_rcpts)
{
	char buf[128];
	struct message *m;

	if (k % 5 == 0)
		buf[0] = '\0';
	else
		snprintf(buf, sizeof(buf), "Sender%d@Example.ORG", k);
	m = message_new(buf, strlen(buf));
	assert_non_null(m);
	m->arrival_ms = ARRIVAL_BASE + k;
	if (k % 2 == 1) {
		snprintf(buf, sizeof(buf), "ENV+2B%d", k);
		assert_true(message_set_string(&m->envid, buf, strlen(buf)));
	}
	m->ret = (uint8_t)(k % 3);
	m->body_type = (uint8_t)((k / 3) % 3);
	m->smtputf8 = (k & 4) != 0;
	m->requiretls = (k & 8) != 0;
	for (int i = 0; i < n_rcpts; i++) {
		struct rcpt *r;

		snprintf(buf, sizeof(buf), "rcpt%d.%d@Dom%d.Example", k, i, i % 3);
		r = message_add_rcpt(m, buf, strlen(buf));
		assert_non_null(r);
		if (i % 2 == 1) {
			snprintf(buf, sizeof(buf), "rfc822;orig%d@x", i);
			assert_true(message_set_string(&r->orcpt, buf, strlen(buf)));
		}
		r->notify = (uint8_t)(i & 0xf);
		r->state = RCPT_PENDING;
		r->attempts = (uint16_t)i;
		r->next_try_ms = ARRIVAL_BASE + 1000 + k * 10 + i;
	}
	return m;
}

static int msg_k(const struct message *m)
{
	return (int)(m->arrival_ms - ARRIVAL_BASE);
}

static void check_msg(const struct message *m, int n_rcpts)
{
	struct message *want = make_msg(msg_k(m), n_rcpts);

	assert_string_equal(m->sender, want->sender);
	if (want->envid == NULL)
		assert_null(m->envid);
	else
		assert_string_equal(m->envid, want->envid);
	assert_int_equal(m->ret, want->ret);
	assert_int_equal(m->body_type, want->body_type);
	assert_int_equal(m->smtputf8, want->smtputf8);
	assert_int_equal(m->requiretls, want->requiretls);
	assert_int_equal(m->n_rcpts, want->n_rcpts);
	for (size_t i = 0; i < m->n_rcpts; i++) {
		assert_string_equal(m->rcpts[i].addr, want->rcpts[i].addr);
		assert_int_equal(m->rcpts[i].addr_len, want->rcpts[i].addr_len);
		assert_string_equal(m->rcpts[i].domain, want->rcpts[i].domain);
		if (want->rcpts[i].orcpt == NULL)
			assert_null(m->rcpts[i].orcpt);
		else
			assert_string_equal(m->rcpts[i].orcpt, want->rcpts[i].orcpt);
		assert_int_equal(m->rcpts[i].notify, want->rcpts[i].notify);
	}
	message_free(want);
}

static void check_body(struct spool *s, const struct message *m, size_t len)
{
	struct message_body *b = spool_read_body(s, m);
	char *want = make_body(msg_k(m), len);

	if (b == NULL)
		fail_msg("spool_read_body %016" PRIx64 ": %s", m->id, strerror(errno));
	assert_int_equal(b->len, len);
	assert_int_equal(m->size, len);
	assert_memory_equal(b->data, want, len);
	free(want);
	message_body_unref(b);
}

struct ack {
	int err;
	bool done;
	unsigned order;
};

static unsigned ack_counter;
static unsigned acks_pending;

static void ack_cb(void *arg, int err)
{
	struct ack *a = arg;

	assert_false(a->done);
	a->done = true;
	a->err = err;
	a->order = ack_counter++;
	acks_pending--;
}

static void submit(struct fixture *f, struct message *m, size_t len, struct ack *a)
{
	char *body = make_body(msg_k(m), len);
	struct iovec iov[3];
	size_t cut1 = len / 3, cut2 = len / 2;
	int err;

	/* Three pieces, one possibly empty: iovecs are joined as given. */
	iov[0] = (struct iovec){ body, cut1 };
	iov[1] = (struct iovec){ body + cut1, cut2 - cut1 };
	iov[2] = (struct iovec){ body + cut2, len - cut2 };
	memset(a, 0, sizeof(*a));
	err = spool_submit(f->s, m, iov, 3, ack_cb, a);
	free(body);
	if (err != 0)
		fail_msg("spool_submit: %s", strerror(err));
	acks_pending++;
}

static void wait_acks(struct fixture *f)
{
	time_t start = time(NULL);

	while (acks_pending > 0) {
		assert_true(time(NULL) - start < 30);
		event_base_loop(f->base, EVLOOP_ONCE);
	}
}

struct recovered {
	struct message *m[4096];
	size_t n;
};

static void recover_cb(void *arg, struct message *m)
{
	struct recovered *r = arg;

	assert_true(r->n < 4096);
	r->m[r->n++] = m;
}

static void recover_all(struct fixture *f, struct recovered *r)
{
	char err[256];

	r->n = 0;
	if (spool_recover(f->s, recover_cb, r, err, sizeof(err)) != 0)
		fail_msg("spool_recover: %s", err);
}

static void free_recovered(struct recovered *r)
{
	for (size_t i = 0; i < r->n; i++)
		message_free(r->m[i]);
	r->n = 0;
}

static void seg_path(const struct fixture *f, uint32_t no, char *buf, size_t len)
{
	snprintf(buf, len, "%s/seg-%08" PRIu32 ".log", f->dir, no);
}

static off_t file_size(const char *path)
{
	struct stat st;

	if (stat(path, &st) != 0)
		return -1;
	return st.st_size;
}

static void patch_file(const char *path, off_t off, const void *data, size_t len)
{
	int fd = open(path, O_WRONLY);

	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, data, len, off), (ssize_t)len);
	close(fd);
}

static void flip_byte(const char *path, off_t off)
{
	int fd = open(path, O_RDWR);
	unsigned char c;

	assert_true(fd >= 0);
	assert_int_equal(pread(fd, &c, 1, off), 1);
	c ^= 0x20;
	assert_int_equal(pwrite(fd, &c, 1, off), 1);
	close(fd);
}

static size_t count_segment_files(const struct fixture *f)
{
	size_t n = 0;
	char path[160];

	for (uint32_t no = 1; no < 1000; no++) {
		seg_path(f, no, path, sizeof(path));
		n += file_size(path) >= 0;
	}
	return n;
}

/* ---- tests ---- */

static void test_crc32c(void **state)
{
	static const char check[] = "123456789";
	uint32_t whole = journal_crc32c(7, "hello, world of journals", 24);

	(void)state;
	assert_int_equal(journal_crc32c(0, check, 9), 0xe3069283u);
	assert_int_equal(journal_crc32c(journal_crc32c(7, "hello, wo", 9), "rld of journals", 15),
			 whole);
	assert_int_equal(journal_crc32c_sw(0, check, 9), 0xe3069283u);
	/* The CPU's instruction (where used) and the tables agree, at every
	 * alignment and length. */
	{
		unsigned char buf[300];

		for (size_t i = 0; i < sizeof(buf); i++)
			buf[i] = (unsigned char)(i * 131 + 17);
		for (size_t off = 0; off < 9; off++)
			for (size_t len = 0; len + off <= sizeof(buf); len += 7)
				assert_int_equal(journal_crc32c((uint32_t)len, buf + off, len),
						 journal_crc32c_sw((uint32_t)len, buf + off, len));
	}
}

static void test_index(void **state)
{
	/* Only the index fields of a spool are used. */
	struct spool *s = calloc(1, sizeof(*s));
	enum { N = 5000 };
	static struct spool_entry *e[N];
	static bool in[N];
	unsigned seed = 12345;

	(void)state;
	assert_non_null(s);
	for (int i = 0; i < N; i++) {
		e[i] = calloc(1, sizeof(*e[i]));
		assert_non_null(e[i]);
		/* Clustered ids, like the clock-based real ones. */
		e[i]->id = ((uint64_t)(i / 64) << 16) + (uint64_t)(i % 64);
	}
	for (int round = 0; round < 200000; round++) {
		int i;

		seed = seed * 1103515245u + 12345u;
		i = (int)((seed >> 8) % N);
		if (in[i]) {
			assert_ptr_equal(spool_index_find(s, e[i]->id), e[i]);
			spool_index_remove(s, e[i]);
			in[i] = false;
		} else {
			assert_null(spool_index_find(s, e[i]->id));
			assert_true(spool_index_reserve(s));
			spool_index_insert(s, e[i]);
			in[i] = true;
		}
	}
	for (int i = 0; i < N; i++)
		assert_ptr_equal(spool_index_find(s, e[i]->id), in[i] ? e[i] : NULL);
	for (int i = 0; i < N; i++)
		free(e[i]);
	free(s->slots);
	free(s);
}

static void test_envelope_codec(void **state)
{
	struct message *m = make_msg(7, 3), *d;
	struct strbuf sb;
	unsigned char *copy;

	(void)state;
	m->rcpts[2].state = RCPT_FAILED;
	strbuf_init(&sb);
	assert_true(journal_env_encode(&sb, m));
	assert_false(strbuf_failed(&sb));
	/* Every truncation is refused, from an exact-size copy (ASan watches
	 * for over-reads). */
	for (size_t len = 0; len < sb.len; len++) {
		copy = malloc(len ? len : 1);
		assert_non_null(copy);
		memcpy(copy, sb.data, len);
		assert_null(journal_env_decode(copy, len));
		assert_int_equal(errno, EINVAL);
		free(copy);
	}
	d = journal_env_decode((const unsigned char *)sb.data, sb.len);
	assert_non_null(d);
	check_msg(d, 3);
	assert_int_equal(d->arrival_ms, m->arrival_ms);
	assert_int_equal(d->rcpts[2].state, RCPT_FAILED);
	message_free(d);
	/* A NUL inside a C-string field (the sender, at offset 16) could never
	 * have been written: refused. */
	sb.data[16 + 2] = '\0';
	assert_null(journal_env_decode((const unsigned char *)sb.data, sb.len));
	strbuf_free(&sb);
	message_free(m);
}

static void test_group_commit(void **state)
{
	struct fixture *f = *state;
	enum { N = 300 };
	static struct ack acks[N];
	struct message *msgs[N];
	struct spool_stats st;
	struct stat dst;

	f->s = open_spool(f);
	assert_int_equal(stat(f->dir, &dst), 0);
	assert_int_equal(dst.st_mode & 0777, 0700);
	ack_counter = 0;
	for (int k = 0; k < N; k++) {
		msgs[k] = make_msg(k, 1 + k % 3);
		submit(f, msgs[k], 1024, &acks[k]);
		if (k > 0)
			assert_true(msgs[k]->id > msgs[k - 1]->id);
	}
	wait_acks(f);
	for (int k = 0; k < N; k++) {
		assert_true(acks[k].done);
		assert_int_equal(acks[k].err, 0);
		assert_int_equal(acks[k].order, (unsigned)k); /* in submission order */
	}
	spool_get_stats(f->s, &st);
	assert_true(st.syncs >= 1);
	assert_true(st.syncs < N);
	assert_true(st.synced_records >= N);
	assert_int_equal(st.segments, 1);
	assert_true(st.bytes > N * 1024);
	print_message("group commit: %d messages in %" PRIu64 " syncs\n", N, st.syncs);
	for (int k = 0; k < N; k++)
		message_free(msgs[k]);
}

static void test_recover_roundtrip(void **state)
{
	struct fixture *f = *state;
	enum { N = 25 };
	struct ack acks[N];
	struct message *msgs[N];
	static struct recovered r;
	struct message *extra;
	struct ack extra_ack;
	uint64_t max_id = 0;

	f->s = open_spool(f);
	for (int k = 0; k < N; k++) {
		msgs[k] = make_msg(k, 1 + k % 4);
		submit(f, msgs[k], k == 7 ? 300000 : k == 3 ? 0 : body_len_of(k), &acks[k]);
		max_id = msgs[k]->id;
	}
	wait_acks(f);
	/* Read back from the running spool, before any restart. */
	check_body(f->s, msgs[5], body_len_of(5));
	reopen(f);
	recover_all(f, &r);
	assert_int_equal(r.n, N);
	for (size_t i = 0; i < r.n; i++) {
		struct message *m = r.m[i];
		int k = msg_k(m);

		assert_int_equal(k, (int)i); /* oldest first */
		assert_int_equal(m->id, msgs[k]->id);
		check_msg(m, 1 + k % 4);
		for (size_t j = 0; j < m->n_rcpts; j++) {
			assert_int_equal(m->rcpts[j].state, RCPT_PENDING);
			assert_int_equal(m->rcpts[j].attempts, msgs[k]->rcpts[j].attempts);
			assert_int_equal(m->rcpts[j].next_try_ms, msgs[k]->rcpts[j].next_try_ms);
		}
		assert_int_equal(m->spool_segment, msgs[k]->spool_segment);
		assert_int_equal(m->spool_offset, msgs[k]->spool_offset);
		assert_int_equal(m->spool_length, msgs[k]->spool_length);
		check_body(f->s, m, k == 7 ? 300000 : k == 3 ? 0 : body_len_of(k));
	}
	/* A second call hands over nothing more. */
	{
		static struct recovered again;

		recover_all(f, &again);
		assert_int_equal(again.n, 0);
	}
	/* Ids keep growing across restarts. */
	extra = make_msg(100, 1);
	submit(f, extra, 10, &extra_ack);
	wait_acks(f);
	assert_true(extra->id > max_id);
	message_free(extra);
	free_recovered(&r);
	for (int k = 0; k < N; k++)
		message_free(msgs[k]);
}

static void test_updates_and_done(void **state)
{
	struct fixture *f = *state;
	struct message *a = make_msg(1, 2), *b = make_msg(2, 2), *c = make_msg(3, 2);
	struct ack acks[3];
	static struct recovered r;
	struct spool_stats st0, st;

	f->s = open_spool(f);
	submit(f, a, 500, &acks[0]);
	submit(f, b, 500, &acks[1]);
	submit(f, c, 500, &acks[2]);
	wait_acks(f);
	spool_get_stats(f->s, &st0);
	assert_int_equal(st0.synced_records, 3);

	a->rcpts[0].state = RCPT_DELIVERED;
	a->rcpts[0].attempts = 1;
	a->rcpts[1].attempts = 2;
	a->rcpts[1].next_try_ms = ARRIVAL_BASE + 999999;
	assert_int_equal(spool_update_rcpt(f->s, a, 0), 0);
	assert_int_equal(spool_update_rcpt(f->s, a, 1), 0);
	assert_int_equal(spool_update_rcpt(f->s, a, 2), EINVAL);
	b->rcpts[0].state = RCPT_DELIVERED;
	b->rcpts[1].state = RCPT_FAILED;
	assert_int_equal(spool_update_rcpt(f->s, b, 0), 0);
	assert_int_equal(spool_update_rcpt(f->s, b, 1), 0);
	spool_release(f->s, b);
	assert_int_equal(spool_update_rcpt(f->s, b, 0), ENOENT);
	assert_null(spool_read_body(f->s, b));
	assert_int_equal(errno, ENOENT);

	/* No new message follows: the lazy sync must still come soon. */
	run_for_ms(f, 400);
	spool_get_stats(f->s, &st);
	assert_int_equal(st.synced_records, 3 + 4 + 1);
	assert_true(st.syncs > st0.syncs);

	reopen(f);
	recover_all(f, &r);
	assert_int_equal(r.n, 2);
	assert_int_equal(r.m[0]->id, a->id);
	assert_int_equal(r.m[1]->id, c->id);
	assert_int_equal(r.m[0]->rcpts[0].state, RCPT_DELIVERED);
	assert_int_equal(r.m[0]->rcpts[0].attempts, 1);
	assert_int_equal(r.m[0]->rcpts[1].state, RCPT_PENDING);
	assert_int_equal(r.m[0]->rcpts[1].attempts, 2);
	assert_int_equal(r.m[0]->rcpts[1].next_try_ms, ARRIVAL_BASE + 999999);
	assert_int_equal(message_pending(r.m[0]), 1);
	assert_int_equal(message_pending(r.m[1]), 2);

	/* Final states without a DONE record: not pending, not recovered. */
	r.m[0]->rcpts[1].state = RCPT_FAILED;
	assert_int_equal(spool_update_rcpt(f->s, r.m[0], 1), 0);
	spool_close(f->s); /* syncs the lazy record */
	f->s = open_spool(f);
	free_recovered(&r);
	recover_all(f, &r);
	assert_int_equal(r.n, 1);
	assert_int_equal(r.m[0]->id, c->id);
	check_body(f->s, r.m[0], 500);
	free_recovered(&r);
	message_free(a);
	message_free(b);
	message_free(c);
}

/* Recipient flags (hold, a notice owed, delay notices sent) survive a
 * restart, and a final recipient whose notice is owed keeps its message. */
static void test_rcpt_flags(void **state)
{
	struct fixture *f = *state;
	struct message *a = make_msg(1, 2), *b = make_msg(2, 1);
	struct ack acks[2];
	static struct recovered r;

	f->s = open_spool(f);
	a->rcpts[1].flags = RCPT_F_HELD; /* in the envelope itself (version 2) */
	submit(f, a, 300, &acks[0]);
	submit(f, b, 300, &acks[1]);
	wait_acks(f);
	a->rcpts[0].flags = (uint8_t)(2u << 4); /* two delay notices sent */
	assert_int_equal(spool_update_rcpt(f->s, a, 0), 0);
	b->rcpts[0].state = RCPT_FAILED;
	b->rcpts[0].flags = RCPT_F_DSN_OWED;
	assert_int_equal(spool_update_rcpt(f->s, b, 0), 0);
	reopen(f);
	recover_all(f, &r);
	assert_int_equal(r.n, 2);
	assert_int_equal(RCPT_DELAYS(r.m[0]->rcpts[0].flags), 2);
	assert_int_equal(r.m[0]->rcpts[1].flags, RCPT_F_HELD);
	/* b has no pending recipient, but its notice is owed: recovered. */
	assert_int_equal(r.m[1]->id, b->id);
	assert_int_equal(r.m[1]->rcpts[0].state, RCPT_FAILED);
	assert_int_equal(r.m[1]->rcpts[0].flags, RCPT_F_DSN_OWED);
	/* Once the notice is queued the mark goes, and so does the message. */
	r.m[1]->rcpts[0].flags = 0;
	assert_int_equal(spool_update_rcpt(f->s, r.m[1], 0), 0);
	spool_close(f->s);
	f->s = open_spool(f);
	free_recovered(&r);
	recover_all(f, &r);
	assert_int_equal(r.n, 1);
	assert_int_equal(r.m[0]->id, a->id);
	free_recovered(&r);
	message_free(a);
	message_free(b);
}

/* The child of the crash test: submit until killed, reporting each id
 * once it is acknowledged. */
struct crash_child {
	struct spool *s;
	int fd;
	int k;
	int outstanding;
};

struct crash_msg {
	struct crash_child *c;
	struct message *m;
};

static void crash_submit(struct crash_child *c);

static void crash_msg_ack(void *arg, int err)
{
	struct crash_msg *cm = arg;
	struct crash_child *c = cm->c;

	if (err != 0)
		_exit(3);
	if (write(c->fd, &cm->m->id, sizeof(cm->m->id)) != sizeof(cm->m->id))
		_exit(4);
	c->outstanding--;
	message_free(cm->m);
	free(cm);
	crash_submit(c);
}

static void crash_submit(struct crash_child *c)
{
	while (c->outstanding < 16 && c->k < 50000) {
		int k = c->k++;
		size_t len = 50 + (size_t)(k * 7919) % 40000;
		struct crash_msg *cm = malloc(sizeof(*cm));
		char *body = make_body(k, len);
		struct iovec iov = { body, len };

		if (cm == NULL)
			_exit(5);
		cm->c = c;
		cm->m = make_msg(k, 1 + k % 3);
		if (spool_submit(c->s, cm->m, &iov, 1, crash_msg_ack, cm) != 0)
			_exit(6);
		free(body);
		c->outstanding++;
	}
}

static void crash_child_main(const char *dir, int fd)
{
	struct event_base *base = event_base_new();
	struct crash_child c = { .fd = fd };
	char err[256];

	c.s = spool_open(base, dir, err, sizeof(err));
	if (c.s == NULL)
		_exit(2);
	crash_submit(&c);
	event_base_dispatch(base);
	_exit(0);
}

static int cmp_id(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static void test_crash_kill9(void **state)
{
	struct fixture *f = *state;
	static struct recovered r;
	static uint64_t acked[50000];
	uint64_t rec_ids[4096];
	size_t total_acked = 0;

	/* Small segments: kills land during rolls too. */
	setenv("TERN_SPOOL_SEGMENT_BYTES", "300000", 1);
	srand((unsigned)time(NULL) ^ (unsigned)getpid());
	for (int round = 0; round < 5; round++) {
		int pfd[2], status;
		size_t n_acked = 0;
		ssize_t got;
		pid_t pid;
		struct ack more[5];
		struct message *more_msgs[5];
		size_t before;

		assert_int_equal(pipe(pfd), 0);
		pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			close(pfd[0]);
			crash_child_main(f->dir, pfd[1]);
		}
		close(pfd[1]);
		/* Kill it at a random moment once it is under way. */
		got = read(pfd[0], &acked[0], sizeof(acked[0]));
		assert_int_equal(got, sizeof(acked[0]));
		n_acked = 1;
		usleep((useconds_t)(rand() % 400) * 1000);
		kill(pid, SIGKILL);
		assert_int_equal(waitpid(pid, &status, 0), pid);
		assert_true(WIFSIGNALED(status));
		while ((got = read(pfd[0], &acked[n_acked], sizeof(acked[0]))) > 0) {
			assert_int_equal(got, sizeof(acked[0]));
			n_acked++;
			assert_true(n_acked < 50000);
		}
		close(pfd[0]);
		total_acked += n_acked;

		f->s = open_spool(f);
		recover_all(f, &r);
		for (size_t i = 0; i < r.n; i++) {
			rec_ids[i] = r.m[i]->id;
			check_msg(r.m[i], 1 + msg_k(r.m[i]) % 3);
			check_body(f->s, r.m[i], 50 + (size_t)(msg_k(r.m[i]) * 7919) % 40000);
		}
		for (size_t i = 0; i < n_acked; i++)
			if (bsearch(&acked[i], rec_ids, r.n, sizeof(rec_ids[0]), cmp_id) == NULL)
				fail_msg("round %d: acknowledged message %016" PRIx64 " was lost",
					 round, acked[i]);
		print_message("crash round %d: %zu acknowledged, %zu recovered\n", round,
			      n_acked, r.n);
		before = r.n;
		free_recovered(&r);
		/* Every message is released, so the next round starts small. */
		for (int k = 0; k < 5; k++) {
			more_msgs[k] = make_msg(60000 + k, 1);
			submit(f, more_msgs[k], 1000, &more[k]);
		}
		wait_acks(f);
		for (int k = 0; k < 5; k++)
			assert_int_equal(more[k].err, 0);
		reopen(f);
		recover_all(f, &r);
		assert_int_equal(r.n, before + 5);
		for (size_t i = 0; i < r.n; i++) {
			for (size_t j = 0; j < r.m[i]->n_rcpts; j++) {
				r.m[i]->rcpts[j].state = RCPT_DELIVERED;
				assert_int_equal(spool_update_rcpt(f->s, r.m[i], j), 0);
			}
			spool_release(f->s, r.m[i]);
		}
		free_recovered(&r);
		for (int k = 0; k < 5; k++)
			message_free(more_msgs[k]);
		spool_close(f->s);
		f->s = NULL;
	}
	assert_true(total_acked > 0);
}

/* Five messages in one segment, closed; returns their locations. */
static void five_messages(struct fixture *f, uint64_t off[5], uint32_t len[5], uint64_t ids[5])
{
	struct message *m[5];
	struct ack acks[5];

	f->s = open_spool(f);
	for (int k = 0; k < 5; k++) {
		m[k] = make_msg(k, 2);
		submit(f, m[k], 1000, &acks[k]);
	}
	wait_acks(f);
	for (int k = 0; k < 5; k++) {
		assert_int_equal(m[k]->spool_segment, 1);
		off[k] = m[k]->spool_offset;
		len[k] = m[k]->spool_length;
		ids[k] = m[k]->id;
		message_free(m[k]);
	}
	spool_close(f->s);
	f->s = NULL;
}

static void test_torn_tail(void **state)
{
	struct fixture *f = *state;
	static struct recovered r;
	uint64_t off[5], ids[5];
	uint32_t len[5];
	char path[160];
	unsigned char junk[300];
	struct journal_rec_hdr h = { .type = JOURNAL_MESSAGE, .len = JOURNAL_PAYLOAD_MAX, .id = 1 };
	struct journal_seg_hdr sh;
	unsigned char hdr[JOURNAL_SEG_HDR_SIZE];
	int fd;

	five_messages(f, off, len, ids);
	seg_path(f, 1, path, sizeof(path));
	assert_int_equal(file_size(path), (off_t)(off[4] + len[4]));

	/* Cut in the middle of the last record. */
	assert_int_equal(truncate(path, (off_t)(off[4] + len[4] / 2)), 0);
	f->s = open_spool(f);
	recover_all(f, &r);
	assert_int_equal(r.n, 4);
	assert_int_equal(r.m[3]->id, ids[3]);
	assert_int_equal(file_size(path), (off_t)off[4]);
	free_recovered(&r);
	spool_close(f->s);
	f->s = NULL;

	/* Garbage after the last record, then a header that checks out but
	 * claims a payload far beyond the file: both cut off, and no huge
	 * allocation on the way. */
	for (size_t i = 0; i < sizeof(junk); i++)
		junk[i] = (unsigned char)(i * 37 + 11);
	journal_put_u32(junk + 10, JOURNAL_REC_MAGIC);
	patch_file(path, (off_t)off[4], junk, sizeof(junk));
	fd = open(path, O_RDONLY);
	assert_int_equal(pread(fd, hdr, sizeof(hdr), 0), (ssize_t)sizeof(hdr));
	close(fd);
	assert_true(journal_seg_hdr_decode(hdr, &sh));
	journal_rec_hdr_encode(junk, sh.salt, &h);
	patch_file(path, (off_t)off[4] + (off_t)sizeof(junk), junk, JOURNAL_REC_HDR_SIZE + 40);
	f->s = open_spool(f);
	recover_all(f, &r);
	assert_int_equal(r.n, 4);
	assert_int_equal(file_size(path), (off_t)off[4]);
	for (size_t i = 0; i < r.n; i++)
		check_body(f->s, r.m[i], 1000);
	free_recovered(&r);
}

static void test_damaged_records(void **state)
{
	struct fixture *f = *state;
	static struct recovered r;
	uint64_t off[5], ids[5];
	uint32_t len[5];
	char path[160];
	struct message *m;
	struct ack ack;

	five_messages(f, off, len, ids);
	seg_path(f, 1, path, sizeof(path));
	/* A flipped byte in the body of message 1, in the length field of
	 * message 3: the CRCs catch both, and the records after each are
	 * found again. */
	flip_byte(path, (off_t)(off[1] + len[1] - 100));
	flip_byte(path, (off_t)(off[3] + 9));
	f->s = open_spool(f);
	recover_all(f, &r);
	assert_int_equal(r.n, 3);
	assert_int_equal(r.m[0]->id, ids[0]);
	assert_int_equal(r.m[1]->id, ids[2]);
	assert_int_equal(r.m[2]->id, ids[4]);
	/* Damage in the middle is not a torn tail: nothing is cut off. */
	assert_int_equal(file_size(path), (off_t)(off[4] + len[4]));
	for (size_t i = 0; i < r.n; i++)
		check_body(f->s, r.m[i], 1000);

	/* Damage found when reading a body back. */
	m = make_msg(9, 1);
	submit(f, m, 5000, &ack);
	wait_acks(f);
	flip_byte(path, (off_t)(m->spool_offset + m->spool_length - 50));
	assert_null(spool_read_body(f->s, m));
	assert_int_equal(errno, EIO);
	message_free(m);
	free_recovered(&r);
}

static void test_write_error_cut_off(void **state)
{
	struct fixture *f = *state;
	static struct recovered r;
	struct message *a = make_msg(1, 1), *b = make_msg(2, 1), *c = make_msg(3, 1);
	struct ack acks[3];
	struct rlimit old, lim;
	char path[160], *big = make_body(2, 65536);
	struct iovec iov = { big, 65536 };
	off_t size;

	f->s = open_spool(f);
	submit(f, a, 1000, &acks[0]);
	wait_acks(f);
	seg_path(f, 1, path, sizeof(path));
	size = file_size(path);
	/* A file size limit makes the write stop half way, as a full disk
	 * would. */
	assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
	signal(SIGXFSZ, SIG_IGN);
	lim = old;
	lim.rlim_cur = (rlim_t)size + 20000;
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
	assert_int_equal(spool_submit(f->s, b, &iov, 1, ack_cb, &acks[1]), EFBIG);
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
	signal(SIGXFSZ, SIG_DFL);
	assert_int_equal(file_size(path), size);
	/* The journal goes on where it was. */
	submit(f, c, 1000, &acks[2]);
	wait_acks(f);
	assert_int_equal(acks[2].err, 0);
	reopen(f);
	recover_all(f, &r);
	assert_int_equal(r.n, 2);
	assert_int_equal(r.m[0]->id, a->id);
	assert_int_equal(r.m[1]->id, c->id);
	check_body(f->s, r.m[1], 1000);
	free_recovered(&r);
	free(big);
	message_free(a);
	message_free(b);
	message_free(c);
}

static void wait_segments(struct fixture *f, uint32_t want)
{
	struct spool_stats st;

	for (int i = 0; i < 100; i++) {
		spool_get_stats(f->s, &st);
		if (st.segments <= want)
			return;
		run_for_ms(f, 30);
	}
	fail_msg("still %" PRIu32 " segments, want %" PRIu32, st.segments, want);
}

static void test_reclaim(void **state)
{
	struct fixture *f = *state;
	enum { N = 40 };
	struct message *m[N];
	struct ack acks[N];
	static struct recovered r;
	struct spool_stats st;

	setenv("TERN_SPOOL_SEGMENT_BYTES", "8192", 1);
	f->s = open_spool(f);
	for (int k = 0; k < N; k++) {
		m[k] = make_msg(k, 2);
		submit(f, m[k], 1500, &acks[k]);
	}
	wait_acks(f);
	spool_get_stats(f->s, &st);
	assert_true(st.segments >= 6);
	assert_int_equal(count_segment_files(f), st.segments);
	/* Released in an order that leaves old segments dead before new ones. */
	for (int k = N - 1; k >= 0; k--) {
		for (size_t j = 0; j < m[k]->n_rcpts; j++) {
			m[k]->rcpts[j].state = RCPT_DELIVERED;
			assert_int_equal(spool_update_rcpt(f->s, m[k], j), 0);
		}
		spool_release(f->s, m[k]);
	}
	wait_segments(f, 1);
	assert_int_equal(count_segment_files(f), 1);
	reopen(f);
	recover_all(f, &r);
	assert_int_equal(r.n, 0);
	for (int k = 0; k < N; k++)
		message_free(m[k]);
}

static void test_compaction(void **state)
{
	struct fixture *f = *state;
	enum { N = 40 };
	struct message *m[N];
	struct ack acks[N];
	static struct recovered r;
	struct spool_stats st;
	char path[160];

	setenv("TERN_SPOOL_SEGMENT_BYTES", "8192", 1);
	f->s = open_spool(f);
	for (int k = 0; k < N; k++) {
		m[k] = make_msg(k, 2);
		submit(f, m[k], 1500, &acks[k]);
	}
	wait_acks(f);
	assert_int_equal(m[0]->spool_segment, 1);
	/* Message 0 is retried for a long time; the rest are delivered. */
	m[0]->rcpts[0].state = RCPT_DELIVERED;
	m[0]->rcpts[0].attempts = 1;
	m[0]->rcpts[1].attempts = 3;
	m[0]->rcpts[1].next_try_ms = ARRIVAL_BASE + 123456;
	assert_int_equal(spool_update_rcpt(f->s, m[0], 0), 0);
	assert_int_equal(spool_update_rcpt(f->s, m[0], 1), 0);
	for (int k = 1; k < N; k++)
		spool_release(f->s, m[k]);
	/* Segment 1 alone would pin every later one. */
	wait_segments(f, 2);
	seg_path(f, 1, path, sizeof(path));
	assert_int_equal(file_size(path), -1);
	spool_get_stats(f->s, &st);
	assert_true(st.bytes < 3 * 8192);
	check_body(f->s, m[0], 1500);
	/* Updates after the move land on the copy. */
	m[0]->rcpts[1].attempts = 4;
	assert_int_equal(spool_update_rcpt(f->s, m[0], 1), 0);

	reopen(f);
	recover_all(f, &r);
	assert_int_equal(r.n, 1);
	assert_int_equal(r.m[0]->id, m[0]->id);
	check_msg(r.m[0], 2);
	assert_int_equal(r.m[0]->rcpts[0].state, RCPT_DELIVERED);
	assert_int_equal(r.m[0]->rcpts[0].attempts, 1);
	assert_int_equal(r.m[0]->rcpts[1].state, RCPT_PENDING);
	assert_int_equal(r.m[0]->rcpts[1].attempts, 4);
	assert_int_equal(r.m[0]->rcpts[1].next_try_ms, ARRIVAL_BASE + 123456);
	check_body(f->s, r.m[0], 1500);
	free_recovered(&r);
	for (int k = 0; k < N; k++)
		message_free(m[k]);
}

static void test_second_open_fails(void **state)
{
	struct fixture *f = *state;
	char err[256];

	f->s = open_spool(f);
	assert_null(spool_open(f->base, f->dir, err, sizeof(err)));
	assert_non_null(strstr(err, "in use"));
	reopen(f); /* the lock goes with the first */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_crc32c),
		cmocka_unit_test(test_index),
		cmocka_unit_test(test_envelope_codec),
		cmocka_unit_test_setup_teardown(test_group_commit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_recover_roundtrip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_updates_and_done, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rcpt_flags, setup, teardown),
		cmocka_unit_test_setup_teardown(test_crash_kill9, setup, teardown),
		cmocka_unit_test_setup_teardown(test_torn_tail, setup, teardown),
		cmocka_unit_test_setup_teardown(test_damaged_records, setup, teardown),
		cmocka_unit_test_setup_teardown(test_write_error_cut_off, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reclaim, setup, teardown),
		cmocka_unit_test_setup_teardown(test_compaction, setup, teardown),
		cmocka_unit_test_setup_teardown(test_second_open_fails, setup, teardown),
	};

	evthread_use_pthreads();
	log_set_level(LOG_ERROR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
