/*
 * client.h - one outbound SMTP or LMTP connection, as a state machine on
 * the event loop.
 *
 * Life of a client: client_connect() connects (binding the source address
 * first when one is given), reads the greeting, sends EHLO (LHLO for
 * LMTP), speaks STARTTLS and EHLO again when the TLS policy and the server
 * say so (or does the TLS handshake first of all, for implicit TLS),
 * authenticates when credentials are given, and reports READY.
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
#include "tls/tls.h"
#include "util/ipaddr.h"

struct event_base;
struct client;

/* TLS for one connection. A certificate that the policy refuses, a
 * server without STARTTLS when the policy requires it, and a failed
 * handshake all fail the connection at stage TLS, temporarily. */
struct client_tls {
	struct tls_policy policy;
	const char *name;               /* SNI and the name the certificate must match */
	struct tls_client *ctx;         /* needed unless policy.use is TLS_USE_NEVER */
	bool after_failure;             /* TLS_USE_NEVER because TLS to this host failed
					   lately: the summary says so */
};

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
	struct client_tls tls;
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
/*
 * TLS on this connection, for the log: "TLSv1.3:TLS_AES_256_GCM_SHA384
 * verified=yes", "... verified=no(self-signed certificate)", or in clear
 * "none(disabled)", "none(not offered)", "none(STARTTLS refused: 454)",
 * "none(after a failed handshake)", "none(TLS failed)"; "" while
 * the session has not got that far. At most TLS_SUMMARY_MAX bytes with
 * the NUL. Returns buf.
 */
const char *client_tls_summary(const struct client *c, char *buf, size_t len);
/* The finished handshake of a connection under TLS; NULL in clear or
 * before the session got that far. */
const struct tls_info *client_tls_info(const struct client *c);
/* Did the connection fail in STARTTLS or the TLS handshake (an error, a
 * stall, the connection lost)? The owner of an opportunistic connection
 * may then connect again in clear. A certificate the policy refused does
 * not count: the handshake worked. */
bool client_tls_failed(const struct client *c);
/* Polite end: QUIT when idle, then free. Safe inside a callback. */
void client_quit(struct client *c);
/* Close at once and free. Safe inside a callback. */
void client_free(struct client *c);

#endif
