/*
 * tls.c - the OpenSSL side of outbound TLS; see tls.h.
 *
 * Invariants: the context verifies with SSL_VERIFY_NONE, so a handshake
 * completes whatever the certificate, and SSL_get_verify_result tells
 * afterwards what the chain and name checks found (OpenSSL stops at the
 * first problem: an untrusted chain is reported before a wrong name).
 * Every SSL made here carries the name or address to check, set before
 * the handshake, so the result always covers the name.
 *
 * Not done here: I/O. The SSLs are driven by libevent's OpenSSL
 * bufferevents in outbound/client.c.
 */
#include "tls/tls.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "dns/rdata.h"
#include "util/ipaddr.h"

struct tls_client {
	SSL_CTX *ctx;
};

/* The text of OpenSSL's first queued error, or what when there is none. */
static void openssl_error(char *err, size_t errlen, const char *what)
{
	unsigned long code = ERR_get_error();
	char reason[128];

	snprintf(err, errlen, "%s%s%s", what, code != 0 ? ": " : "",
		 tls_error_reason(code, reason, sizeof(reason)));
	ERR_clear_error();
}

struct tls_client *tls_client_new(char *err, size_t errlen)
{
	struct tls_client *tc = calloc(1, sizeof(*tc));

	if (tc == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	tc->ctx = SSL_CTX_new(TLS_client_method());
	if (tc->ctx == NULL) {
		openssl_error(err, errlen, "cannot create the TLS client context");
		free(tc);
		return NULL;
	}
	/* SSL_OP_IGNORE_UNEXPECTED_EOF: a peer that closes without
	 * close_notify (common after QUIT) ends the stream, as a TCP close
	 * would; SMTP's own framing shows whether anything was cut short. */
	SSL_CTX_set_options(tc->ctx, SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_NO_RENEGOTIATION);
	SSL_CTX_set_mode(tc->ctx, SSL_MODE_RELEASE_BUFFERS);
	SSL_CTX_set_verify(tc->ctx, SSL_VERIFY_NONE, NULL);
	if (SSL_CTX_set_min_proto_version(tc->ctx, TLS1_2_VERSION) != 1 ||
	    SSL_CTX_set_default_verify_paths(tc->ctx) != 1 || SSL_CTX_dane_enable(tc->ctx) <= 0) {
		openssl_error(err, errlen, "cannot set up the TLS client context");
		tls_client_free(tc);
		return NULL;
	}
	return tc;
}

void tls_client_free(struct tls_client *tc)
{
	if (tc == NULL)
		return;
	SSL_CTX_free(tc->ctx);
	free(tc);
}

bool tls_name_ip(const char *name, char *ip, size_t iplen)
{
	size_t len = strlen(name);
	unsigned char bin[16];
	char text[IPADDR_STRLEN];

	if (len >= 2 && name[0] == '[' && name[len - 1] == ']') {
		name++;
		len -= 2;
		if (len > 5 && strncasecmp(name, "ipv6:", 5) == 0) {
			name += 5;
			len -= 5;
		}
	}
	if (len == 0 || len >= sizeof(text))
		return false;
	memcpy(text, name, len);
	text[len] = '\0';
	if (inet_pton(AF_INET, text, bin) != 1 && inet_pton(AF_INET6, text, bin) != 1)
		return false;
	snprintf(ip, iplen, "%s", text);
	return true;
}

/* The TLSA records of policy on ssl, with name as the reference
 * identifier for DANE-TA (RFC 7672 §3.2.3: the MX host name). */
static bool set_dane(SSL *ssl, const char *name, const struct tls_policy *policy)
{
	if (SSL_set_tlsext_host_name(ssl, name) != 1 || SSL_dane_enable(ssl, name) <= 0)
		return false;
	/* RFC 7672 §3.1.1: a DANE-EE match is all there is to check. */
	SSL_dane_set_flags(ssl, DANE_FLAG_NO_DANE_EE_NAMECHECKS);
	for (size_t i = 0; i < policy->n_tlsa; i++) {
		const struct dns_tlsa *t = &policy->tlsa[i];

		/* 0: a record OpenSSL cannot use (the planner keeps only
		 * usable ones); below 0: out of memory. */
		if (SSL_dane_tlsa_add(ssl, t->usage, t->selector, t->mtype, t->data, t->len) < 0)
			return false;
	}
	return true;
}

struct ssl_st *tls_client_ssl_new(struct tls_client *tc, const char *name,
				  const struct tls_policy *policy, char *err, size_t errlen)
{
	char ip[IPADDR_STRLEN];
	SSL *ssl;
	bool ok;

	ERR_clear_error();
	ssl = SSL_new(tc->ctx);
	if (ssl == NULL) {
		openssl_error(err, errlen, "cannot create a TLS session");
		return NULL;
	}
	if (policy->verify == TLS_VERIFY_DANE) {
		ok = set_dane(ssl, name, policy);
	} else if (tls_name_ip(name, ip, sizeof(ip))) {
		ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), ip) == 1;
	} else {
		SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
		ok = SSL_set_tlsext_host_name(ssl, name) == 1 && SSL_set1_host(ssl, name) == 1;
	}
	if (!ok) {
		openssl_error(err, errlen, "cannot set the name to verify");
		SSL_free(ssl);
		return NULL;
	}
	return ssl;
}

void tls_describe(struct ssl_st *ssl, const struct tls_policy *policy, struct tls_info *out)
{
	X509 *peer = SSL_get0_peer_certificate(ssl);
	long result = SSL_get_verify_result(ssl);

	bool dane = policy->verify == TLS_VERIFY_DANE;
	uint8_t usage;

	memset(out, 0, sizeof(*out));
	out->dane_usage = -1;
	snprintf(out->protocol, sizeof(out->protocol), "%s", SSL_get_version(ssl));
	snprintf(out->cipher, sizeof(out->cipher), "%s", SSL_get_cipher_name(ssl));
	if (peer == NULL) {
		snprintf(out->why_not, sizeof(out->why_not), "no certificate");
	} else if (result != X509_V_OK) {
		snprintf(out->why_not, sizeof(out->why_not), "%s%s", dane ? "DANE: " : "",
			 X509_verify_cert_error_string(result));
	} else if (dane && SSL_get0_dane_tlsa(ssl, &usage, NULL, NULL, NULL, NULL) < 0) {
		/* Verified, but by the trust store: DANE wanted a TLSA match. */
		snprintf(out->why_not, sizeof(out->why_not), "DANE: no TLSA record matched");
	} else {
		out->verified = true;
		if (dane)
			out->dane_usage = usage;
	}
}

const char *tls_info_format(const struct tls_info *info, char *out, size_t outlen)
{
	if (info->verified && info->dane_usage >= 0)
		snprintf(out, outlen, "%s:%s verified=yes(dane-%s)", info->protocol, info->cipher,
			 info->dane_usage == 3 ? "ee" : info->dane_usage == 2 ? "ta" : "other");
	else if (info->verified)
		snprintf(out, outlen, "%s:%s verified=yes", info->protocol, info->cipher);
	else
		snprintf(out, outlen, "%s:%s verified=no(%s)", info->protocol, info->cipher,
			 info->why_not);
	return out;
}

bool tls_policy_met(const struct tls_policy *policy, const struct tls_info *info)
{
	switch (policy->verify) {
	case TLS_VERIFY_NONE:
		return true;
	case TLS_VERIFY_NAME:
		return info->verified;
	case TLS_VERIFY_DANE:
		return info->verified && info->dane_usage >= 0;
	}
	return false;
}

const char *tls_error_reason(unsigned long code, char *out, size_t outlen)
{
	const char *reason = ERR_GET_LIB(code) != 0 ? ERR_reason_error_string(code) : NULL;

	if (ERR_GET_LIB(code) == 0)
		snprintf(out, outlen, "%s", "");
	else if (reason != NULL)
		snprintf(out, outlen, "%s", reason);
	else
		ERR_error_string_n(code, out, outlen);
	return out;
}
