/*
 * conn_io.h - the bytes of one inbound connection, in clear or through
 * TLS (private to src/inbound).
 *
 * The session reads into and writes from its evbuffers through here, and
 * never learns which of the two it is talking: in clear, readv and one
 * sendmsg per flush; under TLS, SSL_read and SSL_write. Every call is
 * nonblocking; CONN_IO_AGAIN says "call again when the socket is ready",
 * and under TLS which readiness that is (a read may need the socket
 * writable, a write readable) is in want_write/want_read.
 *
 * Not here: events and timeouts (the session owns them), what the bytes
 * mean, choosing a certificate.
 */
#ifndef TERN_INBOUND_CONN_IO_H
#define TERN_INBOUND_CONN_IO_H

#include <stdbool.h>
#include <stddef.h>

struct evbuffer;
struct ssl_st;
struct tls_info;

enum conn_io_status {
	CONN_IO_OK,     /* done: bytes moved, or the handshake finished */
	CONN_IO_AGAIN,  /* not now: wait for the socket (see want_*) */
	CONN_IO_CLOSED, /* the client closed the connection */
	CONN_IO_ERROR,  /* broken: the reason is in error */
};

struct conn_io {
	int fd;
	struct ssl_st *ssl; /* NULL while in clear */
	bool want_read;     /* the TLS call that returned AGAIN waits for readable */
	bool want_write;    /* ... for writable */
	char error[160];
};

/* Read what is there, up to max bytes, onto the end of buf. */
enum conn_io_status conn_io_read(struct conn_io *io, struct evbuffer *buf, size_t max);
/* Send from the front of buf as far as the socket takes it, draining what
 * went. OK when buf is empty. */
enum conn_io_status conn_io_write(struct conn_io *io, struct evbuffer *buf);
/* Bytes OpenSSL has decrypted but not handed out yet: they make no read
 * event, so the caller reads them without waiting for one. */
size_t conn_io_pending(const struct conn_io *io);

/* From now on, TLS as the server through ssl (which io owns); the
 * handshake is then driven by conn_io_handshake until it says OK. */
void conn_io_start_tls(struct conn_io *io, struct ssl_st *ssl);
enum conn_io_status conn_io_handshake(struct conn_io *io);
/* The protocol and cipher of the finished handshake. */
void conn_io_tls_info(const struct conn_io *io, struct tls_info *out);

/* Free the TLS state and close the socket. */
void conn_io_close(struct conn_io *io);

#endif
