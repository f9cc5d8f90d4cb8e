/*
 * fuzz_journal.c - libFuzzer harness for the spool's on-disk journal:
 * what recovery reads back from disk (src/spool/recover.c) and the codecs
 * of src/spool/journal.c.
 *
 * Each input is used four ways:
 *  1. the decoders of journal.h run on it directly: whatever the segment
 *     header, record header, recipient update or envelope decoder accepts
 *     must encode back to exactly the bytes it came from, and the CRC32C
 *     must agree with its portable version and compose over a split;
 *  2. it is written as is as seg-00000001.log of an empty spool;
 *  3. the same, with the segment header made valid by the journal's own
 *     encoder (number 1, the id floor and salt the input has there) and
 *     the CRCs of the records that follow made right as the record
 *     lengths chain them, so that mutated envelopes, recipient updates and
 *     ids get past the checksums into the replay;
 *  4. the records of 3 split over two segments (seg 1 and seg 2, each
 *     with its own salt) after as many records as the input's own segment
 *     number field says, so that old-segment damage, updates across
 *     segments, compaction and removal are reached.
 *
 * For 2-4 the spool is opened (a fresh event_base each time) and
 * recovered; for 3 and 4 (and for 2 when 3 would write the same bytes)
 * then used, closed and opened again. What must hold:
 * - spool_open and spool_recover succeed whatever the bytes: damage is
 *   logged and skipped or cut off, never fatal, never a crash or a hang;
 * - every recovered message has a pending recipient (or a final one whose
 *   notice is still owed), comes in ascending id order, has a well-formed
 *   envelope that encodes and decodes back to itself, and its body reads
 *   back (its CRC checks again);
 * - recipient updates and releases of recovered messages are accepted, a
 *   new message is accepted, acknowledged and gets an id above every
 *   recovered one, and its body reads back;
 * - after a restart exactly the messages that should be live are
 *   recovered (the new one, and the old ones not released with a pending
 *   recipient left), with the recipient states last recorded.
 * In 4, segments roll at the smallest size the spool allows (1 KiB), so
 * new records also start segments, seal them and reclaim them; 2 and 3
 * keep the default size (and one file: creating files is what costs).
 *
 * The spool lives in a directory made once per process under /tmp (or
 * $TMPDIR: a tmpfs there halves the time of a run) and removed at exit;
 * what a run does not overwrite is removed before it. fdatasync and
 * fsync are stubbed out (below). Log output is off unless TERN_FUZZ_LOG
 * is set.
 *
 * Not covered: read and write errors of the disk, a full disk, a failed
 * sync (the unit tests provoke those), and files other than segments.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "queue/message.h"
#include "spool/journal.h"
#include "spool/spool.h"
#include "util/log.h"
#include "util/strbuf.h"

/* Bounds that keep one run within milliseconds. */
#define MAX_TOUCHED  8   /* recovered messages updated or released per run */
#define MAX_UPDATES  4   /* recipient updates per such message */
#define WAIT_SECONDS 5   /* for an acknowledgement; longer is a hang */

static void fail(int line, const char *what)
{
	fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, line, what);
	abort();
}

#define check(ok) ((ok) ? (void)0 : fail(__LINE__, #ok))

static char root[64];  /* made by mkdtemp, in $TMPDIR or /tmp */
static char dir[96];   /* root/spool */

/* ---- the spool directory ---- */

/*
 * Flushes to the disk are not what is fuzzed, and each would cost a few
 * milliseconds of a run: these stand in for libc's (the spool's calls
 * bind to them, being in the same program). The group commit logic
 * around them runs as it would.
 */
int fdatasync(int fd)
{
	(void)fd;
	return 0;
}

int fsync(int fd)
{
	(void)fd;
	return 0;
}

/*
 * Remove every file but the lock (spool_open would only make it again)
 * and segments 1..keep, which the caller is about to overwrite: on ext4,
 * truncating a file is much cheaper than a new inode.
 */
static void empty_dir(int keep)
{
	DIR *d = opendir(dir);
	struct dirent *e;

	if (d == NULL)
		return;
	while ((e = readdir(d)) != NULL) {
		const char *n = e->d_name;

		if (strcmp(n, ".") == 0 || strcmp(n, "..") == 0 || strcmp(n, "lock") == 0 ||
		    (keep >= 1 && strcmp(n, "seg-00000001.log") == 0) ||
		    (keep >= 2 && strcmp(n, "seg-00000002.log") == 0))
			continue;
		unlinkat(dirfd(d), n, 0);
	}
	closedir(d);
}

static void remove_dirs(void)
{
	char lock[112];

	empty_dir(0);
	snprintf(lock, sizeof(lock), "%s/lock", dir);
	unlink(lock);
	rmdir(dir);
	rmdir(root);
}

static void init(void)
{
	const char *tmp = getenv("TMPDIR");

	snprintf(root, sizeof(root), "%s/tern-fuzz-journal-XXXXXX",
		 tmp != NULL && tmp[0] == '/' && strlen(tmp) < 32 ? tmp : "/tmp");
	check(mkdtemp(root) != NULL);
	snprintf(dir, sizeof(dir), "%s/spool", root);
	check(mkdir(dir, 0700) == 0);
	atexit(remove_dirs);
	if (getenv("TERN_FUZZ_LOG") == NULL)
		log_set_level((enum log_level)(LOG_ERROR + 1));
}

static void write_segment(uint32_t no, const unsigned char *p, size_t len)
{
	char path[160];
	int fd;

	snprintf(path, sizeof(path), "%s/seg-%08u.log", dir, (unsigned)no);
	/* Not O_TRUNC: ext4 flushes a file truncated to nothing when it is
	 * closed, which would cost more than the rest of the run. */
	fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	check(fd >= 0);
	check(pwrite(fd, p, len, 0) == (ssize_t)len && ftruncate(fd, (off_t)len) == 0);
	close(fd);
}

/* ---- little-endian fields of the input ---- */

static uint32_t get_u32_or0(const uint8_t *p, size_t size, size_t off)
{
	return off + 4 <= size ? journal_get_u32(p + off) : 0;
}

static uint64_t get_u64_or0(const uint8_t *p, size_t size, size_t off)
{
	return (uint64_t)get_u32_or0(p, size, off) | (uint64_t)get_u32_or0(p, size, off + 4) << 32;
}

/* ---- 1: the decoders on their own ---- */

static void check_env_roundtrip(const unsigned char *p, size_t len)
{
	struct message *m = journal_env_decode(p, len);
	struct strbuf sb;

	if (m == NULL) {
		check(errno == EINVAL || errno == ENOMEM);
		return;
	}
	strbuf_init(&sb);
	check(journal_env_encode(&sb, m) && !strbuf_failed(&sb));
	check(sb.len == len && memcmp(sb.data, p, len) == 0);
	strbuf_free(&sb);
	message_free(m);
}

static void fuzz_codecs(const uint8_t *data, size_t size)
{
	unsigned char buf[JOURNAL_SEG_HDR_SIZE];
	struct journal_seg_hdr sh;
	struct journal_rec_hdr rh;
	struct journal_rcpt_update u;
	uint32_t salt = get_u32_or0(data, size, 24);
	size_t half = size / 2;

	check(journal_crc32c(salt, data, size) == journal_crc32c_sw(salt, data, size));
	check(journal_crc32c(journal_crc32c(salt, data, half), data + half, size - half) ==
	      journal_crc32c(salt, data, size));
	if (size >= JOURNAL_SEG_HDR_SIZE && journal_seg_hdr_decode(data, &sh)) {
		journal_seg_hdr_encode(buf, &sh);
		check(memcmp(buf, data, JOURNAL_SEG_HDR_SIZE) == 0);
	}
	if (size >= JOURNAL_REC_HDR_SIZE) {
		/* With the salt a segment header would hold, and unsalted. */
		for (int k = 0; k < 2; k++) {
			uint32_t s = k == 0 ? salt : 0;

			if (!journal_rec_hdr_decode(data, s, &rh))
				continue;
			check(rh.type >= JOURNAL_MESSAGE && rh.type <= JOURNAL_DONE);
			journal_rec_hdr_encode(buf, s, &rh);
			check(memcmp(buf, data, JOURNAL_REC_HDR_SIZE) == 0);
		}
	}
	if (size >= JOURNAL_RCPT_PAYLOAD && journal_rcpt_decode(data, &u)) {
		journal_rcpt_encode(buf, &u);
		check(memcmp(buf, data, JOURNAL_RCPT_PAYLOAD) == 0);
	}
	check_env_roundtrip(data, size);
	/* The envelope inside a MESSAGE record, as recovery would see it. */
	if (size >= 28) {
		uint32_t env_len = journal_get_u32(data + 24);

		if (env_len <= size - 28)
			check_env_roundtrip(data + 28, env_len);
	}
}

/* ---- 3 and 4: segments with their checksums made right ---- */

/* Make the CRCs of the records in seg[JOURNAL_SEG_HDR_SIZE..len) right
 * for salt, following each record's length to the next; the walk stops
 * at a record that does not fit (a torn tail stays torn). Returns the
 * number of records and their offsets in offs (at most max). */
static size_t fix_records(unsigned char *seg, size_t len, uint32_t salt, size_t *offs, size_t max)
{
	size_t off = JOURNAL_SEG_HDR_SIZE, n = 0;

	while (len - off >= JOURNAL_REC_OVERHEAD) {
		uint32_t plen = journal_get_u32(seg + off + 8);

		journal_put_u32(seg + off + 20, journal_crc32c(salt, seg + off, 20));
		if (plen > len - off - JOURNAL_REC_OVERHEAD)
			break;
		journal_put_u32(seg + off + JOURNAL_REC_HDR_SIZE + plen,
				journal_crc32c(salt, seg + off, JOURNAL_REC_HDR_SIZE + plen));
		if (n < max)
			offs[n] = off;
		n++;
		off += JOURNAL_REC_OVERHEAD + plen;
	}
	return n;
}

static void put_header(unsigned char *seg, uint32_t no, uint64_t id_floor, uint32_t salt)
{
	struct journal_seg_hdr h = { .no = no, .id_floor = id_floor, .salt = salt };

	journal_seg_hdr_encode(seg, &h);
}

/* ---- one life of a spool: open, recover, use, close, and again ---- */

struct recovered {
	struct message **m;
	size_t n, cap;
};

static void on_recover(void *arg, struct message *m)
{
	struct recovered *r = arg;

	if (r->n == r->cap) {
		r->cap = r->cap ? r->cap * 2 : 16;
		r->m = realloc(r->m, r->cap * sizeof(*r->m));
		check(r->m != NULL);
	}
	r->m[r->n++] = m;
}

static void recovered_free(struct recovered *r)
{
	for (size_t i = 0; i < r->n; i++)
		message_free(r->m[i]);
	free(r->m);
	memset(r, 0, sizeof(*r));
}

struct ack {
	bool done;
	int err;
};

static void on_durable(void *arg, int err)
{
	struct ack *a = arg;

	check(!a->done);
	a->done = true;
	a->err = err;
}

static void check_recovered_msg(const struct message *m)
{
	bool pending = false;

	check(m->sender != NULL && m->sender_lower != NULL &&
	      strlen(m->sender) == strlen(m->sender_lower));
	check(m->ret <= MSG_RET_HDRS && m->body_type <= MSG_BODY_BINARYMIME);
	check(m->spool_segment >= 1 && m->spool_length >= JOURNAL_REC_OVERHEAD + 4);
	check(m->size <= m->spool_length - JOURNAL_REC_OVERHEAD - 4);
	for (size_t i = 0; i < m->n_rcpts; i++) {
		const struct rcpt *r = &m->rcpts[i];

		/* The address is counted, not a C string: a NUL in it decodes. */
		check(r->addr != NULL && r->addr[r->addr_len] == '\0');
		check(r->domain != NULL && r->domain[r->domain_len] == '\0' &&
		      r->domain_len < r->addr_len + (r->domain_len == 0));
		for (size_t k = 0; k < r->domain_len; k++)
			check(r->domain[k] ==
			      (char)tolower((unsigned char)r->addr[r->addr_len - r->domain_len + k]));
		check(r->state <= RCPT_FAILED && (r->notify & ~0xfu) == 0);
		/* Recovery keeps a message for a recipient still to try, or
		 * for a final one whose notice is still owed. */
		pending |= r->state == RCPT_PENDING || (r->flags & RCPT_F_DSN_OWED) != 0;
	}
	check(pending);
}

static void check_body(struct spool *s, const struct message *m, const char *want, size_t len)
{
	struct message_body *b = spool_read_body(s, m);

	check(b != NULL && b->len == m->size);
	if (want != NULL)
		check(b->len == len && memcmp(b->data, want, len) == 0);
	message_body_unref(b);
}

/* The envelope of m, re-encoded, decodes to the same bytes again. */
static void check_env_of(const struct message *m)
{
	struct strbuf sb;

	strbuf_init(&sb);
	check(journal_env_encode(&sb, m) && !strbuf_failed(&sb));
	check_env_roundtrip((const unsigned char *)sb.data, sb.len);
	strbuf_free(&sb);
}

/* What the harness expects the next start to recover of one message. */
struct expect {
	uint64_t id;
	size_t n_rcpts;
	uint8_t *state;
	uint16_t *attempts;
	int64_t *next_try;
	bool live;
};

/* The message with this id in r, which is in ascending id order. */
static const struct message *find_id(const struct recovered *r, uint64_t id)
{
	size_t lo = 0, hi = r->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (r->m[mid]->id == id)
			return r->m[mid];
		if (r->m[mid]->id < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

static void wait_ack(struct event_base *base, const struct ack *a)
{
	time_t start = time(NULL);

	while (!a->done) {
		check(time(NULL) - start < WAIT_SECONDS);
		event_base_loop(base, EVLOOP_ONCE);
	}
}

static struct spool *open_and_recover(struct event_base *base, struct recovered *r)
{
	char err[256] = "";
	struct spool *s = spool_open(base, dir, err, sizeof(err));

	if (s == NULL) {
		fprintf(stderr, "fuzz_journal: spool_open: %s\n", err);
		abort();
	}
	if (spool_recover(s, on_recover, r, err, sizeof(err)) != 0) {
		fprintf(stderr, "fuzz_journal: spool_recover: %s\n", err);
		abort();
	}
	for (size_t i = 0; i < r->n; i++) {
		check_recovered_msg(r->m[i]);
		if (i > 0)
			check(r->m[i]->id > r->m[i - 1]->id);
	}
	/* A second call hands over nothing more. */
	{
		struct recovered none = { 0 };

		check(spool_recover(s, on_recover, &none, err, sizeof(err)) == 0 && none.n == 0);
	}
	return s;
}

static void run_spool(bool full)
{
	static const char body[] = "Subject: fuzz\r\n\r\nA body.\r\n";
	struct iovec iov[2] = { { (void *)body, 10 }, { (void *)(body + 10), sizeof(body) - 11 } };
	struct recovered r = { 0 }, again = { 0 };
	struct expect *ex;
	struct event_base *base;
	struct spool *s;
	struct message *nm;
	struct ack ack = { 0 };
	size_t n_ex;
	uint64_t new_id;

	base = event_base_new();
	check(base != NULL);
	s = open_and_recover(base, &r);
	if (!full) {
		for (size_t i = 0; i < r.n; i++) {
			check_env_of(r.m[i]);
			check_body(s, r.m[i], NULL, 0);
		}
		spool_close(s);
		event_base_free(base);
		recovered_free(&r);
		return;
	}

	/* Read, update, release what came back; note what should survive. */
	n_ex = r.n + 1;
	ex = calloc(n_ex, sizeof(*ex));
	check(ex != NULL);
	for (size_t i = 0; i < r.n; i++) {
		struct message *m = r.m[i];
		struct expect *e = &ex[i];

		check_env_of(m);
		check_body(s, m, NULL, 0);
		if (i < MAX_TOUCHED) {
			for (size_t j = 0; j < m->n_rcpts && j < MAX_UPDATES; j++) {
				struct rcpt *rc = &m->rcpts[j];

				if (rc->state != RCPT_PENDING)
					continue;
				rc->attempts++;
				rc->next_try_ms = (int64_t)((uint64_t)rc->next_try_ms + 1000);
				if ((i + j) % 2 == 0)
					rc->state = (i + j) % 4 == 0 ? RCPT_DELIVERED : RCPT_FAILED;
				check(spool_update_rcpt(s, m, j) == 0);
			}
		}
		e->id = m->id;
		e->n_rcpts = m->n_rcpts;
		e->live = message_pending(m) > 0;
		if (i < MAX_TOUCHED && (i % 3 == 1 || !e->live)) {
			spool_release(s, m);
			e->live = false;
		}
		if (!e->live)
			continue;
		e->state = malloc(m->n_rcpts + 1);
		e->attempts = malloc((m->n_rcpts + 1) * sizeof(*e->attempts));
		e->next_try = malloc((m->n_rcpts + 1) * sizeof(*e->next_try));
		check(e->state != NULL && e->attempts != NULL && e->next_try != NULL);
		for (size_t j = 0; j < m->n_rcpts; j++) {
			e->state[j] = m->rcpts[j].state;
			e->attempts[j] = m->rcpts[j].attempts;
			e->next_try[j] = m->rcpts[j].next_try_ms;
		}
	}

	/* One new message, acknowledged, with an id above every old one. */
	nm = message_new("fuzz@example.org", 16);
	check(nm != NULL);
	nm->arrival_ms = 1700000000000;
	check(message_add_rcpt(nm, "a@example.net", 13) != NULL);
	check(message_add_rcpt(nm, "b@example.com", 13) != NULL);
	check(spool_submit(s, nm, iov, 2, on_durable, &ack) == 0);
	wait_ack(base, &ack);
	check(ack.err == 0);
	if (r.n > 0)
		check(nm->id > r.m[r.n - 1]->id);
	check_body(s, nm, body, sizeof(body) - 1);
	new_id = nm->id;
	ex[r.n] = (struct expect){ .id = new_id, .n_rcpts = 2, .live = true };
	ex[r.n].state = calloc(2, 1);
	ex[r.n].attempts = calloc(2, sizeof(*ex[r.n].attempts));
	ex[r.n].next_try = calloc(2, sizeof(*ex[r.n].next_try));
	check(ex[r.n].state != NULL && ex[r.n].attempts != NULL && ex[r.n].next_try != NULL);
	/* Whatever reclamation the acknowledgement started, let it run. */
	for (int k = 0; k < 4; k++)
		event_base_loop(base, EVLOOP_NONBLOCK);
	spool_close(s);
	event_base_free(base);
	message_free(nm);
	recovered_free(&r);

	/* A restart recovers exactly the live ones, as last recorded. */
	base = event_base_new();
	check(base != NULL);
	s = open_and_recover(base, &again);
	{
		size_t live = 0;

		for (size_t i = 0; i < n_ex; i++) {
			const struct expect *e = &ex[i];
			const struct message *m;

			if (!e->live)
				continue;
			live++;
			m = find_id(&again, e->id);
			check(m != NULL && m->n_rcpts == e->n_rcpts);
			for (size_t j = 0; j < m->n_rcpts; j++)
				check(m->rcpts[j].state == e->state[j] &&
				      m->rcpts[j].attempts == e->attempts[j] &&
				      m->rcpts[j].next_try_ms == e->next_try[j]);
			if (e->id == new_id)
				check_body(s, m, body, sizeof(body) - 1);
			else
				check_body(s, m, NULL, 0);
		}
		check(live == again.n);
	}
	spool_close(s);
	event_base_free(base);
	recovered_free(&again);
	for (size_t i = 0; i < n_ex; i++) {
		free(ex[i].state);
		free(ex[i].attempts);
		free(ex[i].next_try);
	}
	free(ex);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	unsigned char *seg;
	size_t len = size > JOURNAL_SEG_HDR_SIZE ? size : JOURNAL_SEG_HDR_SIZE;
	size_t offs[64], n, k, cut;
	uint32_t salt = get_u32_or0(data, size, 24), split;
	uint64_t floor = get_u64_or0(data, size, 16);
	bool fixed;

	if (root[0] == '\0')
		init();
	fuzz_codecs(data, size);

	/* 3: the header and the record checksums made right. */
	seg = calloc(1, len);
	check(seg != NULL);
	memcpy(seg, data, size);
	put_header(seg, 1, floor, salt);
	n = fix_records(seg, len, salt, offs, sizeof(offs) / sizeof(offs[0]));
	fixed = len != size || memcmp(seg, data, size) != 0;

	/* 2: the bytes as they are. When 3 changes them, replayed and read
	 * back only: what a spool does after that is the business of 3, which
	 * meets damage too, torn tails included. */
	empty_dir(1);
	write_segment(1, data, size);
	run_spool(!fixed);
	if (fixed) {
		empty_dir(1);
		write_segment(1, seg, len);
		run_spool(true);
	}

	/* 4: the same records over two segments, when the input's segment
	 * number field (which 3 does not use) is not 1, as the spool's own are:
	 * records [0, k) in segment 1, k == n leaving segment 2 empty. */
	split = get_u32_or0(data, size, 12);
	if (n > 0 && split != 1) {
		k = split % (n + 1);
		if (k != n && k >= sizeof(offs) / sizeof(offs[0]))
			k = sizeof(offs) / sizeof(offs[0]) - 1;
		cut = k < n ? offs[k] : len;
		empty_dir(2);
		write_segment(1, seg, cut);
		memmove(seg + JOURNAL_SEG_HDR_SIZE, seg + cut, len - cut);
		put_header(seg, 2, floor, salt ^ 0x9e3779b9u);
		fix_records(seg, JOURNAL_SEG_HDR_SIZE + len - cut, salt ^ 0x9e3779b9u, offs, 0);
		write_segment(2, seg, JOURNAL_SEG_HDR_SIZE + len - cut);
		setenv("TERN_SPOOL_SEGMENT_BYTES", "1024", 1);
		run_spool(true);
		unsetenv("TERN_SPOOL_SEGMENT_BYTES");
	}
	free(seg);
	return 0;
}
