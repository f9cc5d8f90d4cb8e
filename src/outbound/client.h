/*
 * client.h - one outbound SMTP or LMTP connection, as a state machine on
 * the event loop.
 *
 * Life of a client: client_connect() connects (binding the source address
 * first when one is given), reads the greeting, sends EHLO (LHLO for
 * LMTP), authenticates when credentials are given, and reports READY.
 * Then client_send() carries one transaction at a time: MAIL, RCPT..., DATA
 * or BDAT, pipelined when the server offers PIPELINING. When the
 * transaction ends, its callback gets one delivery_status per recipient
 * and the client is idle again: the owner sends the next transaction on
 * the same connection (reuse) or calls client_quit(). Every stage is
 * bounded by its own timeout from client_target.
 *
 * Callbacks never free the client themselves; the owner does, with
 * client_quit or client_free, and may do so from inside a callback.
 */
#ifndef TERN_OUTBOUND_CLIENT_H
#define TERN_OUTBOUND_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "outbound/status.h"
#include "queue/message.h"
#include "util/ipaddr.h"

struct event_base;
struct client;

struct client_target {
	const char *host;               /* name for logs (relay address or MX host) */
	struct sockaddr_storage addr;   /* where to connect, port included */
	socklen_t addr_len;
	struct ipaddr source;           /* family 0: let the system choose */
	bool lmtp;                      /* LHLO, one reply per recipient after DATA */
	const char *helo_name;          /* EHLO/LHLO argument */
	int64_t timeout_ms[STAGE_COUNT];
	const char *auth_user;          /* AUTH PLAIN (or LOGIN) when both set */
	const char *auth_secret;
};

/* What the server offered in its EHLO reply. */
#define CLIENT_EXT_PIPELINING 0x01u
#define CLIENT_EXT_CHUNKING   0x02u
#define CLIENT_EXT_SIZE       0x04u
#define CLIENT_EXT_8BITMIME   0x08u
#define CLIENT_EXT_SMTPUTF8   0x10u
#define CLIENT_EXT_DSN        0x20u
#define CLIENT_EXT_STARTTLS   0x40u
#define CLIENT_EXT_AUTH       0x80u
#define CLIENT_EXT_REQUIRETLS 0x100u

/* One transaction: the message's envelope and the recipients it carries. */
struct client_txn {
	const struct message *msg;
	const size_t *rcpt_index;          /* indexes into msg->rcpts */
	size_t n_rcpts;
	const struct message_body *body;   /* CRLF lines, not dot-stuffed */
	struct delivery_status *results;   /* n_rcpts entries, filled by the client */
	void *owner_data;
};

enum client_event {
	CLIENT_READY,   /* greeting, EHLO (and AUTH) done: ready for client_send */
	CLIENT_FAILED,  /* failed before READY: status says where and why */
	CLIENT_CLOSED,  /* the connection ended while idle or after a transaction */
};

struct client_callbacks {
	void (*event)(void *arg, struct client *c, enum client_event ev,
		      const struct delivery_status *why);
	/* Transaction finished: every results[i] is filled. The connection may
	 * still be usable: client_is_idle() says so. */
	void (*txn_done)(void *arg, struct client *c, struct client_txn *txn);
};

struct client *client_connect(struct event_base *base, const struct client_target *target,
			      const struct client_callbacks *cb, void *arg);
/* Start a transaction; only when idle. Returns 0, or -1 when not idle. */
int client_send(struct client *c, struct client_txn *txn);
bool client_is_idle(const struct client *c);
unsigned client_extensions(const struct client *c);
/* The address actually connected to and from, for logs ("192.0.2.1"). */
const char *client_peer_text(const struct client *c);
/* Polite end: QUIT when idle, then free. Safe inside a callback. */
void client_quit(struct client *c);
/* Close at once and free. Safe inside a callback. */
void client_free(struct client *c);

#endif
