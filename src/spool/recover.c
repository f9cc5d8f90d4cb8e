/*
 * recover.c - reading the journal back at start-up.
 *
 * spool_scan (called by spool_open, before the sync thread starts) reads
 * every segment in order, checks each record's CRCs, and replays it into
 * the index: a MESSAGE record adds a message, or replaces an older copy of
 * it left by compaction; RCPT updates a recipient; DONE drops the message.
 * What is left are the live messages with their latest states, which
 * spool_recover hands over.
 *
 * Damage:
 * - A bad record that nothing good follows, in the last segment, is a
 *   write cut short by a crash. Nothing from there on was acknowledged
 *   (a sync covers whole records, and acknowledges only after it), so the
 *   segment is truncated there and appending resumes.
 * - A bad record followed by good ones, in any segment, is damage: it is
 *   logged and reading resumes at the next offset where a record's header,
 *   bounds and CRC all check out. The same goes for a bad tail of an
 *   older segment, which is logged and left alone.
 * - A segment whose header is unreadable cannot be checked at all: it is
 *   renamed *.corrupt and left to the administrator, unless it is the last
 *   one and too short to hold a record (a crash while creating it), which
 *   is removed.
 * - A read error is not damage: spool_open fails rather than truncate
 *   or skip what it could not read.
 *
 * Lengths are checked against the record bounds and the file size before
 * anything is read or allocated; the read buffer never grows past one
 * envelope (JOURNAL_ENV_MAX) plus a header.
 */
#include "spool/internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/log.h"

#define READ_CHUNK (1u << 20)

struct reader {
	int fd;
	uint64_t size;      /* of the file */
	unsigned char *buf;
	size_t cap;
	uint64_t at;        /* file offset of buf[0] */
	size_t len;         /* bytes valid in buf */
	int err;            /* a read error (not the end of the file) */
};

/* Bytes [off, off + n) of the file, or NULL when they lie (partly) past
 * its end or cannot be read (r->err). */
static const unsigned char *reader_get(struct reader *r, uint64_t off, size_t n)
{
	size_t want, got = 0;

	if (off > r->size || n > r->size - off)
		return NULL;
	if (off >= r->at && off - r->at <= r->len && n <= r->len - (off - r->at))
		return r->buf + (off - r->at);
	want = n > READ_CHUNK ? n : READ_CHUNK;
	if (want > r->size - off)
		want = (size_t)(r->size - off);
	if (want > r->cap) {
		unsigned char *buf = realloc(r->buf, want);

		if (buf == NULL) {
			r->err = ENOMEM;
			return NULL;
		}
		r->buf = buf;
		r->cap = want;
	}
	r->len = 0;
	while (got < want) {
		ssize_t k = pread(r->fd, r->buf + got, want - got, (off_t)(off + got));

		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0) {
			r->err = errno;
			return NULL;
		}
		if (k == 0)
			break;
		got += (size_t)k;
	}
	r->at = off;
	r->len = got;
	if (got < n) {
		r->err = EIO; /* the file shrank under us */
		return NULL;
	}
	return r->buf;
}

enum check { CHECK_OK, CHECK_BAD, CHECK_IOERR };

/* Is there a whole, intact record at off? Sets *h and *rec_len if so. */
static enum check check_record(struct reader *r, uint32_t salt, uint64_t off,
			       struct journal_rec_hdr *h, uint32_t *rec_len)
{
	const unsigned char *p = reader_get(r, off, JOURNAL_REC_HDR_SIZE);
	uint64_t pos, end;
	uint32_t crc;

	if (p == NULL)
		return r->err != 0 ? CHECK_IOERR : CHECK_BAD;
	/* Ids are time-based and far below SPOOL_ID_MAX: a record above it is
	 * forged or corrupt, and taking it would make new ids wrap. */
	if (!journal_rec_hdr_decode(p, salt, h) || h->id >= SPOOL_ID_MAX)
		return CHECK_BAD;
	/* h->len is bounded by JOURNAL_PAYLOAD_MAX: no overflow below. */
	if ((uint64_t)JOURNAL_REC_OVERHEAD + h->len > r->size - off)
		return CHECK_BAD;
	crc = journal_crc32c(salt, p, JOURNAL_REC_HDR_SIZE);
	pos = off + JOURNAL_REC_HDR_SIZE;
	end = pos + h->len;
	if (h->type == JOURNAL_MESSAGE) {
		p = reader_get(r, pos, 4);
		if (p == NULL)
			return CHECK_IOERR;
		if (journal_get_u32(p) > JOURNAL_ENV_MAX || journal_get_u32(p) > h->len - 4)
			return CHECK_BAD;
	}
	while (pos < end) {
		size_t n = end - pos > READ_CHUNK ? READ_CHUNK : (size_t)(end - pos);

		p = reader_get(r, pos, n);
		if (p == NULL)
			return CHECK_IOERR;
		crc = journal_crc32c(crc, p, n);
		pos += n;
	}
	p = reader_get(r, end, JOURNAL_REC_TRAILER);
	if (p == NULL)
		return CHECK_IOERR;
	if (journal_get_u32(p) != crc)
		return CHECK_BAD;
	*rec_len = (uint32_t)(JOURNAL_REC_OVERHEAD + h->len);
	return CHECK_OK;
}

/* The offset of the next intact record after a bad one at from, or the
 * file size when there is none; UINT64_MAX on a read error. */
static uint64_t resync(struct reader *r, uint32_t salt, uint64_t from)
{
	struct journal_rec_hdr h;
	uint32_t rec_len;

	for (uint64_t pos = from + 1; r->size - pos >= JOURNAL_REC_OVERHEAD; pos++) {
		const unsigned char *p = reader_get(r, pos, 4);

		if (p == NULL)
			return UINT64_MAX;
		if (journal_get_u32(p) != JOURNAL_REC_MAGIC)
			continue;
		switch (check_record(r, salt, pos, &h, &rec_len)) {
		case CHECK_OK:
			return pos;
		case CHECK_IOERR:
			return UINT64_MAX;
		case CHECK_BAD:
			break;
		}
	}
	return r->size;
}

static void drop_entry(struct spool *s, struct spool_entry *e)
{
	spool_entry_unplace(s, e);
	spool_index_remove(s, e);
	message_free(e->recovered);
	free(e);
}

/* Replay one intact record. 0, or ENOMEM/EIO (fatal). */
static int apply(struct spool *s, struct spool_seg *seg, struct reader *r, uint64_t off,
		 const struct journal_rec_hdr *h, uint32_t rec_len)
{
	const unsigned char *p;
	struct journal_rcpt_update u;
	struct spool_entry *e, *old;
	struct message *m;
	uint32_t env_len;

	switch (h->type) {
	case JOURNAL_MESSAGE:
		p = reader_get(r, off + JOURNAL_REC_HDR_SIZE, 4);
		if (p == NULL)
			return EIO;
		env_len = journal_get_u32(p);
		p = reader_get(r, off + JOURNAL_REC_HDR_SIZE + 4, env_len);
		if (p == NULL)
			return r->err != 0 ? r->err : EIO;
		m = journal_env_decode(p, env_len);
		if (m == NULL) {
			if (errno == ENOMEM)
				return ENOMEM;
			log_error("spool %s: segment %" PRIu32 " at %" PRIu64 ": message %016" PRIx64
				  " has an envelope this version cannot read; skipped",
				  s->dir, seg->no, off, h->id);
			return 0;
		}
		m->id = h->id;
		m->size = rec_len - JOURNAL_REC_OVERHEAD - 4 - (uint64_t)env_len;
		e = spool_entry_new(m);
		if (e == NULL || !spool_index_reserve(s)) {
			message_free(m);
			free(e);
			return ENOMEM;
		}
		e->recovered = m;
		/* A later copy (compaction) supersedes an earlier one. */
		old = spool_index_find(s, h->id);
		if (old != NULL)
			drop_entry(s, old);
		spool_entry_place(e, seg, off, rec_len, env_len);
		spool_index_insert(s, e);
		return 0;
	case JOURNAL_RCPT:
		p = reader_get(r, off + JOURNAL_REC_HDR_SIZE, JOURNAL_RCPT_PAYLOAD);
		if (p == NULL)
			return EIO;
		e = spool_index_find(s, h->id);
		/* An update for a message whose segment is gone is moot. */
		if (e == NULL)
			return 0;
		if (!journal_rcpt_decode(p, &u) || u.index >= e->n_rcpts) {
			log_error("spool %s: segment %" PRIu32 " at %" PRIu64 ": bad recipient update "
				  "for message %016" PRIx64 "; skipped", s->dir, seg->no, off, h->id);
			return 0;
		}
		e->rcpts[u.index].state = u.state;
		e->rcpts[u.index].flags = u.flags;
		e->rcpts[u.index].attempts = u.attempts;
		e->rcpts[u.index].next_try_ms = u.next_try_ms;
		if (e->recovered != NULL) {
			e->recovered->rcpts[u.index].state = u.state;
			e->recovered->rcpts[u.index].flags = u.flags;
			e->recovered->rcpts[u.index].attempts = u.attempts;
			e->recovered->rcpts[u.index].next_try_ms = u.next_try_ms;
		}
		return 0;
	case JOURNAL_DONE:
		e = spool_index_find(s, h->id);
		if (e != NULL)
			drop_entry(s, e);
		return 0;
	default:
		return 0; /* journal_rec_hdr_decode admits no other type */
	}
}

static int truncate_tail(struct spool *s, struct spool_seg *seg, uint64_t at, uint64_t size)
{
	log_warn("spool %s: segment %" PRIu32 ": cutting off %" PRIu64 " bytes of an unfinished "
		 "write at %" PRIu64 " (a crash while writing; none of it was acknowledged)",
		 s->dir, seg->no, size - at, at);
	if (ftruncate(seg->fd, (off_t)at) != 0 || fdatasync(seg->fd) != 0)
		return errno;
	return 0;
}

/* Replay the records of seg (size bytes on disk). */
static int scan_segment(struct spool *s, struct spool_seg *seg, uint64_t size, bool last,
			uint64_t *max_id)
{
	struct reader r = { .fd = seg->fd, .size = size };
	struct journal_rec_hdr h;
	uint64_t off = JOURNAL_SEG_HDR_SIZE, next;
	uint32_t rec_len;
	int err = 0;

	while (err == 0 && off < size) {
		switch (check_record(&r, seg->salt, off, &h, &rec_len)) {
		case CHECK_OK:
			err = apply(s, seg, &r, off, &h, rec_len);
			if (h.id > *max_id)
				*max_id = h.id;
			off += rec_len;
			continue;
		case CHECK_IOERR:
			err = r.err != 0 ? r.err : EIO;
			continue;
		case CHECK_BAD:
			break;
		}
		next = resync(&r, seg->salt, off);
		if (next == UINT64_MAX) {
			err = r.err != 0 ? r.err : EIO;
		} else if (next == size && last) {
			err = truncate_tail(s, seg, off, size);
			size = off;
		} else {
			log_error("spool %s: segment %" PRIu32 ": %" PRIu64 " bytes at %" PRIu64
				  " are damaged; records in them are lost", s->dir, seg->no,
				  next - off, off);
			off = next;
		}
	}
	free(r.buf);
	seg->size = size;
	return err;
}

static bool parse_seg_name(const char *name, uint32_t *no)
{
	unsigned long long n = 0;
	const char *p = name + 4;
	size_t digits = 0;

	if (strncmp(name, "seg-", 4) != 0)
		return false;
	for (; *p >= '0' && *p <= '9' && digits < 10; p++, digits++)
		n = n * 10 + (unsigned)(*p - '0');
	if (digits == 0 || strcmp(p, ".log") != 0 || n == 0 || n > UINT32_MAX)
		return false;
	*no = (uint32_t)n;
	return true;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

/* The segment numbers in the directory, ascending. */
static int list_segments(struct spool *s, uint32_t **out, size_t *n_out)
{
	uint32_t *nos = NULL, no;
	size_t n = 0, cap = 0;
	struct dirent *d;
	int fd = dup(s->dirfd), err = 0;
	DIR *dir;

	if (fd < 0)
		return errno;
	dir = fdopendir(fd);
	if (dir == NULL) {
		err = errno;
		close(fd);
		return err;
	}
	rewinddir(dir);
	while ((errno = 0, d = readdir(dir)) != NULL) {
		if (!parse_seg_name(d->d_name, &no))
			continue;
		if (n == cap) {
			size_t ncap = cap != 0 ? cap * 2 : 16;
			uint32_t *p = realloc(nos, ncap * sizeof(*p));

			if (p == NULL) {
				err = ENOMEM;
				break;
			}
			nos = p;
			cap = ncap;
		}
		nos[n++] = no;
	}
	if (err == 0 && errno != 0)
		err = errno;
	closedir(dir);
	if (err != 0) {
		free(nos);
		return err;
	}
	if (n > 0)
		qsort(nos, n, sizeof(*nos), cmp_u32);
	*out = nos;
	*n_out = n;
	return 0;
}

/* Open segment no and check its header. 0 and *out (NULL when the file
 * was set aside), or an errno. */
static int load_segment(struct spool *s, uint32_t no, bool last, struct spool_seg **out,
			uint64_t *size, uint64_t *id_floor)
{
	unsigned char buf[JOURNAL_SEG_HDR_SIZE];
	struct journal_seg_hdr h;
	char name[32], aside[48];
	struct stat st;
	ssize_t n;
	int fd, err;

	*out = NULL;
	spool_seg_name(name, sizeof(name), no);
	fd = openat(s->dirfd, name, O_RDWR | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) != 0) {
		err = errno;
		if (fd >= 0)
			close(fd);
		return err;
	}
	n = st.st_size >= (off_t)sizeof(buf) ? pread(fd, buf, sizeof(buf), 0) : 0;
	if (n < 0) {
		err = errno;
		close(fd);
		return err;
	}
	if (n == (ssize_t)sizeof(buf) && journal_seg_hdr_decode(buf, &h) && h.no == no &&
	    h.id_floor < SPOOL_ID_MAX) {
		*out = spool_seg_new(no, fd, h.salt, (uint64_t)st.st_size);
		if (*out == NULL) {
			close(fd);
			return ENOMEM;
		}
		(*out)->sealed = true;
		*size = (uint64_t)st.st_size;
		*id_floor = h.id_floor;
		return 0;
	}
	close(fd);
	if (last && st.st_size <= (off_t)JOURNAL_SEG_HDR_SIZE) {
		log_warn("spool %s: removing %s: created but never written (a crash?)", s->dir, name);
		return unlinkat(s->dirfd, name, 0) == 0 ? 0 : errno;
	}
	snprintf(aside, sizeof(aside), "%s.corrupt", name);
	log_error("spool %s: %s has a damaged header and cannot be read; renamed %s: the "
		  "messages in it are NOT recovered", s->dir, name, aside);
	return renameat(s->dirfd, name, s->dirfd, aside) == 0 ? 0 : errno;
}

/* A final recipient whose notice is owed keeps its message too: the
 * queue sends the notice after the restart. */
static bool has_pending(const struct spool_entry *e)
{
	for (uint32_t i = 0; i < e->n_rcpts; i++)
		if (e->rcpts[i].state == RCPT_PENDING || (e->rcpts[i].flags & RCPT_F_DSN_OWED))
			return true;
	return false;
}

/* Messages with no pending recipient are done, DONE record or not. */
static void drop_finished(struct spool *s)
{
	/* Backward-shift removal only moves entries towards slot i (or from
	 * the wrapped start, already seen, to the end): none is skipped. */
	for (size_t i = 0; i < s->slot_cap;) {
		struct spool_entry *e = s->slots[i];

		if (e != NULL && !has_pending(e))
			drop_entry(s, e);
		else
			i++;
	}
}

int spool_scan(struct spool *s, char *err, size_t errlen)
{
	uint32_t *nos = NULL, last_no = 0;
	uint64_t max_id = 0, floor = 0, *sizes;
	size_t n = 0;
	int e;

	e = list_segments(s, &nos, &n);
	if (e != 0) {
		snprintf(err, errlen, "cannot list %s: %s", s->dir, strerror(e));
		return -1;
	}
	sizes = calloc(n != 0 ? n : 1, sizeof(*sizes));
	if (sizes == NULL) {
		free(nos);
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	/* Headers first, so that "last" below means the last readable one. */
	for (size_t i = 0; i < n; i++) {
		struct spool_seg *seg;
		uint64_t id_floor = 0;

		last_no = nos[i];
		e = load_segment(s, nos[i], i + 1 == n, &seg, &sizes[s->n_segs], &id_floor);
		if (e == 0 && seg != NULL && !spool_segs_reserve(s)) {
			spool_seg_free(seg);
			e = ENOMEM;
		}
		if (e != 0) {
			snprintf(err, errlen, "segment %" PRIu32 " in %s: %s", nos[i], s->dir,
				 strerror(e));
			break;
		}
		if (seg == NULL)
			continue;
		s->segs[s->n_segs++] = seg;
		if (id_floor > floor)
			floor = id_floor;
	}
	free(nos);
	for (size_t i = 0; e == 0 && i < s->n_segs; i++) {
		e = scan_segment(s, s->segs[i], sizes[i], i + 1 == s->n_segs, &max_id);
		if (e != 0)
			snprintf(err, errlen, "reading segment %" PRIu32 " in %s: %s",
				 s->segs[i]->no, s->dir, strerror(e));
	}
	free(sizes);
	if (e != 0)
		return -1;
	drop_finished(s);
	s->next_id = max_id + 1 > floor ? max_id + 1 : floor;
	if (s->n_segs == 0) {
		struct spool_seg *seg;

		e = spool_segs_reserve(s) ? spool_seg_create(s, last_no + 1, &seg) : ENOMEM;
		if (e != 0) {
			snprintf(err, errlen, "cannot create a segment in %s: %s", s->dir,
				 strerror(e));
			return -1;
		}
		s->segs[s->n_segs++] = seg;
	}
	s->segs[s->n_segs - 1]->sealed = false;
	/* Segments created, removed or renamed above, and truncations, are on
	 * disk before anything new is appended. */
	if (fdatasync(s->segs[s->n_segs - 1]->fd) != 0 || fsync(s->dirfd) != 0) {
		snprintf(err, errlen, "cannot sync %s: %s", s->dir, strerror(errno));
		return -1;
	}
	if (s->n_entries > 0)
		log_info("spool %s: %zu segment(s), %zu message(s) to deliver", s->dir, s->n_segs,
			 s->n_entries);
	return 0;
}

static int cmp_entry_id(const void *a, const void *b)
{
	const struct spool_entry *x = *(struct spool_entry *const *)a;
	const struct spool_entry *y = *(struct spool_entry *const *)b;

	return x->id < y->id ? -1 : x->id > y->id;
}

int spool_recover(struct spool *s, spool_recover_cb cb, void *arg, char *err, size_t errlen)
{
	struct spool_entry **list;
	size_t n = 0;

	for (size_t i = 0; i < s->slot_cap; i++)
		n += s->slots[i] != NULL && s->slots[i]->recovered != NULL;
	if (n == 0)
		return 0;
	list = malloc(n * sizeof(*list));
	if (list == NULL) {
		snprintf(err, errlen, "out of memory listing %zu recovered messages", n);
		return -1;
	}
	n = 0;
	for (size_t i = 0; i < s->slot_cap; i++)
		if (s->slots[i] != NULL && s->slots[i]->recovered != NULL)
			list[n++] = s->slots[i];
	/* Oldest first, as they arrived. */
	qsort(list, n, sizeof(*list), cmp_entry_id);
	for (size_t i = 0; i < n; i++) {
		struct message *m = list[i]->recovered;

		list[i]->recovered = NULL;
		cb(arg, m);
	}
	free(list);
	return 0;
}
