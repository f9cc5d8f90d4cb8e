/*
 * server.h - TLS for tern's inbound connections: one server context per
 * [certificate."<id>"], made at start-up from its PEM chain and key.
 *
 * A context speaks TLS 1.2 and later, asks clients for no certificate,
 * and holds a key checked against its certificate, so a session that
 * starts TLS with it can only fail on what the client does. The client
 * side (tls.h) is separate: nothing here verifies a peer.
 *
 * Not here: sockets, the handshake and record I/O (inbound/conn_io.c),
 * choosing a listener's certificate (inbound/listener.c), reloading
 * certificates (a SIGHUP keeps the contexts tern started with).
 */
#ifndef TERN_TLS_SERVER_H
#define TERN_TLS_SERVER_H

#include <stddef.h>

struct config;
struct ssl_st;     /* OpenSSL's SSL */
struct tls_server; /* one certificate's context */

/*
 * The context of [certificate."<id>"] of cfg. NULL with err filled
 * ("certificate \"<id>\": <reason>") when the section does not exist, the
 * chain or key do not parse, or the key does not match the certificate.
 */
struct tls_server *tls_server_new(const struct config *cfg, const char *id, char *err,
				  size_t errlen);
void tls_server_free(struct tls_server *ts);

/* The certificate id the context was made from. */
const char *tls_server_id(const struct tls_server *ts);

/* A server SSL for one connection, in accept state; the caller owns it.
 * NULL with err filled when out of memory. */
struct ssl_st *tls_server_ssl_new(struct tls_server *ts, char *err, size_t errlen);

#endif
