/*
 * test_route.c - the policy steps of delivery by MX, as pure functions:
 * reading MX/A/AAAA record data, ordering MX hosts (preference, shuffling
 * of equals, null MX, limits.mx), ordering addresses per ip-strategy and
 * limits.multihomed, and drawing source addresses per connection.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include <cmocka.h>

#include "config/settings.h"
#include "../support/config_load.h"
#include "dns/rdata.h"
#include "dns/resolver.h"
#include "route/plan.h"

static struct ipaddr ip(const char *s)
{
	struct ipaddr a;

	assert_true(ipaddr_parse(s, strlen(s), &a));
	return a;
}

/* ---- record data ---- */

static void test_mx_rdata(void **state)
{
	static const uint8_t mx[] = { 0, 10, 3, 'M', 'x', '1', 7, 'e', 'x', 'a', 'm', 'p', 'l', 'e', 0 };
	static const uint8_t null_mx[] = { 0, 0, 0 };
	char name[DNS_NAME_MAX + 1];
	uint16_t pref;

	(void)state;
	assert_true(dns_rdata_mx(mx, sizeof(mx), &pref, name, sizeof(name)));
	assert_int_equal(pref, 10);
	assert_string_equal(name, "mx1.example"); /* lower-cased */
	assert_true(dns_rdata_mx(null_mx, sizeof(null_mx), &pref, name, sizeof(name)));
	assert_string_equal(name, "");
	/* Every shorter prefix is refused, never read past. */
	for (size_t n = 0; n < sizeof(mx); n++)
		assert_false(dns_rdata_mx(mx, n, &pref, name, sizeof(name)));
	/* Trailing bytes after the name: not an MX record. */
	{
		uint8_t longer[sizeof(mx) + 1];

		memcpy(longer, mx, sizeof(mx));
		longer[sizeof(mx)] = 0;
		assert_false(dns_rdata_mx(longer, sizeof(longer), &pref, name, sizeof(name)));
	}
}

static void test_name_refusals(void **state)
{
	static const uint8_t pointer[] = { 3, 'm', 'x', '1', 0xc0, 12 };
	static const uint8_t space[] = { 3, 'm', ' ', '1', 0 };
	static const uint8_t dot[] = { 3, 'm', '.', '1', 0 };
	static const uint8_t label64[] = { 64 };
	uint8_t long_name[300];
	char out[DNS_NAME_MAX + 1];
	size_t pos = 0;

	(void)state;
	assert_int_equal(dns_name_text(pointer, sizeof(pointer), out, sizeof(out)), 0);
	assert_int_equal(dns_name_text(space, sizeof(space), out, sizeof(out)), 0);
	assert_int_equal(dns_name_text(dot, sizeof(dot), out, sizeof(out)), 0);
	assert_int_equal(dns_name_text(label64, sizeof(label64), out, sizeof(out)), 0);
	/* 254 characters of text: one too many. */
	while (pos + 64 < sizeof(long_name)) {
		long_name[pos++] = 63;
		memset(long_name + pos, 'a', 63);
		pos += 63;
	}
	long_name[pos++] = 0;
	assert_int_equal(dns_name_text(long_name, pos, out, sizeof(out)), 0);
	/* 4 labels of 63 = 255 characters with dots: refused; 3 + one of 61 fits (253). */
	long_name[192] = 61;
	memset(long_name + 193, 'b', 61);
	long_name[254] = 0;
	assert_int_equal(dns_name_text(long_name, 255, out, sizeof(out)), 255);
	assert_int_equal(strlen(out), 253);
	/* An output buffer too small is refused up front. */
	assert_int_equal(dns_name_text(long_name, 255, out, 100), 0);
}

/* TLSA rdata, and which records DANE for SMTP can use (RFC 7672 §3.1). */
static void test_tlsa_rdata_and_usability(void **state)
{
	uint8_t rd[3 + 64];
	struct dns_tlsa t;

	(void)state;
	memset(rd, 0xab, sizeof(rd));
	assert_false(dns_rdata_tlsa(rd, 3, &t));    /* parameters without data */
	rd[0] = 3, rd[1] = 1, rd[2] = 1;
	assert_true(dns_rdata_tlsa(rd, 3 + 32, &t));
	assert_int_equal(t.usage, 3);
	assert_int_equal(t.selector, 1);
	assert_int_equal(t.mtype, 1);
	assert_ptr_equal(t.data, rd + 3);
	assert_int_equal(t.len, 32);
	assert_true(route_tlsa_usable(&t));         /* DANE-EE SPKI SHA2-256 */
	t.len = 31;
	assert_false(route_tlsa_usable(&t));        /* a digest of the wrong length */
	t.len = 64, t.mtype = 2;
	assert_true(route_tlsa_usable(&t));         /* SHA2-512 */
	t.mtype = 3;
	assert_false(route_tlsa_usable(&t));        /* unknown matching type */
	t.mtype = 0, t.len = 5;
	assert_true(route_tlsa_usable(&t));         /* the full key */
	t.usage = 2, t.selector = 0, t.mtype = 1, t.len = 32;
	assert_true(route_tlsa_usable(&t));         /* DANE-TA */
	t.usage = 1;
	assert_false(route_tlsa_usable(&t));        /* PKIX-EE: not for SMTP */
	t.usage = 0;
	assert_false(route_tlsa_usable(&t));        /* PKIX-TA: not for SMTP */
	t.usage = 3, t.selector = 2;
	assert_false(route_tlsa_usable(&t));        /* unknown selector */
}

static void test_addr_rdata(void **state)
{
	static const uint8_t a[] = { 192, 0, 2, 7 };
	uint8_t aaaa[16] = { 0x20, 0x01, 0x0d, 0xb8 };
	struct ipaddr out;
	char text[IPADDR_STRLEN];

	(void)state;
	aaaa[15] = 1;
	assert_true(dns_rdata_addr(a, 4, DNS_TYPE_A, &out));
	assert_string_equal(ipaddr_format(&out, text, sizeof(text)), "192.0.2.7");
	assert_true(dns_rdata_addr(aaaa, 16, DNS_TYPE_AAAA, &out));
	assert_string_equal(ipaddr_format(&out, text, sizeof(text)), "2001:db8::1");
	assert_false(dns_rdata_addr(a, 3, DNS_TYPE_A, &out));
	assert_false(dns_rdata_addr(aaaa, 4, DNS_TYPE_AAAA, &out));
	assert_false(dns_rdata_addr(a, 4, DNS_TYPE_MX, &out));
}

/* ---- MX order ---- */

static void test_mx_sorted_and_limited(void **state)
{
	struct route_mx mx[] = { { 30, "c" }, { 10, "a" }, { 20, "b" }, { 40, "d" } };

	(void)state;
	assert_int_equal(route_order_mx(mx, 4, 3), 3);
	assert_string_equal(mx[0].name, "a");
	assert_string_equal(mx[1].name, "b");
	assert_string_equal(mx[2].name, "c");
	assert_int_equal(mx[2].preference, 30);
}

static void test_mx_equal_preferences_shuffled(void **state)
{
	unsigned first[3] = { 0 }, last_is_z = 0;

	(void)state;
	for (int round = 0; round < 600; round++) {
		struct route_mx mx[] = { { 5, "x" }, { 5, "y" }, { 5, "w" }, { 9, "z" } };

		assert_int_equal(route_order_mx(mx, 4, 10), 4);
		first[mx[0].name[0] == 'x' ? 0 : mx[0].name[0] == 'y' ? 1 : 2]++;
		last_is_z += strcmp(mx[3].name, "z") == 0;
	}
	/* The worse preference never moves up; each equal host comes first
	 * about a third of the time (200 expected, far from 0 or 600). */
	assert_int_equal(last_is_z, 600);
	for (int i = 0; i < 3; i++)
		assert_in_range(first[i], 120, 280);
}

static void test_null_mx(void **state)
{
	struct route_mx only[] = { { 0, "" } };
	struct route_mx beside[] = { { 0, "" }, { 10, "real" } };

	(void)state;
	assert_int_equal(route_order_mx(only, 1, 5), (size_t)-1);
	/* A "." beside real hosts is the domain's mistake: the real host is tried. */
	assert_int_equal(route_order_mx(beside, 2, 5), 1);
	assert_string_equal(beside[0].name, "real");
}

/* ---- address order ---- */

static void test_address_strategies(void **state)
{
	struct ipaddr v4[] = { ip("192.0.2.1"), ip("192.0.2.2"), ip("192.0.2.3") };
	struct ipaddr v6[] = { ip("2001:db8::1"), ip("2001:db8::2") };
	struct ipaddr out[8];
	char t[IPADDR_STRLEN];

	(void)state;
	assert_int_equal(route_order_addrs(v4, 3, v6, 2, CFG_IPV4_ONLY, 8, out), 3);
	assert_int_equal(out[2].family, AF_INET);
	assert_int_equal(route_order_addrs(v4, 3, v6, 2, CFG_IPV6_ONLY, 8, out), 2);
	assert_int_equal(out[0].family, AF_INET6);
	assert_int_equal(out[1].family, AF_INET6);
	/* -then- modes: every address of the preferred family, then the other's. */
	assert_int_equal(route_order_addrs(v4, 3, v6, 2, CFG_IPV4_THEN_IPV6, 8, out), 5);
	assert_string_equal(ipaddr_format(&out[0], t, sizeof(t)), "192.0.2.1");
	assert_string_equal(ipaddr_format(&out[2], t, sizeof(t)), "192.0.2.3");
	assert_string_equal(ipaddr_format(&out[3], t, sizeof(t)), "2001:db8::1");
	assert_int_equal(route_order_addrs(v4, 3, v6, 2, CFG_IPV6_THEN_IPV4, 8, out), 5);
	assert_string_equal(ipaddr_format(&out[1], t, sizeof(t)), "2001:db8::2");
	assert_string_equal(ipaddr_format(&out[2], t, sizeof(t)), "192.0.2.1");
	/* The preferred family missing: the other one still gets its turn. */
	assert_int_equal(route_order_addrs(v4, 3, NULL, 0, CFG_IPV6_THEN_IPV4, 8, out), 3);
	assert_int_equal(out[0].family, AF_INET);
	/* limits.multihomed cuts the combined list. */
	assert_int_equal(route_order_addrs(v4, 1, v6, 2, CFG_IPV4_THEN_IPV6, 2, out), 2);
	assert_int_equal(out[0].family, AF_INET);
	assert_int_equal(out[1].family, AF_INET6);
	assert_true(route_strategy_wants(CFG_IPV4_ONLY, AF_INET));
	assert_false(route_strategy_wants(CFG_IPV4_ONLY, AF_INET6));
	assert_true(route_strategy_wants(CFG_IPV6_THEN_IPV4, AF_INET));
}

/* ---- source addresses ---- */

static void test_source_spreads_per_connection(void **state)
{
	struct config *cfg = load("[queue.outbound.source-ip]\n"
				  "v4 = [\"127.0.0.2\", \"127.0.0.3\", \"127.0.0.4\"]\n"
				  "v6 = [\"fd00::2\"]\n");
	struct rule_ctx ctx;
	unsigned seen[3] = { 0 };
	struct ipaddr src;

	(void)state;
	memset(&ctx, 0, sizeof(ctx));
	for (int i = 0; i < 300; i++) {
		route_pick_source(cfg, &ctx, AF_INET, &src);
		assert_int_equal(src.family, AF_INET);
		assert_in_range(src.bytes[3], 2, 4);
		seen[src.bytes[3] - 2]++;
	}
	for (int i = 0; i < 3; i++)
		assert_in_range(seen[i], 50, 150);
	route_pick_source(cfg, &ctx, AF_INET6, &src);
	assert_int_equal(src.family, AF_INET6);
	config_free(cfg);
}

static void test_source_empty_and_by_mx(void **state)
{
	struct config *cfg = load("[queue.outbound.source-ip]\n"
				  "v4 = [ { if = \"mx\", ends-with = \".special.example\", then = \"127.0.0.9\" },\n"
				  "       { else = [] } ]\n");
	struct rule_ctx ctx;
	struct route_conn_vars vars;
	struct ipaddr src, remote = ip("127.0.0.10");

	(void)state;
	memset(&ctx, 0, sizeof(ctx));
	route_conn_ctx(&ctx, "mx.other.example", &remote, NULL, &vars);
	route_pick_source(cfg, &ctx, AF_INET, &src);
	assert_int_equal(src.family, 0); /* the system chooses */
	route_conn_ctx(&ctx, "mx1.special.example", &remote, NULL, &vars);
	route_pick_source(cfg, &ctx, AF_INET, &src);
	assert_int_equal(src.family, AF_INET);
	assert_int_equal(src.bytes[3], 9);
	assert_string_equal(ctx.var[RULE_VAR_REMOTE_IP].ptr, "127.0.0.10");
	route_pick_source(cfg, &ctx, AF_INET6, &src);
	assert_int_equal(src.family, 0);
	config_free(cfg);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_mx_rdata),
		cmocka_unit_test(test_name_refusals),
		cmocka_unit_test(test_addr_rdata),
		cmocka_unit_test(test_tlsa_rdata_and_usability),
		cmocka_unit_test(test_mx_sorted_and_limited),
		cmocka_unit_test(test_mx_equal_preferences_shuffled),
		cmocka_unit_test(test_null_mx),
		cmocka_unit_test(test_address_strategies),
		cmocka_unit_test(test_source_spreads_per_connection),
		cmocka_unit_test(test_source_empty_and_by_mx),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
