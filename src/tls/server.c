/*
 * server.c - inbound TLS contexts; see server.h.
 *
 * The chain and key come from the configuration's values (an inline PEM,
 * or the contents of a file:// path, which the loader has already read),
 * so nothing here touches the file system. The first certificate of the
 * chain is the server's; the rest are sent as its chain, in order.
 */
#include "tls/server.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>

#include "config/settings.h"
#include "tls/tls.h"

struct tls_server {
	SSL_CTX *ctx;
	char *id;
};

/* "certificate "<id>": what: OpenSSL's reason" into err. */
static void cert_error(char *err, size_t errlen, const char *id, const char *what)
{
	unsigned long code = ERR_peek_last_error();
	char reason[128];

	tls_error_reason(code, reason, sizeof(reason));
	snprintf(err, errlen, "certificate \"%s\": %s%s%s", id, what, reason[0] != '\0' ? ": " : "",
		 reason);
	ERR_clear_error();
}

/* The chain of PEM text into ctx: the first certificate is the server's. */
static bool load_chain(SSL_CTX *ctx, const struct cfg_value *pem, const char *id, char *err,
		       size_t errlen)
{
	BIO *bio = BIO_new_mem_buf(pem->str, (int)pem->len);
	X509 *x;
	bool ok = false;

	if (bio == NULL) {
		cert_error(err, errlen, id, "out of memory");
		return false;
	}
	x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
	if (x == NULL || SSL_CTX_use_certificate(ctx, x) != 1) {
		cert_error(err, errlen, id, "cert is not a PEM certificate");
		goto out;
	}
	X509_free(x);
	while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
		if (SSL_CTX_add0_chain_cert(ctx, x) != 1) {
			cert_error(err, errlen, id, "cannot add a chain certificate");
			goto out;
		}
	}
	x = NULL;
	/* The loop ends at the end of the text, which OpenSSL reports as a
	 * "no start line" error: that one is expected. */
	ERR_clear_error();
	ok = true;
out:
	X509_free(x);
	BIO_free(bio);
	return ok;
}

static bool load_key(SSL_CTX *ctx, const struct cfg_value *pem, const char *id, char *err,
		     size_t errlen)
{
	BIO *bio = BIO_new_mem_buf(pem->str, (int)pem->len);
	EVP_PKEY *key = bio != NULL ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;
	bool ok = false;

	if (key == NULL)
		cert_error(err, errlen, id, "private-key is not an unencrypted PEM private key");
	else if (SSL_CTX_use_PrivateKey(ctx, key) != 1 || SSL_CTX_check_private_key(ctx) != 1)
		cert_error(err, errlen, id, "private-key does not match the certificate");
	else
		ok = true;
	EVP_PKEY_free(key);
	BIO_free(bio);
	return ok;
}

struct tls_server *tls_server_new(const struct config *cfg, const char *id, char *err,
				  size_t errlen)
{
	const struct cfg_section *sec =
		config_section_find(cfg, CFG_GROUP_CERTIFICATE, id, strlen(id));
	const struct cfg_value *cert = sec != NULL ? cfg_section_get(sec, CFG_CERT_CERT) : NULL;
	const struct cfg_value *key = sec != NULL ? cfg_section_get(sec, CFG_CERT_PRIVATE_KEY) : NULL;
	struct tls_server *ts;

	if (cert == NULL || key == NULL || cert->none || key->none) {
		snprintf(err, errlen, "certificate \"%s\": not defined (cert and private-key are needed)",
			 id);
		return NULL;
	}
	ERR_clear_error();
	ts = calloc(1, sizeof(*ts));
	if (ts == NULL || (ts->id = strdup(id)) == NULL ||
	    (ts->ctx = SSL_CTX_new(TLS_server_method())) == NULL) {
		cert_error(err, errlen, id, "out of memory");
		tls_server_free(ts);
		return NULL;
	}
	/* Partial and moving writes: the session writes from the front of a
	 * growing output buffer, which may be re-laid between retries. */
	SSL_CTX_set_mode(ts->ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
					  SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
					  SSL_MODE_RELEASE_BUFFERS);
	/* No renegotiation (a client could make us work without end); a
	 * client that drops the connection without close_notify ends it as a
	 * TCP close would, SMTP's framing telling what was cut short. */
	SSL_CTX_set_options(ts->ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_IGNORE_UNEXPECTED_EOF |
					     SSL_OP_CIPHER_SERVER_PREFERENCE);
	SSL_CTX_set_verify(ts->ctx, SSL_VERIFY_NONE, NULL);
	if (SSL_CTX_set_min_proto_version(ts->ctx, TLS1_2_VERSION) != 1) {
		cert_error(err, errlen, id, "cannot require TLS 1.2");
		tls_server_free(ts);
		return NULL;
	}
	if (!load_chain(ts->ctx, cert, id, err, errlen) || !load_key(ts->ctx, key, id, err, errlen)) {
		tls_server_free(ts);
		return NULL;
	}
	return ts;
}

void tls_server_free(struct tls_server *ts)
{
	if (ts == NULL)
		return;
	SSL_CTX_free(ts->ctx);
	free(ts->id);
	free(ts);
}

const char *tls_server_id(const struct tls_server *ts)
{
	return ts->id;
}

struct ssl_st *tls_server_ssl_new(struct tls_server *ts, char *err, size_t errlen)
{
	SSL *ssl = SSL_new(ts->ctx);

	if (ssl == NULL) {
		cert_error(err, errlen, ts->id, "cannot create a TLS session");
		return NULL;
	}
	SSL_set_accept_state(ssl);
	return ssl;
}
