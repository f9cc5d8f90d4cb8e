/*
 * spool.h - the durable store of queued mail.
 *
 * A message is acknowledged only once its envelope and body are on stable
 * storage. The spool appends records to a journal of segment files and a
 * separate sync thread makes them durable with one fdatasync for however
 * many messages arrived meanwhile (group commit), then tells the event
 * loop, which runs each waiting message's callback. Recipient state
 * changes are appended the same way. At start-up, the journal is replayed
 * and every message with a pending recipient is handed back.
 *
 * All functions are called from the event loop thread only; callbacks run
 * on it too.
 */
#ifndef TERN_SPOOL_SPOOL_H
#define TERN_SPOOL_SPOOL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "queue/message.h"

struct event_base;
struct spool;

/* err is 0 when durable, else an errno: ENOSPC/EDQUOT mean the disk is
 * full (the sender gets 452 4.3.1), anything else a local error. */
typedef void (*spool_durable_cb)(void *arg, int err);
/* One recovered message; ownership of msg passes to the callee. */
typedef void (*spool_recover_cb)(void *arg, struct message *msg);

/* Open (creating dir if missing) and start the sync thread. NULL with a
 * message in err on failure. Only one process may open a spool: a second
 * one fails (an exclusive lock on the directory). */
struct spool *spool_open(struct event_base *base, const char *dir, char *err, size_t errlen);

/* Replay the journal: cb for every message that still has a pending
 * recipient, with recipient states and attempt counts as last recorded.
 * Call once, right after spool_open. Returns 0, or -1 with err. */
int spool_recover(struct spool *s, spool_recover_cb cb, void *arg, char *err, size_t errlen);

/* Store a new message: assigns msg->id and its spool location, writes the
 * envelope and the body (iov, the bytes as they will be delivered), and
 * calls cb once they are durable. The body is copied; the caller may free
 * it on return. Returns 0, or an errno (cb is then not called). */
int spool_submit(struct spool *s, struct message *msg, const struct iovec *body, int iovcnt,
		 spool_durable_cb cb, void *arg);

/* Record recipient i's state, attempts and next_try_ms as they are now in
 * msg. Durable at the next group commit; no callback. Returns 0 or errno. */
int spool_update_rcpt(struct spool *s, const struct message *msg, size_t i);

/* msg has no pending recipient left and will not be touched again: its
 * space can be reclaimed once every message in its segment is done. */
void spool_release(struct spool *s, const struct message *msg);

/* Read the body of msg back (for a retry, or after a restart) into a new
 * message_body. Returns NULL with errno set on failure. Reads from the
 * page cache or disk synchronously: bodies are bounded by the size limit. */
struct message_body *spool_read_body(struct spool *s, const struct message *msg);

struct spool_stats {
	uint64_t bytes;        /* journal bytes on disk */
	uint32_t segments;
	uint64_t syncs;        /* group commits done */
	uint64_t synced_records;
};
void spool_get_stats(const struct spool *s, struct spool_stats *st);

/* Wait for everything written to be durable, stop the sync thread, close. */
void spool_close(struct spool *s);

#endif
