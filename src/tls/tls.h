/*
 * tls.h - TLS for tern's outbound connections: a thin layer over OpenSSL 3.
 *
 * One client context per process (struct tls_client, owned by the
 * connector): TLS 1.2 at least, certificates checked against the system
 * trust store, which SSL_CTX_set_default_verify_paths finds. That call
 * honours OpenSSL's SSL_CERT_FILE (and SSL_CERT_DIR) environment
 * variables: a file named there replaces the system store, which is how
 * the tests make tern trust their own CA (SPEC §4 "Trust").
 *
 * Verification never stops a handshake here: the handshake runs with
 * SSL_VERIFY_NONE, and what the chain and name checks found is read once
 * it is done (tls_describe). Whether that is good enough is the caller's
 * struct tls_policy, applied after the handshake (tls_policy_met), so one
 * handshake serves both opportunistic TLS (RFC 7435), which only logs an
 * unverified certificate, and verified TLS, which refuses the host.
 * DANE is such a policy too: it carries the TLSA records, which OpenSSL's
 * own DANE support (SSL_dane_enable) checks the chain against during the
 * same handshake.
 *
 * Not here: sockets and the event loop (the outbound client wraps its
 * connection in the SSL made here), choosing a policy from the
 * configuration (route/tlspolicy.h), inbound TLS, session resumption.
 */
#ifndef TERN_TLS_TLS_H
#define TERN_TLS_TLS_H

#include <stdbool.h>
#include <stddef.h>

struct ssl_st;      /* OpenSSL's SSL */
struct dns_tlsa;    /* dns/rdata.h */
struct tls_client;  /* the process's client context */

/* When a connection speaks TLS. */
enum tls_use {
	TLS_USE_NEVER,     /* not even when the server offers STARTTLS */
	TLS_USE_OFFERED,   /* STARTTLS when the server offers it, else in clear */
	TLS_USE_REQUIRED,  /* STARTTLS: a server that does not offer it fails */
	TLS_USE_IMPLICIT,  /* the handshake right after connect (port 465) */
};

/* What the server's certificate must pass. */
enum tls_verify {
	TLS_VERIFY_NONE,   /* any certificate: the result is only logged */
	TLS_VERIFY_NAME,   /* a chain to a trusted root, valid now, for the name */
	TLS_VERIFY_DANE,   /* a match with one of the TLSA records (RFC 7672) */
};

struct tls_policy {
	enum tls_use use;
	enum tls_verify verify;
	/* TLS_VERIFY_DANE: the host's usable TLSA records, owned by the
	 * caller and read when the SSL is made. DANE-EE (usage 3) matches the
	 * server's own certificate or key, with no name or date check;
	 * DANE-TA (usage 2) a certificate of the chain, and the name is
	 * checked as for TLS_VERIFY_NAME (RFC 7672 §3.1). */
	const struct dns_tlsa *tlsa;
	size_t n_tlsa;
};

/* The longest text tls_info_format writes, NUL included. */
#define TLS_SUMMARY_MAX 192

/* A finished handshake, for logs and for the policy. */
struct tls_info {
	char protocol[16];   /* "TLSv1.3" */
	char cipher[64];     /* "TLS_AES_256_GCM_SHA384" */
	bool verified;       /* chain to a trusted root, in date, name matched;
				or, under DANE, a TLSA record matched */
	char why_not[96];    /* when not verified: OpenSSL's reason */
	int dane_usage;      /* the usage of the TLSA record that matched, or -1 */
};

/* The process's client context; NULL with err filled when OpenSSL
 * cannot make one (start-up: out of memory). */
struct tls_client *tls_client_new(char *err, size_t errlen);
void tls_client_free(struct tls_client *tc);

/*
 * A client SSL for one connection to name under policy: a host name gets
 * SNI and is the name the certificate must carry; an IP literal
 * ("192.0.2.1", "2001:db8::1", "[192.0.2.1]", "[IPv6:2001:db8::1]") gets
 * no SNI and is the address the certificate must carry. Under
 * TLS_VERIFY_DANE the policy's TLSA records are what the chain is
 * checked against (records OpenSSL cannot use are skipped; none usable
 * leaves nothing to match, so the certificate is refused). The caller
 * owns the SSL. NULL with err filled when out of memory.
 */
struct ssl_st *tls_client_ssl_new(struct tls_client *tc, const char *name,
				  const struct tls_policy *policy, char *err, size_t errlen);

/* The address in name when it is an IP literal (forms as above), as text
 * into ip (IPADDR_STRLEN bytes will do); false for a host name. */
bool tls_name_ip(const char *name, char *ip, size_t iplen);

/* What a finished handshake on ssl, made for policy, gave. */
void tls_describe(struct ssl_st *ssl, const struct tls_policy *policy, struct tls_info *out);
/* "TLSv1.3:TLS_AES_256_GCM_SHA384 verified=yes", "... verified=yes(dane-ee)"
 * or "... verified=no(self-signed certificate)"; cut to outlen. Returns
 * out. */
const char *tls_info_format(const struct tls_info *info, char *out, size_t outlen);
/* Does a finished handshake satisfy the policy? */
bool tls_policy_met(const struct tls_policy *policy, const struct tls_info *info);
/* OpenSSL's reason for an error code ("wrong version number"); "" for 0
 * and other codes of no library (libevent queues SSL_get_error's values
 * among OpenSSL's codes). */
const char *tls_error_reason(unsigned long code, char *out, size_t outlen);

#endif
