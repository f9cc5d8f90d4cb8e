/*
 * conn_io.c - clear and TLS I/O for an inbound connection; see conn_io.h.
 *
 * Under TLS every call maps OpenSSL's answer to a status the same way
 * (map_ssl): WANT_READ/WANT_WRITE are AGAIN with the readiness to wait
 * for, ZERO_RETURN and a plain EOF are CLOSED, anything else is an error
 * whose reason is kept for the session's log line. Writes hand OpenSSL at
 * most one record's worth from the front of the buffer, made contiguous;
 * the context allows partial and moving writes, so a retry after AGAIN
 * may pass a longer or re-laid buffer with the same leading bytes.
 */
#include "inbound/conn_io.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "tls/tls.h"

#define FLUSH_IOV 64
#define TLS_WRITE_MAX (16 * 1024) /* one TLS record */

static enum conn_io_status map_ssl(struct conn_io *io, int ret, const char *what)
{
	int e = SSL_get_error(io->ssl, ret);
	unsigned long code;
	char reason[128];

	io->want_read = e == SSL_ERROR_WANT_READ;
	io->want_write = e == SSL_ERROR_WANT_WRITE;
	if (io->want_read || io->want_write)
		return CONN_IO_AGAIN;
	if (e == SSL_ERROR_ZERO_RETURN) {
		ERR_clear_error();
		return CONN_IO_CLOSED;
	}
	code = ERR_get_error();
	if (e == SSL_ERROR_SYSCALL && code == 0) {
		if (errno == 0 || ret == 0) {
			ERR_clear_error();
			return CONN_IO_CLOSED;
		}
		snprintf(io->error, sizeof(io->error), "%s: %s", what, strerror(errno));
	} else {
		snprintf(io->error, sizeof(io->error), "%s: %s", what,
			 code != 0 ? tls_error_reason(code, reason, sizeof(reason)) : "TLS error");
	}
	ERR_clear_error();
	return CONN_IO_ERROR;
}

enum conn_io_status conn_io_read(struct conn_io *io, struct evbuffer *buf, size_t max)
{
	struct evbuffer_iovec v[2];
	struct iovec iov[2];
	int nv = evbuffer_reserve_space(buf, (ev_ssize_t)max, v, 2);
	ssize_t n;

	if (nv <= 0) {
		snprintf(io->error, sizeof(io->error), "read: out of memory");
		return CONN_IO_ERROR;
	}
	if (io->ssl != NULL) {
		/* One record at most; conn_io_pending tells of the rest. */
		int r;

		errno = 0;
		ERR_clear_error();
		r = SSL_read(io->ssl, v[0].iov_base, (int)(v[0].iov_len < max ? v[0].iov_len : max));
		if (r <= 0) {
			evbuffer_commit_space(buf, v, 0);
			return map_ssl(io, r, "TLS read");
		}
		io->want_read = io->want_write = false;
		v[0].iov_len = (size_t)r;
		evbuffer_commit_space(buf, v, 1);
		return CONN_IO_OK;
	}
	for (int i = 0; i < nv; i++) {
		iov[i].iov_base = v[i].iov_base;
		iov[i].iov_len = v[i].iov_len;
	}
	n = readv(io->fd, iov, nv);
	if (n <= 0) {
		evbuffer_commit_space(buf, v, 0);
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
			return CONN_IO_AGAIN;
		if (n == 0)
			return CONN_IO_CLOSED;
		snprintf(io->error, sizeof(io->error), "read: %s", strerror(errno));
		return CONN_IO_ERROR;
	}
	for (int i = 0; i < nv; i++) {
		v[i].iov_len = (size_t)n < v[i].iov_len ? (size_t)n : v[i].iov_len;
		n -= (ssize_t)v[i].iov_len;
	}
	evbuffer_commit_space(buf, v, nv);
	return CONN_IO_OK;
}

static enum conn_io_status write_tls(struct conn_io *io, struct evbuffer *buf)
{
	while (evbuffer_get_length(buf) > 0) {
		size_t len = evbuffer_get_length(buf);
		unsigned char *p;
		int r;

		if (len > TLS_WRITE_MAX)
			len = TLS_WRITE_MAX;
		p = evbuffer_pullup(buf, (ev_ssize_t)len);
		if (p == NULL) {
			snprintf(io->error, sizeof(io->error), "write: out of memory");
			return CONN_IO_ERROR;
		}
		errno = 0;
		ERR_clear_error();
		r = SSL_write(io->ssl, p, (int)len);
		if (r <= 0)
			return map_ssl(io, r, "TLS write");
		io->want_read = io->want_write = false;
		evbuffer_drain(buf, (size_t)r);
	}
	return CONN_IO_OK;
}

enum conn_io_status conn_io_write(struct conn_io *io, struct evbuffer *buf)
{
	if (io->ssl != NULL)
		return write_tls(io, buf);
	/* One sendmsg for every reply produced so far. */
	while (evbuffer_get_length(buf) > 0) {
		struct evbuffer_iovec v[FLUSH_IOV];
		struct iovec iov[FLUSH_IOV];
		struct msghdr mh = { .msg_iov = iov };
		int n = evbuffer_peek(buf, -1, NULL, v, FLUSH_IOV);
		ssize_t sent;

		for (int i = 0; i < n && i < FLUSH_IOV; i++) {
			iov[i].iov_base = v[i].iov_base;
			iov[i].iov_len = v[i].iov_len;
		}
		mh.msg_iovlen = (size_t)(n < FLUSH_IOV ? n : FLUSH_IOV);
		sent = sendmsg(io->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (sent < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
				return CONN_IO_AGAIN;
			snprintf(io->error, sizeof(io->error), "write: %s", strerror(errno));
			return CONN_IO_ERROR;
		}
		evbuffer_drain(buf, (size_t)sent);
	}
	return CONN_IO_OK;
}

size_t conn_io_pending(const struct conn_io *io)
{
	return io->ssl != NULL ? (size_t)SSL_pending(io->ssl) : 0;
}

void conn_io_start_tls(struct conn_io *io, struct ssl_st *ssl)
{
	io->ssl = ssl;
	SSL_set_fd(ssl, io->fd);
	io->want_read = io->want_write = false;
}

enum conn_io_status conn_io_handshake(struct conn_io *io)
{
	int r;

	errno = 0;
	ERR_clear_error();
	r = SSL_do_handshake(io->ssl);
	if (r == 1) {
		io->want_read = io->want_write = false;
		return CONN_IO_OK;
	}
	/* A client that goes away mid-handshake has still failed it. */
	switch (map_ssl(io, r, "TLS handshake")) {
	case CONN_IO_AGAIN:
		return CONN_IO_AGAIN;
	case CONN_IO_CLOSED:
		snprintf(io->error, sizeof(io->error), "TLS handshake: connection closed by the client");
		return CONN_IO_ERROR;
	default:
		return CONN_IO_ERROR;
	}
}

void conn_io_tls_info(const struct conn_io *io, struct tls_info *out)
{
	/* The client's certificate is not asked for: only protocol and cipher count. */
	static const struct tls_policy inbound = { TLS_USE_OFFERED, TLS_VERIFY_NONE, NULL, 0 };

	tls_describe(io->ssl, &inbound, out);
}

void conn_io_close(struct conn_io *io)
{
	if (io->ssl != NULL) {
		/* Best effort: a close_notify if the socket takes it now. */
		if (SSL_is_init_finished(io->ssl))
			SSL_shutdown(io->ssl);
		SSL_free(io->ssl);
		io->ssl = NULL;
	}
	ERR_clear_error();
	if (io->fd >= 0)
		close(io->fd);
	io->fd = -1;
}
