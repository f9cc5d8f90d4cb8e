/*
 * message.h - a queued message's envelope, as every stage sees it.
 *
 * The inbound session builds one (message_new, message_add_rcpt), the
 * spool stores and recovers it, the queue schedules its recipients, the
 * outbound client reads it. One allocation owner: whoever holds the
 * pointer after queue_submit is the queue; message_free releases the
 * envelope and its recipients. The body is not part of the envelope: it
 * lives in the spool (and, while hot, in memory: see struct message_body).
 */
#ifndef TERN_QUEUE_MESSAGE_H
#define TERN_QUEUE_MESSAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* MAIL FROM BODY= */
enum msg_body_type { MSG_BODY_7BIT, MSG_BODY_8BITMIME, MSG_BODY_BINARYMIME };
/* MAIL FROM RET= (RFC 3461); NONE when not given */
enum msg_ret { MSG_RET_NONE, MSG_RET_FULL, MSG_RET_HDRS };
/* RCPT TO NOTIFY= bits (RFC 3461); 0 when not given */
#define RCPT_NOTIFY_NEVER   0x1u
#define RCPT_NOTIFY_SUCCESS 0x2u
#define RCPT_NOTIFY_FAILURE 0x4u
#define RCPT_NOTIFY_DELAY   0x8u

/* struct rcpt flags, kept in the spool with the state. */
#define RCPT_F_HELD      0x01u /* on hold: not attempted until released */
#define RCPT_F_DSN_OWED  0x02u /* final, and its notice is not queued yet */
#define RCPT_F_KNOWN     0x0fu /* the flag bits; the high nibble counts delay notices */
#define RCPT_DELAYS(f)   ((unsigned)(f) >> 4)
#define RCPT_DELAYS_MAX  15u

enum rcpt_state {
	RCPT_PENDING,   /* waiting for its next attempt */
	RCPT_DELIVERED, /* final: 2xx */
	RCPT_FAILED,    /* final: 5xx, expiry, or cancelled */
};

struct rcpt {
	char *addr;          /* as given, without <>; NUL-terminated */
	size_t addr_len;
	const char *domain;  /* lower-cased copy of the part after the last '@' ("" if none) */
	size_t domain_len;
	char *orcpt;         /* ORCPT= value as given (xtext), or NULL */
	uint8_t notify;      /* RCPT_NOTIFY_* bits */
	uint8_t state;       /* enum rcpt_state */
	uint8_t flags;       /* RCPT_F_* and the count of delay notices sent */
	uint16_t attempts;   /* delivery attempts made */
	int64_t next_try_ms; /* wall clock (ms since the epoch) of the next attempt */
};

struct message {
	uint64_t id;          /* queue id, assigned by the spool; printed as %016llx */
	int64_t arrival_ms;   /* wall clock when accepted */
	char *sender;         /* return path without <>; "" for the null sender */
	char *sender_lower;   /* the same, lower-cased, for rules (set by message_new) */
	char *envid;          /* ENVID= (xtext) or NULL */
	uint8_t ret;          /* enum msg_ret */
	uint8_t body_type;    /* enum msg_body_type */
	bool smtputf8;
	bool requiretls;
	uint64_t size;        /* body bytes as stored (CRLF lines, not dot-stuffed) */
	struct rcpt *rcpts;
	size_t n_rcpts, cap_rcpts;

	/* Owned by the spool: where the message is on disk. */
	uint32_t spool_segment;
	uint64_t spool_offset;
	uint32_t spool_length;

	/* Owned by the queue. */
	void *queue_data;
};

/* A body shared by the queue's in-flight deliveries (reference counted,
 * single-threaded: only the event loop touches it). */
struct message_body {
	unsigned refs;
	size_t len;
	char data[];
};

struct message *message_new(const char *sender, size_t sender_len);
/* Returns the new recipient, or NULL when out of memory. */
struct rcpt *message_add_rcpt(struct message *m, const char *addr, size_t len);
bool message_set_string(char **field, const char *s, size_t len);
void message_free(struct message *m);
/* Recipients not yet final. */
size_t message_pending(const struct message *m);

struct message_body *message_body_new(size_t len);
struct message_body *message_body_ref(struct message_body *b);
void message_body_unref(struct message_body *b);

#endif
