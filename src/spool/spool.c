/*
 * spool.c - the spool's public face (open, close, new messages, recipient
 * updates, releases, body reads) and what it stands on: the index of live
 * messages and the segment files records are appended to.
 *
 * Invariants:
 * - Records are appended only at the tail of the current (last) segment,
 *   only by the loop thread. A write that fails is cut off again with
 *   ftruncate, so the journal always ends with a whole record; if even
 *   that fails, the spool refuses every further record.
 * - A submit's callback runs only once the sync thread reports a group
 *   commit that covers its record; callbacks run in submission order.
 * - The index holds exactly the messages not yet released; each one
 *   counts toward the live total of the segment holding its latest
 *   MESSAGE record (compaction may move it). msg->spool_* says where a
 *   message was first stored; the index, not those fields, is what reads
 *   use.
 * - After a failed fdatasync (see sync.c) every waiting callback fails
 *   with its errno and new records are refused: durability can no longer
 *   be promised, so nothing claims it.
 *
 * spool_close makes everything durable and then runs the callbacks still
 * waiting (the server frees the queue only after closing the spool).
 *
 * Environment: TERN_SPOOL_SEGMENT_BYTES, read at spool_open, sets the size
 * at which segments roll (default 64 MiB, at least 1024). Tests use it to
 * exercise rolling, reclamation and compaction with small files.
 *
 * It does not schedule deliveries or interpret recipient states beyond
 * "pending or not": the queue decides, the spool records.
 */
#include "spool/internal.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "util/clock.h"
#include "util/log.h"

#define STACK_IOVS 16
#define SEGMENT_BYTES_MIN 1024u

static const char zeros[JOURNAL_REC_HDR_SIZE + 4];

static void spool_fail(struct spool *s, int err, const char *what)
{
	if (s->failed != 0)
		return;
	s->failed = err != 0 ? err : EIO;
	log_error("spool %s: %s: %s; refusing new messages from now on, since their "
		  "durability can no longer be promised",
		  s->dir, what, strerror(s->failed));
}

/* ---- the index of live messages ---- */

static size_t slot_hash(uint64_t id, size_t cap)
{
	/* The low bits of ids are a counter and the high bits a clock: mix. */
	id ^= id >> 33;
	id *= 0xff51afd7ed558ccdull;
	id ^= id >> 33;
	return (size_t)id & (cap - 1);
}

struct spool_entry *spool_index_find(const struct spool *s, uint64_t id)
{
	if (s->slot_cap == 0)
		return NULL;
	for (size_t i = slot_hash(id, s->slot_cap);; i = (i + 1) & (s->slot_cap - 1)) {
		struct spool_entry *e = s->slots[i];

		if (e == NULL || e->id == id)
			return e;
	}
}

static void index_put(struct spool_entry **slots, size_t cap, struct spool_entry *e)
{
	size_t i = slot_hash(e->id, cap);

	while (slots[i] != NULL)
		i = (i + 1) & (cap - 1);
	slots[i] = e;
}

/* Room for one more entry (load factor at most 1/2), so that inserting
 * after a record is written cannot fail. */
bool spool_index_reserve(struct spool *s)
{
	struct spool_entry **slots;
	size_t cap;

	if ((s->n_entries + 1) * 2 <= s->slot_cap)
		return true;
	cap = s->slot_cap != 0 ? s->slot_cap * 2 : 64;
	if (cap > SIZE_MAX / sizeof(*slots))
		return false;
	slots = calloc(cap, sizeof(*slots));
	if (slots == NULL)
		return false;
	for (size_t i = 0; i < s->slot_cap; i++)
		if (s->slots[i] != NULL)
			index_put(slots, cap, s->slots[i]);
	free(s->slots);
	s->slots = slots;
	s->slot_cap = cap;
	return true;
}

void spool_index_insert(struct spool *s, struct spool_entry *e)
{
	index_put(s->slots, s->slot_cap, e);
	s->n_entries++;
}

/* Backward-shift deletion: no tombstones, so probes stay short. */
void spool_index_remove(struct spool *s, struct spool_entry *e)
{
	size_t mask = s->slot_cap - 1, hole, j;

	hole = slot_hash(e->id, s->slot_cap);
	while (s->slots[hole] != e)
		hole = (hole + 1) & mask;
	s->slots[hole] = NULL;
	s->n_entries--;
	for (j = (hole + 1) & mask; s->slots[j] != NULL; j = (j + 1) & mask) {
		size_t home = slot_hash(s->slots[j]->id, s->slot_cap);

		/* Leave it if its home lies cyclically in (hole, j]. */
		if (hole <= j ? (home > hole && home <= j) : (home > hole || home <= j))
			continue;
		s->slots[hole] = s->slots[j];
		s->slots[j] = NULL;
		hole = j;
	}
}

struct spool_entry *spool_entry_new(const struct message *m)
{
	struct spool_entry *e;

	if (m->n_rcpts > (SIZE_MAX - sizeof(*e)) / sizeof(e->rcpts[0]) || m->n_rcpts > UINT32_MAX)
		return NULL;
	e = calloc(1, sizeof(*e) + m->n_rcpts * sizeof(e->rcpts[0]));
	if (e == NULL)
		return NULL;
	e->id = m->id;
	e->n_rcpts = (uint32_t)m->n_rcpts;
	for (size_t i = 0; i < m->n_rcpts; i++) {
		e->rcpts[i].state = m->rcpts[i].state;
		e->rcpts[i].flags = m->rcpts[i].flags;
		e->rcpts[i].attempts = m->rcpts[i].attempts;
		e->rcpts[i].next_try_ms = m->rcpts[i].next_try_ms;
	}
	return e;
}

void spool_entry_place(struct spool_entry *e, struct spool_seg *seg, uint64_t off,
		       uint32_t rec_len, uint32_t env_len)
{
	e->seg = seg;
	e->off = off;
	e->rec_len = rec_len;
	e->env_len = env_len;
	seg->live++;
	seg->live_bytes += rec_len;
	if (e->recovered != NULL) {
		e->recovered->spool_segment = seg->no;
		e->recovered->spool_offset = off;
		e->recovered->spool_length = rec_len;
	}
}

void spool_entry_unplace(struct spool *s, struct spool_entry *e)
{
	struct spool_seg *seg = e->seg;

	seg->live--;
	seg->live_bytes -= e->rec_len;
	/* Whatever made it dead (a DONE, a compacted copy) is written by now
	 * and must be durable before the file goes. */
	if (seg->live == 0 && seg->need_seq < s->written_seq)
		seg->need_seq = s->written_seq;
	e->seg = NULL;
}

static void entry_free(struct spool_entry *e)
{
	message_free(e->recovered);
	free(e);
}

/* ---- segments ---- */

void spool_seg_name(char *buf, size_t len, uint32_t no)
{
	snprintf(buf, len, "seg-%08" PRIu32 ".log", no);
}

struct spool_seg *spool_seg_new(uint32_t no, int fd, uint32_t salt, uint64_t size)
{
	struct spool_seg *seg = calloc(1, sizeof(*seg));

	if (seg == NULL)
		return NULL;
	seg->no = no;
	seg->fd = fd;
	seg->salt = salt;
	seg->size = size;
	return seg;
}

void spool_seg_free(struct spool_seg *seg)
{
	if (seg == NULL)
		return;
	if (seg->fd >= 0)
		close(seg->fd);
	free(seg);
}

/* Write (or read) every byte of iov at off, across short transfers and
 * EINTR. Returns 0 or an errno; EIO when a read finds the file shorter
 * than the index says. */
static int pv_all(bool write, int fd, struct iovec *iov, int cnt, off_t off)
{
	for (;;) {
		ssize_t n;

		while (cnt > 0 && iov->iov_len == 0) {
			iov++;
			cnt--;
		}
		if (cnt == 0)
			return 0;
		if (cnt > IOV_MAX)
			n = write ? pwritev(fd, iov, IOV_MAX, off) : preadv(fd, iov, IOV_MAX, off);
		else
			n = write ? pwritev(fd, iov, cnt, off) : preadv(fd, iov, cnt, off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return errno;
		if (n == 0)
			return EIO;
		off += n;
		for (size_t left = (size_t)n; left > 0;) {
			size_t k = left < iov->iov_len ? left : iov->iov_len;

			iov->iov_base = (char *)iov->iov_base + k;
			iov->iov_len -= k;
			left -= k;
			if (iov->iov_len == 0) {
				iov++;
				cnt--;
			}
		}
	}
}

bool spool_segs_reserve(struct spool *s)
{
	struct spool_seg **segs;
	size_t cap;

	if (s->n_segs < s->cap_segs)
		return true;
	cap = s->cap_segs != 0 ? s->cap_segs * 2 : 16;
	segs = realloc(s->segs, cap * sizeof(*segs));
	if (segs == NULL)
		return false;
	s->segs = segs;
	s->cap_segs = cap;
	return true;
}

static uint32_t random_salt(void)
{
	uint32_t salt;
	struct timespec ts;

	if (getrandom(&salt, sizeof(salt), GRND_NONBLOCK) == (ssize_t)sizeof(salt))
		return salt;
	/* Only guards against forged records in bodies; a weak salt is no
	 * worse than none. */
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint32_t)ts.tv_nsec ^ (uint32_t)ts.tv_sec ^ (uint32_t)getpid() * 2654435761u;
}

/* Create segment file no with its header (not yet durable: the sync thread
 * fsyncs the directory with the next group commit). */
int spool_seg_create(struct spool *s, uint32_t no, struct spool_seg **out)
{
	struct journal_seg_hdr h = { .no = no, .id_floor = s->next_id, .salt = random_salt() };
	unsigned char buf[JOURNAL_SEG_HDR_SIZE];
	struct spool_seg *seg;
	char name[32];
	int fd, err;

	spool_seg_name(name, sizeof(name), no);
	journal_seg_hdr_encode(buf, &h);
	seg = spool_seg_new(no, -1, h.salt, JOURNAL_SEG_HDR_SIZE);
	if (seg == NULL)
		return ENOMEM;
	fd = openat(s->dirfd, name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		err = errno;
		free(seg);
		return err;
	}
	struct iovec hdr = { buf, sizeof(buf) };

	err = pv_all(true, fd, &hdr, 1, 0);
	if (err != 0) {
		unlinkat(s->dirfd, name, 0);
		close(fd);
		free(seg);
		return err;
	}
	seg->fd = fd;
	*out = seg;
	return 0;
}

/* The segment a record of rec_len bytes goes to: the current one, or a new
 * one when it would grow past seg_max (a record bigger than that gets a
 * segment of its own). NULL with *err on failure. */
struct spool_seg *spool_seg_for(struct spool *s, uint64_t rec_len, int *err)
{
	struct spool_seg *cur = s->segs[s->n_segs - 1], *seg;

	if (cur->size == JOURNAL_SEG_HDR_SIZE ||
	    (cur->size <= s->seg_max && rec_len <= s->seg_max - cur->size))
		return cur;
	if (cur->no == UINT32_MAX) {
		*err = EFBIG;
		return NULL;
	}
	if (!spool_segs_reserve(s)) {
		*err = ENOMEM;
		return NULL;
	}
	*err = spool_seg_create(s, cur->no + 1, &seg);
	if (*err != 0) {
		log_warn("spool %s: cannot start segment %" PRIu32 ": %s", s->dir, cur->no + 1,
			 strerror(*err));
		return NULL;
	}
	cur->sealed = true;
	s->segs[s->n_segs++] = seg;
	spool_sync_created(s);
	return seg;
}

/* Append one whole record (iov, len bytes) at the tail of seg, the current
 * segment, and hand it to the sync thread: urgent when a callback waits
 * for it. iov is consumed. */
int spool_write(struct spool *s, struct spool_seg *seg, struct iovec *iov, int iovcnt,
		uint64_t len, bool urgent, uint64_t *off, uint64_t *seq)
{
	uint64_t at = seg->size;
	int err = pv_all(true, seg->fd, iov, iovcnt, (off_t)at);

	if (err != 0) {
		/* Cut the partial record off, so the journal ends whole. */
		if (ftruncate(seg->fd, (off_t)at) != 0)
			spool_fail(s, errno, "cannot cut off a failed write");
		return err;
	}
	seg->size += len;
	*off = at;
	*seq = spool_sync_commit(s, seg, urgent);
	seg->need_seq = *seq;
	return 0;
}

/* Read e's MESSAGE record back and check it: head receives the record
 * header, the envelope length and the envelope (JOURNAL_REC_HDR_SIZE + 4 +
 * env_len bytes), body the body. 0 or an errno (EIO when it fails its
 * check). */
int spool_record_read(const struct spool *s, const struct spool_entry *e,
		      unsigned char *head, void *body)
{
	size_t head_len = JOURNAL_REC_HDR_SIZE + 4 + (size_t)e->env_len;
	size_t body_len = e->rec_len - JOURNAL_REC_OVERHEAD - 4 - (size_t)e->env_len;
	unsigned char trailer[JOURNAL_REC_TRAILER];
	struct iovec iov[3] = {
		{ head, head_len }, { body, body_len }, { trailer, sizeof(trailer) },
	};
	struct journal_rec_hdr h;
	uint32_t crc;
	int err = pv_all(false, e->seg->fd, iov, 3, (off_t)e->off);

	if (err != 0) {
		log_error("spool %s: message %016" PRIx64 ": cannot read segment %" PRIu32
			  " at %" PRIu64 ": %s", s->dir, e->id, e->seg->no, e->off, strerror(err));
		return err;
	}
	crc = journal_crc32c(e->seg->salt, head, head_len);
	crc = journal_crc32c(crc, body, body_len);
	if (!journal_rec_hdr_decode(head, e->seg->salt, &h) || h.type != JOURNAL_MESSAGE ||
	    h.id != e->id || h.len != e->rec_len - JOURNAL_REC_OVERHEAD ||
	    journal_get_u32(head + JOURNAL_REC_HDR_SIZE) != e->env_len ||
	    journal_get_u32(trailer) != crc) {
		log_error("spool %s: message %016" PRIx64 ": its record in segment %" PRIu32
			  " at %" PRIu64 " fails its check: the disk has damaged it",
			  s->dir, e->id, e->seg->no, e->off);
		return EIO;
	}
	return 0;
}

/* ---- waiters ---- */

static bool waiters_reserve(struct spool *s)
{
	struct spool_waiter *w;
	size_t cap;

	if (s->w_tail < s->w_cap)
		return true;
	if (s->w_head >= s->w_cap / 2 && s->w_head > 0) {
		memmove(s->waiters, s->waiters + s->w_head,
			(s->w_tail - s->w_head) * sizeof(*s->waiters));
		s->w_tail -= s->w_head;
		s->w_head = 0;
		return true;
	}
	cap = s->w_cap != 0 ? s->w_cap * 2 : 64;
	w = realloc(s->waiters, cap * sizeof(*w));
	if (w == NULL)
		return false;
	s->waiters = w;
	s->w_cap = cap;
	return true;
}

/* Take in what the sync thread reported and run the callbacks it allows.
 * Callbacks may submit again: each waiter is popped before its call. */
static void spool_drain(struct spool *s)
{
	struct spool_sync *y = &s->sync;
	struct spool_seg *unlinked = NULL;
	int err, unlink_err = 0;

	pthread_mutex_lock(&y->mu);
	s->durable_seq = y->durable_seq;
	s->syncs = y->syncs;
	err = y->err;
	if (y->unlink_done) {
		unlinked = y->unlink_req;
		unlink_err = y->unlink_err;
		y->unlink_req = NULL;
		y->unlink_done = false;
	}
	pthread_mutex_unlock(&y->mu);

	if (err != 0)
		spool_fail(s, err, "fdatasync of the journal failed; every message not yet "
			   "acknowledged is refused");
	if (unlinked != NULL)
		spool_reclaim_unlinked(s, unlinked, unlink_err);
	while (s->w_head < s->w_tail) {
		struct spool_waiter w = s->waiters[s->w_head];

		if (w.seq > s->durable_seq && err == 0)
			break;
		s->w_head++;
		w.cb(w.arg, w.seq <= s->durable_seq ? 0 : err);
	}
	if (s->w_head == s->w_tail)
		s->w_head = s->w_tail = 0;
}

static void spool_on_sync(evutil_socket_t fd, short what, void *arg)
{
	struct spool *s = arg;
	uint64_t n;

	(void)what;
	/* Non-blocking: EAGAIN only means another wake-up got here first. */
	if (read(fd, &n, sizeof(n)) < 0 && errno != EAGAIN)
		log_warn("spool %s: reading the sync eventfd: %s", s->dir, strerror(errno));
	spool_drain(s);
	spool_reclaim(s);
}

/* ---- open and close ---- */

/* mkdir -p; the last component is the spool itself, private to tern. The
 * parent's entry for a new spool directory is made durable too. */
static int make_dir(const char *dir)
{
	size_t len = strlen(dir);
	char *path = malloc(len + 1);
	int err = 0;

	if (path == NULL)
		return ENOMEM;
	memcpy(path, dir, len + 1);
	for (size_t i = 1; i < len && err == 0; i++) {
		if (path[i] != '/')
			continue;
		path[i] = '\0';
		if (mkdir(path, 0755) != 0 && errno != EEXIST)
			err = errno;
		path[i] = '/';
	}
	if (err == 0 && mkdir(path, 0700) == 0) {
		char *slash = strrchr(path, '/');
		int pfd;

		if (slash == path)
			slash[1] = '\0';
		else if (slash != NULL)
			slash[0] = '\0';
		pfd = open(slash != NULL ? path : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (pfd >= 0) {
			if (fsync(pfd) != 0)
				err = errno;
			close(pfd);
		}
	} else if (err == 0 && errno != EEXIST) {
		err = errno;
	}
	free(path);
	return err;
}

static uint64_t segment_bytes_setting(void)
{
	const char *v = getenv("TERN_SPOOL_SEGMENT_BYTES");
	unsigned long long n;
	char *end;

	if (v == NULL || *v == '\0')
		return SPOOL_SEGMENT_BYTES;
	errno = 0;
	n = strtoull(v, &end, 10);
	if (errno != 0 || *end != '\0' || n < SEGMENT_BYTES_MIN || n > (1ull << 40)) {
		log_warn("TERN_SPOOL_SEGMENT_BYTES=%s is not a size from %u to 2^40; using %u",
			 v, SEGMENT_BYTES_MIN, SPOOL_SEGMENT_BYTES);
		return SPOOL_SEGMENT_BYTES;
	}
	return n;
}

static void spool_free(struct spool *s)
{
	spool_reclaim_stop(s);
	if (s->compact_ev != NULL)
		event_free(s->compact_ev);
	if (s->efd_ev != NULL)
		event_free(s->efd_ev);
	if (s->efd >= 0)
		close(s->efd);
	for (size_t i = 0; i < s->slot_cap; i++)
		if (s->slots[i] != NULL)
			entry_free(s->slots[i]);
	free(s->slots);
	for (size_t i = 0; i < s->n_segs; i++)
		spool_seg_free(s->segs[i]);
	free(s->segs);
	free(s->waiters);
	strbuf_free(&s->enc);
	if (s->lockfd >= 0)
		close(s->lockfd); /* releases the lock */
	if (s->dirfd >= 0)
		close(s->dirfd);
	pthread_cond_destroy(&s->sync.cond);
	pthread_mutex_destroy(&s->sync.mu);
	free(s->dir);
	free(s);
}

static struct spool *open_fail(struct spool *s, char *err, size_t errlen, const char *fmt,
			       const char *what, int e)
{
	snprintf(err, errlen, fmt, what, strerror(e));
	spool_free(s);
	return NULL;
}

struct spool *spool_open(struct event_base *base, const char *dir, char *err, size_t errlen)
{
	pthread_condattr_t ca;
	struct spool *s = calloc(1, sizeof(*s));
	int e;

	if (s == NULL || (s->dir = strdup(dir)) == NULL) {
		free(s);
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	s->base = base;
	s->dirfd = s->lockfd = s->efd = -1;
	s->seg_max = segment_bytes_setting();
	strbuf_init(&s->enc);
	pthread_mutex_init(&s->sync.mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&s->sync.cond, &ca);
	pthread_condattr_destroy(&ca);

	e = make_dir(dir);
	if (e != 0)
		return open_fail(s, err, errlen, "cannot create %s: %s", dir, e);
	s->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (s->dirfd < 0)
		return open_fail(s, err, errlen, "cannot open %s: %s", dir, errno);
	s->lockfd = openat(s->dirfd, "lock", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (s->lockfd < 0)
		return open_fail(s, err, errlen, "cannot open %s/lock: %s", dir, errno);
	if (flock(s->lockfd, LOCK_EX | LOCK_NB) != 0) {
		if (errno == EWOULDBLOCK)
			return open_fail(s, err, errlen,
					 "%s is in use by another tern (its lock file is held): %s",
					 dir, EWOULDBLOCK);
		return open_fail(s, err, errlen, "cannot lock %s/lock: %s", dir, errno);
	}
	if (spool_scan(s, err, errlen) != 0) {
		spool_free(s);
		return NULL;
	}
	s->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (s->efd < 0)
		return open_fail(s, err, errlen, "%s: eventfd: %s", dir, errno);
	s->efd_ev = event_new(base, s->efd, EV_READ | EV_PERSIST, spool_on_sync, s);
	s->compact_ev = evtimer_new(base, spool_reclaim_step, s);
	if (s->efd_ev == NULL || s->compact_ev == NULL || event_add(s->efd_ev, NULL) != 0)
		return open_fail(s, err, errlen, "%s: event setup: %s", dir, ENOMEM);
	e = spool_sync_start(s);
	if (e != 0)
		return open_fail(s, err, errlen, "%s: cannot start the sync thread: %s", dir, e);
	spool_reclaim(s);
	return s;
}

void spool_close(struct spool *s)
{
	if (s == NULL)
		return;
	spool_reclaim_stop(s);
	s->closing = true;
	spool_sync_stop(s);
	/* The thread synced everything before it stopped, or failed: either
	 * way this calls every waiter still there. */
	spool_drain(s);
	spool_free(s);
}

/* ---- records ---- */

static uint64_t take_id(const struct spool *s)
{
	uint64_t clock_id = (uint64_t)clock_wall_ms() << 16;

	return s->next_id > clock_id ? s->next_id : clock_id;
}

static int refuse(const struct spool *s)
{
	if (s->failed != 0)
		return s->failed;
	return s->closing ? ESHUTDOWN : 0;
}

/* Start s->enc with room for the record header and envelope length, then
 * the envelope of m. 0, EFBIG or ENOMEM. */
static int encode_head(struct spool *s, const struct message *m, uint32_t *env_len)
{
	size_t len;

	if (strbuf_failed(&s->enc)) {
		strbuf_free(&s->enc);
		strbuf_init(&s->enc);
	}
	strbuf_reset(&s->enc);
	strbuf_append(&s->enc, zeros, sizeof(zeros));
	if (!journal_env_encode(&s->enc, m))
		return EFBIG;
	if (strbuf_failed(&s->enc))
		return ENOMEM;
	len = s->enc.len - sizeof(zeros);
	if (len > JOURNAL_ENV_MAX)
		return EFBIG;
	*env_len = (uint32_t)len;
	return 0;
}

/* Fill in the header of the MESSAGE record in s->enc for seg. */
static void finish_head(struct spool *s, struct spool_seg *seg, uint64_t id, uint32_t env_len,
			uint64_t body_len)
{
	struct journal_rec_hdr h = {
		.type = JOURNAL_MESSAGE, .len = (uint32_t)(4 + env_len + body_len), .id = id,
	};
	unsigned char *p = (unsigned char *)s->enc.data;

	journal_rec_hdr_encode(p, seg->salt, &h);
	journal_put_u32(p + JOURNAL_REC_HDR_SIZE, env_len);
}

int spool_submit(struct spool *s, struct message *msg, const struct iovec *body, int iovcnt,
		 spool_durable_cb cb, void *arg)
{
	struct iovec stack_iov[STACK_IOVS], *iov = stack_iov;
	unsigned char trailer[JOURNAL_REC_TRAILER];
	struct spool_entry *e;
	struct spool_seg *seg;
	uint64_t body_len = 0, rec_len, id, off, seq;
	uint32_t env_len, crc;
	int err = refuse(s);

	if (err != 0)
		return err;
	if (iovcnt < 0 || (iovcnt > 0 && body == NULL) || iovcnt > INT_MAX - 2)
		return EINVAL;
	for (int i = 0; i < iovcnt; i++) {
		if (body[i].iov_len > JOURNAL_BODY_MAX - body_len)
			return EFBIG;
		body_len += body[i].iov_len;
	}
	err = encode_head(s, msg, &env_len);
	if (err != 0)
		return err;
	rec_len = JOURNAL_REC_OVERHEAD + 4 + env_len + body_len;
	if ((size_t)iovcnt + 2 > STACK_IOVS) {
		iov = calloc((size_t)iovcnt + 2, sizeof(*iov));
		if (iov == NULL)
			return ENOMEM;
	}
	e = spool_entry_new(msg);
	if (e == NULL || !spool_index_reserve(s) || !waiters_reserve(s)) {
		err = ENOMEM;
		goto out;
	}
	seg = spool_seg_for(s, rec_len, &err);
	if (seg == NULL)
		goto out;
	id = take_id(s);
	finish_head(s, seg, id, env_len, body_len);
	crc = journal_crc32c(seg->salt, s->enc.data, s->enc.len);
	iov[0].iov_base = s->enc.data;
	iov[0].iov_len = s->enc.len;
	for (int i = 0; i < iovcnt; i++) {
		crc = journal_crc32c(crc, body[i].iov_base, body[i].iov_len);
		iov[1 + i] = body[i];
	}
	journal_put_u32(trailer, crc);
	iov[1 + iovcnt].iov_base = trailer;
	iov[1 + iovcnt].iov_len = sizeof(trailer);
	err = spool_write(s, seg, iov, iovcnt + 2, rec_len, true, &off, &seq);
	if (err != 0)
		goto out;

	s->next_id = id + 1;
	msg->id = id;
	msg->size = body_len;
	msg->spool_segment = seg->no;
	msg->spool_offset = off;
	msg->spool_length = (uint32_t)rec_len;
	e->id = id;
	spool_entry_place(e, seg, off, (uint32_t)rec_len, env_len);
	spool_index_insert(s, e);
	e = NULL;
	s->waiters[s->w_tail++] = (struct spool_waiter){ .seq = seq, .cb = cb, .arg = arg };
out:
	free(e);
	if (iov != stack_iov)
		free(iov);
	return err;
}

/* Append a small record (RCPT or DONE) for id; durable with the next
 * group commit. */
static int write_small(struct spool *s, uint8_t type, uint64_t id, const unsigned char *payload,
		       uint32_t len)
{
	unsigned char buf[JOURNAL_REC_OVERHEAD + JOURNAL_RCPT_PAYLOAD];
	struct journal_rec_hdr h = { .type = type, .len = len, .id = id };
	uint64_t rec_len = JOURNAL_REC_OVERHEAD + len, off, seq;
	struct spool_seg *seg;
	struct iovec iov;
	int err;

	seg = spool_seg_for(s, rec_len, &err);
	if (seg == NULL)
		return err;
	journal_rec_hdr_encode(buf, seg->salt, &h);
	if (len > 0)
		memcpy(buf + JOURNAL_REC_HDR_SIZE, payload, len);
	journal_put_u32(buf + JOURNAL_REC_HDR_SIZE + len,
			journal_crc32c(seg->salt, buf, JOURNAL_REC_HDR_SIZE + len));
	iov.iov_base = buf;
	iov.iov_len = (size_t)rec_len;
	return spool_write(s, seg, &iov, 1, rec_len, false, &off, &seq);
}

int spool_update_rcpt(struct spool *s, const struct message *msg, size_t i)
{
	unsigned char payload[JOURNAL_RCPT_PAYLOAD];
	struct journal_rcpt_update u;
	struct spool_entry *e;
	const struct rcpt *r;
	int err = refuse(s);

	if (err != 0)
		return err;
	e = spool_index_find(s, msg->id);
	if (e == NULL)
		return ENOENT;
	if (i >= e->n_rcpts || i >= msg->n_rcpts || msg->rcpts[i].state > RCPT_FAILED)
		return EINVAL;
	r = &msg->rcpts[i];
	u = (struct journal_rcpt_update){
		.index = (uint32_t)i, .state = r->state, .flags = r->flags, .attempts = r->attempts,
		.next_try_ms = r->next_try_ms,
	};
	journal_rcpt_encode(payload, &u);
	err = write_small(s, JOURNAL_RCPT, msg->id, payload, sizeof(payload));
	if (err != 0)
		return err;
	e->rcpts[i].state = r->state;
	e->rcpts[i].flags = r->flags;
	e->rcpts[i].attempts = r->attempts;
	e->rcpts[i].next_try_ms = r->next_try_ms;
	return 0;
}

void spool_release(struct spool *s, const struct message *msg)
{
	struct spool_entry *e = spool_index_find(s, msg->id);
	int err;

	if (e == NULL) {
		log_warn("spool %s: release of message %016" PRIx64 ", which it does not hold",
			 s->dir, msg->id);
		return;
	}
	err = refuse(s);
	if (err == 0)
		err = write_small(s, JOURNAL_DONE, msg->id, NULL, 0);
	/* Its recipients' final states are recorded already (or their
	 * failures logged); without DONE, a restart finds nothing pending. */
	if (err != 0)
		log_warn("spool %s: message %016" PRIx64 ": cannot record its release: %s",
			 s->dir, msg->id, strerror(err));
	spool_entry_unplace(s, e);
	spool_index_remove(s, e);
	entry_free(e);
	spool_reclaim(s);
}

struct message_body *spool_read_body(struct spool *s, const struct message *msg)
{
	struct spool_entry *e = spool_index_find(s, msg->id);
	struct message_body *b;
	unsigned char *head;
	int err;

	if (e == NULL) {
		errno = ENOENT;
		return NULL;
	}
	head = malloc(JOURNAL_REC_HDR_SIZE + 4 + (size_t)e->env_len);
	b = message_body_new(e->rec_len - JOURNAL_REC_OVERHEAD - 4 - (size_t)e->env_len);
	if (head == NULL || b == NULL) {
		free(head);
		message_body_unref(b);
		errno = ENOMEM;
		return NULL;
	}
	err = spool_record_read(s, e, head, b->data);
	free(head);
	if (err != 0) {
		message_body_unref(b);
		errno = err;
		return NULL;
	}
	return b;
}

void spool_get_stats(const struct spool *s, struct spool_stats *st)
{
	memset(st, 0, sizeof(*st));
	for (size_t i = 0; i < s->n_segs; i++)
		st->bytes += s->segs[i]->size;
	st->segments = (uint32_t)s->n_segs;
	st->syncs = s->syncs;
	st->synced_records = s->durable_seq;
}
