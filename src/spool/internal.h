/*
 * internal.h - what the files of the spool share and nothing else sees:
 * the layout of struct spool, its segments and its index of live messages.
 *
 * Threads: everything here belongs to the event loop thread except
 * struct spool_sync's fields marked "guarded by mu", which the sync thread
 * shares, and a segment's fd, which the sync thread reads (it never
 * changes while the segment exists).
 */
#ifndef TERN_SPOOL_INTERNAL_H
#define TERN_SPOOL_INTERNAL_H

#include <event2/util.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "spool/journal.h"
#include "spool/spool.h"
#include "util/strbuf.h"

#define SPOOL_SEGMENT_BYTES  (64u << 20)
/* Unsynced RCPT and DONE records (and compaction copies) wait at most
 * this long for a group commit that a new message would trigger. */
#define SPOOL_LAZY_SYNC_MS   100
/* Ids are (ms since the epoch << 16) + n: far below this for millennia. */
#define SPOOL_ID_MAX         (UINT64_C(1) << 63)

struct spool_seg {
	uint32_t no;
	int fd;
	uint32_t salt;
	uint64_t size;       /* bytes written so far: where the next record goes */
	uint32_t live;       /* messages whose latest MESSAGE record is here */
	uint64_t live_bytes; /* the bytes of those records */
	/* Written sequence number that must be durable before the file may go:
	 * its own last record, and whatever made its messages dead (their
	 * compacted copies in particular). */
	uint64_t need_seq;
	bool sealed;         /* not the current segment: nothing is appended */
	bool no_compact;     /* compaction failed once: leave it as it is */
	bool unlink_failed;
	bool dirty;                   /* guarded by mu: on the sync list */
	struct spool_seg *dirty_next; /* guarded by mu */
	struct spool_seg *sync_next;  /* the sync thread's own */
};

struct spool_rcpt_state {
	int64_t next_try_ms;
	uint16_t attempts;
	uint8_t state;
	uint8_t flags;
};

/* A live message: released messages have none. The recipient states are
 * what the journal says, so that compaction can rewrite the envelope. */
struct spool_entry {
	uint64_t id;
	struct spool_seg *seg;       /* where its latest MESSAGE record is */
	uint64_t off;
	uint32_t rec_len;            /* whole record, header and CRC included */
	uint32_t env_len;
	struct message *recovered;   /* from the journal, until spool_recover hands it over */
	uint32_t n_rcpts;
	struct spool_rcpt_state rcpts[];
};

struct spool_waiter {
	uint64_t seq;
	spool_durable_cb cb;
	void *arg;
};

struct spool_sync {
	pthread_mutex_t mu;
	pthread_cond_t cond;
	pthread_t thread;
	bool started;
	/* Records are numbered 1, 2, ... in the order they are written. */
	uint64_t written_seq;      /* guarded by mu */
	uint64_t urgent_seq;       /* guarded by mu: a waiter wants this one durable */
	uint64_t durable_seq;      /* guarded by mu */
	int64_t lazy_since_ms;     /* guarded by mu: monotonic; 0 = nothing lazy pending */
	struct spool_seg *dirty;   /* guarded by mu: segments written since the last sync */
	bool dir_dirty;            /* guarded by mu: a segment file was created */
	bool stop;                 /* guarded by mu */
	int err;                   /* guarded by mu: sticky fdatasync/fsync error */
	uint64_t syncs;            /* guarded by mu */
	struct spool_seg *unlink_req; /* guarded by mu: remove this file, then fsync the directory */
	bool unlink_done;          /* guarded by mu */
	int unlink_err;            /* guarded by mu */
};

struct spool {
	struct event_base *base;
	char *dir;
	int dirfd, lockfd, efd;
	struct event *efd_ev;
	uint64_t seg_max;

	struct spool_seg **segs; /* ascending numbers; the last one is current */
	size_t n_segs, cap_segs;

	struct spool_entry **slots; /* open addressing on id, linear probing */
	size_t slot_cap, n_entries;

	struct spool_waiter *waiters; /* FIFO, ascending seq: [w_head, w_tail) */
	size_t w_head, w_tail, w_cap;

	uint64_t next_id;
	struct strbuf enc; /* reused for each record's head */

	uint64_t written_seq;    /* the loop's copy of sync.written_seq */
	uint64_t durable_seq;    /* as last reported by the sync thread */
	uint64_t syncs;
	int failed;              /* sticky: refuse new records */
	bool closing;

	bool unlinking;               /* an unlink request is with the sync thread */
	struct spool_seg *compacting; /* segment whose live messages are being copied */
	uint64_t *compact_ids;
	size_t n_compact, compact_pos;
	struct event *compact_ev;

	struct spool_sync sync;
};

/* spool.c */
struct spool_entry *spool_index_find(const struct spool *s, uint64_t id);
bool spool_index_reserve(struct spool *s);
void spool_index_insert(struct spool *s, struct spool_entry *e);
void spool_index_remove(struct spool *s, struct spool_entry *e);
struct spool_entry *spool_entry_new(const struct message *m);
void spool_entry_place(struct spool_entry *e, struct spool_seg *seg, uint64_t off,
		       uint32_t rec_len, uint32_t env_len);
void spool_entry_unplace(struct spool *s, struct spool_entry *e);
struct spool_seg *spool_seg_new(uint32_t no, int fd, uint32_t salt, uint64_t size);
void spool_seg_free(struct spool_seg *seg);
bool spool_segs_reserve(struct spool *s);
int spool_seg_create(struct spool *s, uint32_t no, struct spool_seg **out);
void spool_seg_name(char *buf, size_t len, uint32_t no);
struct spool_seg *spool_seg_for(struct spool *s, uint64_t rec_len, int *err);
int spool_write(struct spool *s, struct spool_seg *seg, struct iovec *iov, int iovcnt,
		uint64_t len, bool urgent, uint64_t *off, uint64_t *seq);
int spool_record_read(const struct spool *s, const struct spool_entry *e,
		      unsigned char *head, void *body);

/* sync.c */
int spool_sync_start(struct spool *s);
void spool_sync_stop(struct spool *s);
uint64_t spool_sync_commit(struct spool *s, struct spool_seg *seg, bool urgent);
void spool_sync_created(struct spool *s);
void spool_sync_unlink(struct spool *s, struct spool_seg *seg);

/* recover.c */
int spool_scan(struct spool *s, char *err, size_t errlen);

/* reclaim.c */
void spool_reclaim(struct spool *s);
void spool_reclaim_unlinked(struct spool *s, struct spool_seg *seg, int err);
void spool_reclaim_stop(struct spool *s);
/* The compaction timer's callback. */
void spool_reclaim_step(evutil_socket_t fd, short what, void *arg);

#endif
