/*
 * test_config.c - settings as the server will read them: load a config,
 * evaluate its rules through config_eval with real variable values, read
 * sections and defaults.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

#include <cmocka.h>

#include "config/settings.h"
#include "../support/config_load.h"

static void set_var(struct rule_ctx *ctx, enum rule_var v, const char *s)
{
	ctx->var[v].ptr = s;
	ctx->var[v].len = strlen(s);
}

static const char user_example[] =
	"[queue.outbound]\n"
	"next-hop = [ { if = \"rcpt-domain\", in-list = \"list/domains\", then = \"lmtp\" },\n"
	"             { else = false } ]\n"
	"ip-strategy = \"ipv4-then-ipv6\"\n"
	"hostname = \"mx.mydomain.net\"\n"
	"[queue.outbound.source-ip]\n"
	"v4 = [\"10.0.0.10\", \"10.0.0.11\"]\n"
	"v6 = [\"a::b\", \"a::c\"]\n"
	"[queue.outbound.limits]\nmx = 7\nmultihomed = 2\n"
	"[queue.outbound.timeouts]\nconnect = \"3m\"\ndata = \"10m\"\n"
	"[remote.\"lmtp\"]\naddress = \"localhost\"\nport = 24\nprotocol = \"lmtp\"\n"
	"concurrency = 10\ntimeout = \"1m\"\n"
	"[remote.\"lmtp\".tls]\nimplicit = false\nallow-invalid-certs = true\n"
	"[list]\ndomains = [\"foobar.net\", \"foobar.org\"]\n";

static void test_user_example_next_hop(void **state)
{
	struct config *cfg = load(user_example);
	struct rule_ctx ctx = { 0 };
	const struct cfg_value *v;

	(void)state;
	set_var(&ctx, RULE_VAR_RCPT_DOMAIN, "foobar.org");
	v = config_eval(cfg, CFG_QUEUE_OUTBOUND_NEXT_HOP, &ctx);
	assert_false(v->none);
	assert_string_equal(v->str, "lmtp");

	set_var(&ctx, RULE_VAR_RCPT_DOMAIN, "example.com");
	v = config_eval(cfg, CFG_QUEUE_OUTBOUND_NEXT_HOP, &ctx);
	assert_true(v->none); /* deliver by MX */

	/* Membership is exact: a subdomain is not in the list. */
	set_var(&ctx, RULE_VAR_RCPT_DOMAIN, "a.foobar.org");
	assert_true(config_eval(cfg, CFG_QUEUE_OUTBOUND_NEXT_HOP, &ctx)->none);
	config_free(cfg);
}

static void test_user_example_values(void **state)
{
	struct config *cfg = load(user_example);
	const struct cfg_value *v;
	const struct cfg_section *lmtp;

	(void)state;
	assert_int_equal(config_get(cfg, CFG_QUEUE_OUTBOUND_LIMITS_MX)->num, 7);
	assert_int_equal(config_get(cfg, CFG_QUEUE_OUTBOUND_TIMEOUT_CONNECT)->num, 180000);
	assert_int_equal(config_get(cfg, CFG_QUEUE_OUTBOUND_TIMEOUT_DATA)->num, 600000);
	/* not in the file: SPEC defaults */
	assert_int_equal(config_get(cfg, CFG_QUEUE_OUTBOUND_TIMEOUT_GREETING)->num, 300000);
	assert_int_equal(config_get(cfg, CFG_QUEUE_SCHEDULE_EXPIRE)->num, 5 * 86400000LL);
	assert_int_equal(config_get(cfg, CFG_QUEUE_OUTBOUND_TLS_STARTTLS)->num, CFG_POLICY_OPTIONAL);
	assert_int_equal(config_get(cfg, CFG_QUEUE_OUTBOUND_IP_STRATEGY)->num, CFG_IPV4_THEN_IPV6);
	v = config_get(cfg, CFG_QUEUE_SCHEDULE_RETRY);
	assert_int_equal(v->n_items, 8);
	assert_int_equal(v->items[7].num, 2 * 3600000);

	v = config_get(cfg, CFG_QUEUE_OUTBOUND_SOURCE_IP_V6);
	assert_int_equal(v->n_items, 2);
	assert_int_equal(v->items[0].addr.family, AF_INET6);
	assert_int_equal(v->items[1].addr.bytes[15], 0x0c);

	lmtp = config_section_find(cfg, CFG_GROUP_REMOTE, "lmtp", 4);
	assert_non_null(lmtp);
	assert_int_equal(cfg_section_get(lmtp, CFG_REMOTE_PORT)->num, 24);
	assert_int_equal(cfg_section_get(lmtp, CFG_REMOTE_PROTOCOL)->num, CFG_PROTO_LMTP);
	assert_int_equal(cfg_section_get(lmtp, CFG_REMOTE_TIMEOUT)->num, 60000);
	assert_int_equal(cfg_section_get(lmtp, CFG_REMOTE_TLS_ALLOW_INVALID_CERTS)->num, 1);
	assert_int_equal(cfg_section_get(lmtp, CFG_REMOTE_CONCURRENCY)->num, 10);
	assert_null(config_section_find(cfg, CFG_GROUP_REMOTE, "lmt", 3));
	config_free(cfg);
}

/* A thirteen-entry rule: each entry is reachable and wins only when the
 * entries before it do not hold. */
static void test_long_rule_in_order(void **state)
{
	struct strbuf text;
	struct config *cfg;
	struct rule_ctx ctx = { 0 };
	char domain[32];

	(void)state;
	strbuf_init(&text);
	strbuf_puts(&text, "[queue.outbound.limits]\nmx = [\n");
	for (int i = 1; i <= 12; i++)
		strbuf_printf(&text, "  { if = \"rcpt-domain\", ends-with = \"d%d.example\", then = %d },\n",
			      i, i);
	strbuf_puts(&text, "  { else = 99 } ]\n");
	cfg = load(strbuf_str(&text));
	for (int i = 1; i <= 12; i++) {
		snprintf(domain, sizeof(domain), "d%d.example", i);
		set_var(&ctx, RULE_VAR_RCPT_DOMAIN, domain);
		assert_int_equal(config_eval(cfg, CFG_QUEUE_OUTBOUND_LIMITS_MX, &ctx)->num, i);
	}
	/* "d11.example" also ends with "1.example" but not "d1.example": 11.
	 * "xd1.example" ends with "d1.example": the first entry wins. */
	set_var(&ctx, RULE_VAR_RCPT_DOMAIN, "xd1.example");
	assert_int_equal(config_eval(cfg, CFG_QUEUE_OUTBOUND_LIMITS_MX, &ctx)->num, 1);
	set_var(&ctx, RULE_VAR_RCPT_DOMAIN, "other.example");
	assert_int_equal(config_eval(cfg, CFG_QUEUE_OUTBOUND_LIMITS_MX, &ctx)->num, 99);
	config_free(cfg);
	strbuf_free(&text);
}

static void test_relay_by_client_address(void **state)
{
	struct config *cfg = load(
		"[session.rcpt]\n"
		"relay = [ { if = \"remote-ip\", eq = \"127.0.0.0/8\", then = true },\n"
		"          { if = \"remote-ip\", eq = \"::1\", then = true },\n"
		"          { else = false } ]\n");
	struct rule_ctx ctx = { 0 };

	(void)state;
	assert_true(ipaddr_parse("127.0.0.2", 9, &ctx.remote_ip));
	assert_int_equal(config_eval(cfg, CFG_SESSION_RCPT_RELAY, &ctx)->num, 1);
	assert_true(ipaddr_parse("::ffff:127.0.0.1", 16, &ctx.remote_ip));
	assert_int_equal(config_eval(cfg, CFG_SESSION_RCPT_RELAY, &ctx)->num, 1);
	assert_true(ipaddr_parse("::1", 3, &ctx.remote_ip));
	assert_int_equal(config_eval(cfg, CFG_SESSION_RCPT_RELAY, &ctx)->num, 1);
	assert_true(ipaddr_parse("192.0.2.1", 9, &ctx.remote_ip));
	assert_int_equal(config_eval(cfg, CFG_SESSION_RCPT_RELAY, &ctx)->num, 0);
	assert_true(ipaddr_parse("::2", 3, &ctx.remote_ip));
	assert_int_equal(config_eval(cfg, CFG_SESSION_RCPT_RELAY, &ctx)->num, 0);
	config_free(cfg);
}

static void test_source_ip_depends_on_mx(void **state)
{
	struct config *cfg = load(
		"[queue.outbound.source-ip]\n"
		"v4 = [ { if = \"mx\", ends-with = \".example.net\", then = [\"192.0.2.1\", \"192.0.2.2\"] } ]\n");
	struct rule_ctx ctx = { 0 };
	const struct cfg_value *v;

	(void)state;
	set_var(&ctx, RULE_VAR_MX, "mx1.example.net");
	v = config_eval(cfg, CFG_QUEUE_OUTBOUND_SOURCE_IP_V4, &ctx);
	assert_int_equal(v->n_items, 2);
	set_var(&ctx, RULE_VAR_MX, "mx.example.org");
	v = config_eval(cfg, CFG_QUEUE_OUTBOUND_SOURCE_IP_V4, &ctx);
	assert_int_equal(v->n_items, 0); /* no else: the system's choice */
	config_free(cfg);
}

static void test_defaults_follow_hostname(void **state)
{
	struct config *cfg = load("[server]\nhostname = \"mx.example.org\"\n"
				  "[remote.sub]\naddress = \"192.0.2.1\"\nport = 465\nprotocol = \"smtp\"\n");
	const struct cfg_section *sub;

	(void)state;
	assert_string_equal(config_get(cfg, CFG_QUEUE_OUTBOUND_HOSTNAME)->str, "mx.example.org");
	assert_string_equal(config_get(cfg, CFG_REPORT_DSN_FROM_ADDRESS)->str,
			    "MAILER-DAEMON@mx.example.org");
	assert_string_equal(config_get(cfg, CFG_QUEUE_PATH)->str, "/tmp/var/spool");
	sub = config_section_find(cfg, CFG_GROUP_REMOTE, "sub", 3);
	assert_int_equal(cfg_section_get(sub, CFG_REMOTE_TLS_IMPLICIT)->num, 1); /* port 465 */
	config_free(cfg);
}

static void test_errors_return_null(void **state)
{
	struct diags diags;
	const char *text = "[queue.outbound.limits]\nmx = \"seven\"\nmultihomed = 0\n";

	(void)state;
	diags_init(&diags, "bad.toml");
	assert_null(config_load_buffer(text, strlen(text), "/tmp", 0, &diags));
	assert_int_equal(diags.errors, 2);
	diags_free(&diags);
}

static void test_strict_turns_warnings_into_errors(void **state)
{
	struct diags diags;
	const char *text = "[queue]\npaht = \"/x\"\n";
	struct config *cfg;

	(void)state;
	diags_init(&diags, "w.toml");
	cfg = config_load_buffer(text, strlen(text), "/tmp", 0, &diags);
	assert_non_null(cfg);
	assert_int_equal(diags.errors, 0);
	assert_int_equal(diags.len, 1);
	assert_int_equal(diags.items[0].level, DIAG_WARNING);
	assert_non_null(strstr(diags.items[0].message, "did you mean queue.path?"));
	config_free(cfg);
	diags_free(&diags);

	diags_init(&diags, "w.toml");
	assert_null(config_load_buffer(text, strlen(text), "/tmp", CONFIG_STRICT, &diags));
	assert_int_equal(diags.errors, 1);
	diags_free(&diags);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_user_example_next_hop),
		cmocka_unit_test(test_user_example_values),
		cmocka_unit_test(test_long_rule_in_order),
		cmocka_unit_test(test_relay_by_client_address),
		cmocka_unit_test(test_source_ip_depends_on_mx),
		cmocka_unit_test(test_defaults_follow_hostname),
		cmocka_unit_test(test_errors_return_null),
		cmocka_unit_test(test_strict_turns_warnings_into_errors),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
