/*
 * reclaim.c - giving disk space back: removing dead segments, compacting
 * nearly dead ones.
 *
 * Removal. A segment file may go once no live message has its latest
 * record in it AND every older segment is gone. The second condition is
 * not optional: a segment's RCPT and DONE records may speak for messages
 * stored in older segments, and removing the newer file first would bring
 * those messages (or delivered recipients) back at the next start. So
 * files go oldest first, one at a time, through the sync thread, each
 * removal made durable (directory fsync) before the next; and only once
 * the records that made the segment dead (DONE, compacted copies) are
 * durable themselves.
 *
 * Compaction keeps a few long-lived messages from pinning old files. The
 * live messages of a sealed segment are appended again to the current
 * segment (a MESSAGE record with the same id and the recipient states of
 * now); the old segment is then dead and goes by the rule above. At
 * replay a later MESSAGE record for an id supersedes an earlier one, so a
 * crash at any point leaves a correct journal (at worst both copies).
 * A sealed segment is compacted when its live data is under a quarter of
 * its size, or when it is the oldest live segment and the dead segments
 * it holds back are at least twice its live data. At rest, then, every
 * sealed live segment is at least a quarter live and the dead files held
 * back are under twice the oldest one's live data: the journal stays
 * within about four times the live data plus two segments.
 *
 * Copies are made a bounded amount at a time from a zero-delay timer, so
 * the event loop never stalls long on a big segment. A segment whose copy
 * fails (a damaged record, a full disk) is left alone until the next
 * start, and says so in the log.
 */
#include "spool/internal.h"

#include <errno.h>
#include <event2/event.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util/log.h"

#define COMPACT_STEP_BYTES (1u << 20)

/* Ask the sync thread to remove the oldest segment if it may go. */
static void try_unlink(struct spool *s)
{
	struct spool_seg *t;

	if (s->unlinking || s->n_segs < 2)
		return;
	t = s->segs[0];
	if (!t->sealed || t->live != 0 || t->unlink_failed || t == s->compacting ||
	    s->durable_seq < t->need_seq)
		return;
	s->unlinking = true;
	spool_sync_unlink(s, t);
}

void spool_reclaim_unlinked(struct spool *s, struct spool_seg *seg, int err)
{
	s->unlinking = false;
	if (err != 0) {
		seg->unlink_failed = true;
		log_error("spool %s: cannot remove segment %" PRIu32 ": %s; it stays, and so do "
			  "the dead segments after it, until the next start",
			  s->dir, seg->no, strerror(err));
		return;
	}
	/* Only ever the oldest. */
	memmove(s->segs, s->segs + 1, (s->n_segs - 1) * sizeof(*s->segs));
	s->n_segs--;
	log_debug("spool %s: removed segment %" PRIu32, s->dir, seg->no);
	spool_seg_free(seg);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static void compact_end(struct spool *s)
{
	free(s->compact_ids);
	s->compact_ids = NULL;
	s->n_compact = s->compact_pos = 0;
	s->compacting = NULL;
}

static void compact_start(struct spool *s, struct spool_seg *victim)
{
	static const struct timeval now = { 0, 0 };
	size_t n = 0;

	s->compact_ids = malloc(victim->live * sizeof(*s->compact_ids));
	if (s->compact_ids == NULL)
		return; /* tried again at the next release or sync */
	for (size_t i = 0; i < s->slot_cap && n < victim->live; i++)
		if (s->slots[i] != NULL && s->slots[i]->seg == victim)
			s->compact_ids[n++] = s->slots[i]->id;
	/* Ids grow with arrival, so this reads the segment front to back. */
	qsort(s->compact_ids, n, sizeof(*s->compact_ids), cmp_u64);
	s->n_compact = n;
	s->compact_pos = 0;
	s->compacting = victim;
	log_info("spool %s: compacting segment %" PRIu32 ": %" PRIu32 " live message(s), %" PRIu64
		 " of %" PRIu64 " bytes", s->dir, victim->no, victim->live, victim->live_bytes,
		 victim->size);
	evtimer_add(s->compact_ev, &now);
}

/* Which segment to compact, if any: see the header comment. */
static struct spool_seg *pick_victim(const struct spool *s)
{
	struct spool_seg *oldest = NULL;
	uint64_t held_back = 0;

	for (size_t i = 0; i + 1 < s->n_segs; i++) {
		struct spool_seg *seg = s->segs[i];

		if (seg->live == 0) {
			if (oldest != NULL)
				held_back += seg->size;
			continue;
		}
		if (oldest == NULL)
			oldest = seg;
		if (!seg->no_compact && seg->live_bytes < seg->size / 4)
			return seg;
	}
	if (oldest != NULL && !oldest->no_compact && held_back > 0 &&
	    held_back / 2 >= oldest->live_bytes)
		return oldest;
	return NULL;
}

void spool_reclaim(struct spool *s)
{
	struct spool_seg *victim;

	if (s->closing)
		return;
	try_unlink(s);
	if (s->compacting != NULL || s->failed != 0)
		return;
	victim = pick_victim(s);
	if (victim != NULL)
		compact_start(s, victim);
}

/* Append e's message again, with its recipient states of now, to the
 * current segment. 0 or an errno. */
static int compact_copy(struct spool *s, struct spool_entry *e)
{
	size_t head_len = JOURNAL_REC_HDR_SIZE + 4 + (size_t)e->env_len;
	size_t body_len = e->rec_len - JOURNAL_REC_OVERHEAD - 4 - (size_t)e->env_len;
	unsigned char *head = malloc(head_len), *body = malloc(body_len != 0 ? body_len : 1);
	unsigned char trailer[JOURNAL_REC_TRAILER];
	struct journal_rec_hdr h = { .type = JOURNAL_MESSAGE, .id = e->id };
	struct message *m = NULL;
	struct spool_seg *seg;
	struct iovec iov[3];
	uint64_t rec_len, off, seq;
	uint32_t crc, env_len;
	int err = ENOMEM;

	if (head == NULL || body == NULL)
		goto out;
	err = spool_record_read(s, e, head, body);
	if (err != 0)
		goto out;
	m = journal_env_decode(head + JOURNAL_REC_HDR_SIZE + 4, e->env_len);
	if (m == NULL) {
		err = errno;
		goto out;
	}
	if (m->n_rcpts != e->n_rcpts) {
		err = EIO;
		goto out;
	}
	for (uint32_t i = 0; i < e->n_rcpts; i++) {
		m->rcpts[i].state = e->rcpts[i].state;
		m->rcpts[i].flags = e->rcpts[i].flags;
		m->rcpts[i].attempts = e->rcpts[i].attempts;
		m->rcpts[i].next_try_ms = e->rcpts[i].next_try_ms;
	}
	if (strbuf_failed(&s->enc)) {
		strbuf_free(&s->enc);
		strbuf_init(&s->enc);
	}
	strbuf_reset(&s->enc);
	strbuf_append(&s->enc, (const char *)head, JOURNAL_REC_HDR_SIZE + 4);
	err = !journal_env_encode(&s->enc, m) ? EFBIG : strbuf_failed(&s->enc) ? ENOMEM : 0;
	if (err != 0)
		goto out;
	env_len = (uint32_t)(s->enc.len - JOURNAL_REC_HDR_SIZE - 4);
	rec_len = JOURNAL_REC_OVERHEAD + 4 + env_len + body_len;
	seg = spool_seg_for(s, rec_len, &err);
	if (seg == NULL)
		goto out;
	h.len = (uint32_t)(4 + env_len + body_len);
	journal_rec_hdr_encode((unsigned char *)s->enc.data, seg->salt, &h);
	journal_put_u32((unsigned char *)s->enc.data + JOURNAL_REC_HDR_SIZE, env_len);
	crc = journal_crc32c(seg->salt, s->enc.data, s->enc.len);
	journal_put_u32(trailer, journal_crc32c(crc, body, body_len));
	iov[0] = (struct iovec){ s->enc.data, s->enc.len };
	iov[1] = (struct iovec){ body, body_len };
	iov[2] = (struct iovec){ trailer, sizeof(trailer) };
	err = spool_write(s, seg, iov, 3, rec_len, false, &off, &seq);
	if (err != 0)
		goto out;
	spool_entry_unplace(s, e);
	spool_entry_place(e, seg, off, (uint32_t)rec_len, env_len);
out:
	message_free(m);
	free(head);
	free(body);
	return err;
}

void spool_reclaim_step(evutil_socket_t fd, short what, void *arg)
{
	static const struct timeval now = { 0, 0 };
	struct spool *s = arg;
	uint64_t copied = 0;

	(void)fd;
	(void)what;
	while (s->compact_pos < s->n_compact && copied < COMPACT_STEP_BYTES) {
		struct spool_entry *e = spool_index_find(s, s->compact_ids[s->compact_pos++]);
		int err;

		/* Released (or already moved) since the list was made. */
		if (e == NULL || e->seg != s->compacting)
			continue;
		copied += e->rec_len;
		err = s->failed != 0 ? s->failed : compact_copy(s, e);
		if (err != 0) {
			log_error("spool %s: cannot compact segment %" PRIu32 " (message %016" PRIx64
				  "): %s; it stays until the next start",
				  s->dir, s->compacting->no, e->id, strerror(err));
			s->compacting->no_compact = true;
			compact_end(s);
			return;
		}
	}
	if (s->compact_pos < s->n_compact) {
		evtimer_add(s->compact_ev, &now);
		return;
	}
	compact_end(s);
	/* The copies must be durable before the old file goes: try_unlink
	 * waits for that, and the next group commit (at most
	 * SPOOL_LAZY_SYNC_MS away) calls back here. */
	spool_reclaim(s);
}

void spool_reclaim_stop(struct spool *s)
{
	if (s->compact_ev != NULL)
		event_del(s->compact_ev);
	compact_end(s);
}
