/*
 * sync.c - the spool's sync thread: group commit.
 *
 * The loop writes records into the page cache, then tells this thread how
 * far it got (written_seq) and which segment files it touched. The thread
 * takes everything written so far, fdatasyncs each touched segment (and
 * fsyncs the directory when a segment file was created), publishes
 * durable_seq, and wakes the loop through an eventfd (it never calls
 * libevent, so libevent needs no thread support for it). What arrives
 * during a sync waits for the next one, so one fdatasync covers every
 * record that arrived meanwhile, however many.
 *
 * A record someone waits for (a new message) is synced at once; RCPT,
 * DONE and compaction records go with the next new message, or after
 * SPOOL_LAZY_SYNC_MS, whichever comes first.
 *
 * The thread also removes segment files for the reclaimer, one at a time,
 * each removal followed by an fsync of the directory, so that removals
 * reach the disk in the order they were made.
 *
 * A failed fdatasync or directory fsync is sticky: Linux may have dropped
 * the dirty pages, and a later fdatasync that succeeds would prove
 * nothing. The thread stops syncing; the loop fails every waiter and
 * refuses new records.
 *
 * What it does not do: overlap syncs. One sync runs at a time, so on a
 * disk whose flushes are slow (milliseconds) and that runs many flushes in
 * parallel, throughput is about (records per batch / flush time); two to
 * four overlapping rounds completing in order would lift that ceiling.
 *
 * It never touches the index or anything else of the loop's, and closes
 * no file: a segment on the dirty list is freed only after a sync covered
 * its last record, and only by the loop.
 */
#include "spool/internal.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "util/log.h"

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void wake_loop(struct spool *s)
{
	uint64_t one = 1;

	/* EAGAIN means the counter is full: the loop has a wake-up pending. */
	if (write(s->efd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		log_error("spool %s: cannot wake the event loop: %s", s->dir, strerror(errno));
}

/* Called with mu held; returns with it held. */
static void sync_round(struct spool *s)
{
	struct spool_sync *y = &s->sync;
	struct spool_seg *list = NULL;
	uint64_t target = y->written_seq;
	bool dir = y->dir_dirty;
	int err = 0;

	for (struct spool_seg *seg = y->dirty; seg != NULL; seg = seg->dirty_next) {
		seg->dirty = false;
		seg->sync_next = list;
		list = seg;
	}
	y->dirty = NULL;
	y->dir_dirty = false;
	y->lazy_since_ms = 0;
	pthread_mutex_unlock(&y->mu);

	for (struct spool_seg *seg = list; seg != NULL && err == 0; seg = seg->sync_next)
		if (fdatasync(seg->fd) != 0)
			err = errno;
	if (err == 0 && dir && fsync(s->dirfd) != 0)
		err = errno;

	pthread_mutex_lock(&y->mu);
	if (err != 0) {
		y->err = err;
	} else {
		y->durable_seq = target;
		y->syncs++;
	}
	/* Records written during this sync: at most SPOOL_LAZY_SYNC_MS more. */
	if (y->written_seq > target && y->lazy_since_ms == 0)
		y->lazy_since_ms = mono_ms();
	wake_loop(s);
}

/* Called with mu held; returns with it held. */
static void unlink_segment(struct spool *s)
{
	struct spool_sync *y = &s->sync;
	bool fsync_failed = false;
	char name[32];
	int err = 0;

	spool_seg_name(name, sizeof(name), y->unlink_req->no);
	pthread_mutex_unlock(&y->mu);
	if (unlinkat(s->dirfd, name, 0) != 0 && errno != ENOENT) {
		err = errno; /* the file stays; nothing is in doubt */
	} else if (fsync(s->dirfd) != 0) {
		err = errno;
		fsync_failed = true;
	}
	pthread_mutex_lock(&y->mu);
	/* A failed directory fsync leaves earlier creations in doubt too. */
	if (fsync_failed && y->err == 0)
		y->err = err;
	y->unlink_done = true;
	y->unlink_err = err;
	wake_loop(s);
}

static void *sync_main(void *arg)
{
	struct spool *s = arg;
	struct spool_sync *y = &s->sync;

	pthread_mutex_lock(&y->mu);
	for (;;) {
		bool pending = y->err == 0 && (y->written_seq > y->durable_seq || y->dir_dirty);
		int64_t deadline = y->lazy_since_ms + SPOOL_LAZY_SYNC_MS;

		if (y->unlink_req != NULL && !y->unlink_done) {
			unlink_segment(s);
			continue;
		}
		if (pending && (y->stop || y->urgent_seq > y->durable_seq || y->lazy_since_ms == 0 ||
				mono_ms() >= deadline)) {
			sync_round(s);
			continue;
		}
		if (y->stop)
			break;
		if (pending) {
			struct timespec ts = {
				.tv_sec = deadline / 1000, .tv_nsec = (deadline % 1000) * 1000000,
			};

			pthread_cond_timedwait(&y->cond, &y->mu, &ts);
		} else {
			pthread_cond_wait(&y->cond, &y->mu);
		}
	}
	pthread_mutex_unlock(&y->mu);
	return NULL;
}

int spool_sync_start(struct spool *s)
{
	sigset_t all, old;
	int err;

	/* The thread inherits a full mask: signals are the loop's business. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	err = pthread_create(&s->sync.thread, NULL, sync_main, s);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	s->sync.started = err == 0;
	return err;
}

/* Sync whatever is written, then stop and join the thread. */
void spool_sync_stop(struct spool *s)
{
	struct spool_sync *y = &s->sync;

	if (!y->started)
		return;
	pthread_mutex_lock(&y->mu);
	y->stop = true;
	pthread_cond_signal(&y->cond);
	pthread_mutex_unlock(&y->mu);
	pthread_join(y->thread, NULL);
	y->started = false;
}

/* A record was written to seg; returns its sequence number. */
uint64_t spool_sync_commit(struct spool *s, struct spool_seg *seg, bool urgent)
{
	struct spool_sync *y = &s->sync;
	bool wake = urgent;
	uint64_t seq;

	pthread_mutex_lock(&y->mu);
	if (!seg->dirty) {
		seg->dirty = true;
		seg->dirty_next = y->dirty;
		y->dirty = seg;
	}
	seq = ++y->written_seq;
	if (urgent) {
		y->urgent_seq = seq;
	} else if (y->lazy_since_ms == 0) {
		y->lazy_since_ms = mono_ms();
		wake = true; /* the thread may be waiting without a deadline */
	}
	if (wake)
		pthread_cond_signal(&y->cond);
	pthread_mutex_unlock(&y->mu);
	s->written_seq = seq;
	return seq;
}

/* A segment file was created: fsync the directory with the next sync. */
void spool_sync_created(struct spool *s)
{
	struct spool_sync *y = &s->sync;

	pthread_mutex_lock(&y->mu);
	y->dir_dirty = true;
	if (y->lazy_since_ms == 0)
		y->lazy_since_ms = mono_ms();
	pthread_cond_signal(&y->cond);
	pthread_mutex_unlock(&y->mu);
}

/* Remove seg's file; the loop hears back through spool_drain. */
void spool_sync_unlink(struct spool *s, struct spool_seg *seg)
{
	struct spool_sync *y = &s->sync;

	pthread_mutex_lock(&y->mu);
	y->unlink_req = seg;
	y->unlink_done = false;
	pthread_cond_signal(&y->cond);
	pthread_mutex_unlock(&y->mu);
}
