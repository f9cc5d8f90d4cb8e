/*
 * test_tls.c - the parts of outbound TLS that need no peer: the summary
 * text of a handshake, names and IP literals (SNI and the name checked),
 * the policy check, OpenSSL error reasons, the policy the configuration
 * gives a connection (route/tlspolicy.h), and the memory of hosts whose
 * handshakes failed (outbound/tls_fallback.h). Handshakes against real
 * servers are in tests/system/test_tls_outbound.py.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include <cmocka.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "config/settings.h"
#include "../support/config_load.h"
#include "outbound/tls_fallback.h"
#include "route/plan.h"
#include "route/tlspolicy.h"
#include "tls/tls.h"

static struct ipaddr ip(const char *s)
{
	struct ipaddr a;

	assert_true(ipaddr_parse(s, strlen(s), &a));
	return a;
}

/* ---- tls/tls.h ---- */

static void test_summary_format(void **state)
{
	struct tls_info info = { "TLSv1.3", "TLS_AES_256_GCM_SHA384", true, "", -1 };
	char out[TLS_SUMMARY_MAX], small[12];

	(void)state;
	assert_string_equal(tls_info_format(&info, out, sizeof(out)),
			    "TLSv1.3:TLS_AES_256_GCM_SHA384 verified=yes");
	info.dane_usage = 3;
	assert_string_equal(tls_info_format(&info, out, sizeof(out)),
			    "TLSv1.3:TLS_AES_256_GCM_SHA384 verified=yes(dane-ee)");
	info.dane_usage = 2;
	assert_string_equal(tls_info_format(&info, out, sizeof(out)),
			    "TLSv1.3:TLS_AES_256_GCM_SHA384 verified=yes(dane-ta)");
	info.dane_usage = -1;
	info.verified = false;
	snprintf(info.why_not, sizeof(info.why_not), "unable to get local issuer certificate");
	assert_string_equal(tls_info_format(&info, out, sizeof(out)),
			    "TLSv1.3:TLS_AES_256_GCM_SHA384 verified=no(unable to get local issuer "
			    "certificate)");
	/* Cut to the buffer, never past it. */
	assert_string_equal(tls_info_format(&info, small, sizeof(small)), "TLSv1.3:TLS");
	/* The longest fields still fit the summary. */
	memset(info.protocol, 'p', sizeof(info.protocol) - 1);
	memset(info.cipher, 'c', sizeof(info.cipher) - 1);
	memset(info.why_not, 'w', sizeof(info.why_not) - 1);
	tls_info_format(&info, out, sizeof(out));
	assert_int_equal(out[strlen(out) - 1], ')');
}

static void test_policy_met(void **state)
{
	struct tls_info verified = { "TLSv1.2", "x", true, "", -1 };
	struct tls_info unverified = { "TLSv1.2", "x", false, "hostname mismatch", -1 };
	struct tls_info by_dane = { "TLSv1.2", "x", true, "", 3 };
	struct tls_policy any = { TLS_USE_OFFERED, TLS_VERIFY_NONE, NULL, 0 };
	struct tls_policy named = { TLS_USE_REQUIRED, TLS_VERIFY_NAME, NULL, 0 };
	struct tls_policy dane = { TLS_USE_REQUIRED, TLS_VERIFY_DANE, NULL, 0 };

	(void)state;
	assert_true(tls_policy_met(&any, &verified));
	assert_true(tls_policy_met(&any, &unverified));
	assert_true(tls_policy_met(&named, &verified));
	assert_false(tls_policy_met(&named, &unverified));
	/* DANE is met by a TLSA match only, not by the trust store. */
	assert_true(tls_policy_met(&dane, &by_dane));
	assert_false(tls_policy_met(&dane, &verified));
	assert_false(tls_policy_met(&dane, &unverified));
}

static void test_name_ip(void **state)
{
	char out[IPADDR_STRLEN];

	(void)state;
	assert_true(tls_name_ip("192.0.2.1", out, sizeof(out)));
	assert_string_equal(out, "192.0.2.1");
	assert_true(tls_name_ip("2001:db8::1", out, sizeof(out)));
	assert_string_equal(out, "2001:db8::1");
	assert_true(tls_name_ip("[192.0.2.7]", out, sizeof(out)));
	assert_string_equal(out, "192.0.2.7");
	assert_true(tls_name_ip("[IPv6:2001:db8::2]", out, sizeof(out)));
	assert_string_equal(out, "2001:db8::2");
	assert_true(tls_name_ip("[ipv6:::1]", out, sizeof(out)));
	assert_string_equal(out, "::1");
	assert_false(tls_name_ip("mx.example.org", out, sizeof(out)));
	assert_false(tls_name_ip("localhost", out, sizeof(out)));
	assert_false(tls_name_ip("192.0.2.1.example", out, sizeof(out)));
	assert_false(tls_name_ip("[]", out, sizeof(out)));
	assert_false(tls_name_ip("", out, sizeof(out)));
}

static const struct tls_policy name_policy = { TLS_USE_REQUIRED, TLS_VERIFY_NAME, NULL, 0 };

/* The SSL carries SNI and the name to check for a host name, only the
 * address for an IP literal. */
static void test_ssl_names(void **state)
{
	char err[256];
	struct tls_client *tc = tls_client_new(err, sizeof(err));
	SSL *host, *lit;
	char *ip_text;

	(void)state;
	assert_non_null(tc);
	host = tls_client_ssl_new(tc, "mx.example.org", &name_policy, err, sizeof(err));
	assert_non_null(host);
	assert_string_equal(SSL_get_servername(host, TLSEXT_NAMETYPE_host_name), "mx.example.org");
	assert_string_equal(X509_VERIFY_PARAM_get0_host(SSL_get0_param(host), 0), "mx.example.org");
	lit = tls_client_ssl_new(tc, "[192.0.2.1]", &name_policy, err, sizeof(err));
	assert_non_null(lit);
	assert_null(SSL_get_servername(lit, TLSEXT_NAMETYPE_host_name));
	assert_null(X509_VERIFY_PARAM_get0_host(SSL_get0_param(lit), 0));
	ip_text = X509_VERIFY_PARAM_get1_ip_asc(SSL_get0_param(lit));
	assert_non_null(ip_text);
	assert_string_equal(ip_text, "192.0.2.1");
	OPENSSL_free(ip_text);
	SSL_free(host);
	SSL_free(lit);
	tls_client_free(tc);
}

static void test_error_reason(void **state)
{
	char out[128];

	(void)state;
	assert_string_equal(tls_error_reason(0, out, sizeof(out)), "");
	/* SSL_ERROR_SSL, as libevent queues it: no library, no reason. */
	assert_string_equal(tls_error_reason(SSL_ERROR_SSL, out, sizeof(out)), "");
	assert_string_equal(tls_error_reason(ERR_PACK(ERR_LIB_SSL, 0, SSL_R_WRONG_VERSION_NUMBER),
					     out, sizeof(out)),
			    "wrong version number");
}

/* ---- route/tlspolicy.h ---- */

static void test_policy_from_config(void **state)
{
	struct config *cfg = load(
		"[queue.outbound.tls]\n"
		"starttls = [ { if = \"mx\", eq = \"mx.strict.example\", then = \"require\" },\n"
		"             { if = \"mx\", ends-with = \".clear.example\", then = \"disable\" },\n"
		"             { else = \"optional\" } ]\n"
		"[remote.\"plain\"]\naddress = \"relay.example\"\nport = 25\nprotocol = \"smtp\"\n"
		"[remote.\"tls\"]\naddress = \"relay.example\"\nport = 465\nprotocol = \"smtp\"\n"
		"[remote.\"lax\"]\naddress = \"relay.example\"\nport = 2465\nprotocol = \"smtp\"\n"
		"tls.implicit = true\ntls.allow-invalid-certs = true\n");
	struct rule_ctx ctx;
	struct tls_policy p;
	char text[96];
	static const struct {
		const char *mx;
		enum tls_use use;
		enum tls_verify verify;
		const char *words;
	} mx[] = {
		{ "mx.strict.example", TLS_USE_REQUIRED, TLS_VERIFY_NAME,
		  "STARTTLS required, certificate verified for the host name" },
		{ "mx.clear.example", TLS_USE_NEVER, TLS_VERIFY_NONE, "never STARTTLS" },
		{ "mx.other.example", TLS_USE_OFFERED, TLS_VERIFY_NONE,
		  "STARTTLS when offered, any certificate" },
	};
	static const struct {
		const char *id;
		enum tls_use use;
		enum tls_verify verify;
		const char *words;
	} relays[] = {
		{ "plain", TLS_USE_OFFERED, TLS_VERIFY_NONE, "STARTTLS when offered, any certificate" },
		/* port 465: implicit TLS by default, verified */
		{ "tls", TLS_USE_IMPLICIT, TLS_VERIFY_NAME,
		  "TLS on connect, certificate verified for the host name" },
		{ "lax", TLS_USE_IMPLICIT, TLS_VERIFY_NONE, "TLS on connect, any certificate" },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(mx) / sizeof(mx[0]); i++) {
		memset(&ctx, 0, sizeof(ctx));
		route_conn_ctx(&ctx, mx[i].mx, NULL, NULL, NULL);
		route_tls_policy(cfg, NULL, &ctx, &p);
		assert_int_equal(p.use, mx[i].use);
		assert_int_equal(p.verify, mx[i].verify);
		assert_string_equal(route_tls_describe(&p, text, sizeof(text)), mx[i].words);
	}
	for (size_t i = 0; i < sizeof(relays) / sizeof(relays[0]); i++) {
		const struct cfg_section *rem = config_section_find(cfg, CFG_GROUP_REMOTE, relays[i].id,
								    strlen(relays[i].id));

		assert_non_null(rem);
		memset(&ctx, 0, sizeof(ctx));
		route_tls_policy(cfg, rem, &ctx, &p);
		assert_int_equal(p.use, relays[i].use);
		assert_int_equal(p.verify, relays[i].verify);
		assert_string_equal(route_tls_describe(&p, text, sizeof(text)), relays[i].words);
	}
	config_free(cfg);
}

/* ---- outbound/tls_fallback.h ---- */

#define HOUR (60 * 60 * 1000)

static void test_fallback_memory(void **state)
{
	struct tls_fallback *f = tls_fallback_new(HOUR);
	struct ipaddr a = ip("192.0.2.1"), b = ip("192.0.2.2"), v6 = ip("2001:db8::1");

	(void)state;
	assert_non_null(f);
	assert_false(tls_fallback_in_effect(f, "mx.example", &a, 0));
	tls_fallback_note(f, "mx.example", &a, 1000);
	/* Host and address together: the same name elsewhere still tries TLS. */
	assert_true(tls_fallback_in_effect(f, "mx.example", &a, 1000));
	assert_false(tls_fallback_in_effect(f, "mx.example", &b, 1000));
	assert_false(tls_fallback_in_effect(f, "mx2.example", &a, 1000));
	assert_false(tls_fallback_in_effect(f, "mx.example", &v6, 1000));
	/* A second note keeps the first time. */
	tls_fallback_note(f, "mx.example", &a, 2000);
	assert_int_equal(tls_fallback_count(f), 1);
	/* In effect for the hold time, then gone. */
	assert_true(tls_fallback_in_effect(f, "mx.example", &a, 1000 + HOUR - 1));
	assert_false(tls_fallback_in_effect(f, "mx.example", &a, 1000 + HOUR));
	assert_int_equal(tls_fallback_count(f), 0);
	tls_fallback_note(f, "mx.example", &v6, 5000);
	assert_true(tls_fallback_in_effect(f, "mx.example", &v6, 5000));
	tls_fallback_free(f);
}

static void test_fallback_bounded(void **state)
{
	struct tls_fallback *f = tls_fallback_new(HOUR);
	struct ipaddr a = ip("192.0.2.1");
	char host[32];

	(void)state;
	assert_non_null(f);
	for (int i = 0; i < TLS_FALLBACK_MAX + 10; i++) {
		snprintf(host, sizeof(host), "mx%d.example", i);
		tls_fallback_note(f, host, &a, i);
	}
	assert_int_equal(tls_fallback_count(f), TLS_FALLBACK_MAX);
	/* The oldest went first. */
	assert_false(tls_fallback_in_effect(f, "mx0.example", &a, 100000));
	assert_false(tls_fallback_in_effect(f, "mx9.example", &a, 100000));
	assert_true(tls_fallback_in_effect(f, "mx10.example", &a, 100000));
	snprintf(host, sizeof(host), "mx%d.example", TLS_FALLBACK_MAX + 9);
	assert_true(tls_fallback_in_effect(f, host, &a, 100000));
	tls_fallback_free(f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_summary_format),
		cmocka_unit_test(test_policy_met),
		cmocka_unit_test(test_name_ip),
		cmocka_unit_test(test_ssl_names),
		cmocka_unit_test(test_error_reason),
		cmocka_unit_test(test_policy_from_config),
		cmocka_unit_test(test_fallback_memory),
		cmocka_unit_test(test_fallback_bounded),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
