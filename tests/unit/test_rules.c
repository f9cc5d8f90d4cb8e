/*
 * test_rules.c - the rule language (rules.c), lists (lists.c) and address
 * prefixes (ipaddr.c): compile from TOML text, evaluate against contexts,
 * dump back, and every load error the contract names.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "config/diag.h"
#include "config/lists.h"
#include "config/rules.h"
#include "config/toml.h"
#include "util/arena.h"
#include "util/ipaddr.h"
#include "util/strbuf.h"
#include "../support/rule_values.h"

/* ------------------------------------------------------------------ */
/* Fixture: one TOML document, its lists, one compiled rule.           */

struct fx {
	struct arena arena;
	struct diags diags;
	struct toml_doc *doc;
	struct cfg_lists *lists;
	struct rule_regexes *regexes;
	char list_path[64]; /* a file:// list, removed at teardown */
};

static int fx_setup(void **state)
{
	struct fx *fx = calloc(1, sizeof(*fx));

	if (fx == NULL)
		return -1;
	arena_init(&fx->arena);
	diags_init(&fx->diags, "test.toml");
	*state = fx;
	return 0;
}

static int fx_teardown(void **state)
{
	struct fx *fx = *state;

	rule_regexes_free(fx->regexes);
	if (fx->doc != NULL)
		toml_doc_free(fx->doc);
	arena_free(&fx->arena);
	diags_free(&fx->diags);
	if (fx->list_path[0] != '\0')
		unlink(fx->list_path);
	free(fx);
	return 0;
}

static void fx_reset_diags(struct fx *fx)
{
	diags_free(&fx->diags);
	diags_init(&fx->diags, "test.toml");
}

/* Parse text (a whole document) into fx->doc, replacing any earlier one,
 * and load its [list] table. */
static void fx_load(struct fx *fx, const char *text)
{
	struct toml_error err;

	if (fx->doc != NULL)
		toml_doc_free(fx->doc);
	fx->doc = toml_parse(text, strlen(text), &err);
	if (fx->doc == NULL)
		fail_msg("TOML did not parse: %u:%u: %s\n%s", err.pos.line, err.pos.col,
			 err.message, text);
	fx->lists = cfg_lists_load(&fx->arena, toml_table_get(fx->doc->root, "list"), &fx->diags);
}

/* Compile key `k` of a document holding `k = <value>` plus extra text. */
static struct rule *compile_ex(struct fx *fx, const char *value, const char *extra,
			       uint32_t vars, bool allow_rules, unsigned flags)
{
	struct strbuf sb;
	struct rule *r;

	strbuf_init(&sb);
	strbuf_printf(&sb, "k = %s\n%s", value, extra != NULL ? extra : "");
	fx_load(fx, strbuf_str(&sb));
	strbuf_free(&sb);
	r = rule_compile(&fx->arena, "k", toml_table_get(fx->doc->root, "k"), vars, allow_rules,
			 flags, fx->lists, &fx->regexes, rule_value_parse, &fx->arena, &fx->diags);
	return r;
}

#define ALL_VARS ((1u << RULE_VAR_COUNT) - 1)

static const char *LISTS =
	"[list]\n"
	"domains = [\"example.com\", \"example.org\"]\n"
	"single = \"only.example\"\n";

static struct rule *compile_ok(struct fx *fx, const char *value)
{
	struct rule *r;

	fx_reset_diags(fx);
	r = compile_ex(fx, value, LISTS, ALL_VARS, true, 0);

	if (r == NULL || fx->diags.errors != 0) {
		for (size_t i = 0; i < fx->diags.len; i++)
			print_error("diag: %s: %s\n", fx->diags.items[i].key,
				    fx->diags.items[i].message);
		fail_msg("rule did not compile: %s", value);
	}
	return r;
}

/* The compile failed with an error on key "k" whose message holds every
 * word given (NULL-terminated). */
static void expect_error_words(struct fx *fx, struct rule *r, const char *value, ...)
{
	va_list ap;
	bool found = false;

	if (r != NULL)
		fail_msg("rule compiled but should not have: %s", value);
	assert_true(fx->diags.errors > 0);
	for (size_t i = 0; i < fx->diags.len && !found; i++) {
		const struct diag *d = &fx->diags.items[i];
		const char *w;
		bool all = true;

		if (d->level != DIAG_ERROR || strcmp(d->key, "k") != 0 || d->pos.line == 0)
			continue;
		va_start(ap, value);
		while ((w = va_arg(ap, const char *)) != NULL)
			if (strstr(d->message, w) == NULL)
				all = false;
		va_end(ap);
		found = all;
	}
	if (!found) {
		for (size_t i = 0; i < fx->diags.len; i++)
			print_error("diag: %s: %s\n", fx->diags.items[i].key,
				    fx->diags.items[i].message);
		fail_msg("no error with the expected words for: %s", value);
	}
}

#define EXPECT_ERROR(fx, vars, value, ...) do { \
	fx_reset_diags(fx); \
	expect_error_words((fx), compile_ex((fx), (value), LISTS, (vars), true, 0), (value), \
			   __VA_ARGS__, (const char *)NULL); \
} while (0)

/* ------------------------------------------------------------------ */
/* Contexts                                                            */

static void ctx_init(struct rule_ctx *ctx)
{
	memset(ctx, 0, sizeof(*ctx));
}

static void ctx_set(struct rule_ctx *ctx, enum rule_var v, const char *s)
{
	ctx->var[v].ptr = s;
	ctx->var[v].len = s != NULL ? strlen(s) : 0;
}

static void ctx_set_ip(struct rule_ctx *ctx, enum rule_var v, const char *text)
{
	struct ipaddr *a = v == RULE_VAR_REMOTE_IP ? &ctx->remote_ip : &ctx->local_ip;

	assert_true(ipaddr_parse(text, strlen(text), a));
	ctx_set(ctx, v, text);
}

/* The string value a rule yields, or "<none>" / "<list:N>". */
static const char *eval_str(const struct rule *r, const struct rule_ctx *ctx)
{
	static char buf[32];
	const struct cfg_value *v = rule_eval(r, ctx);

	assert_non_null(v);
	if (v->none)
		return "<none>";
	if (v->str == NULL) {
		snprintf(buf, sizeof(buf), "<list:%zu>", v->n_items);
		return buf;
	}
	return v->str;
}

/* Evaluate `if = var, op = operand` (operand as TOML text) with the
 * variable set to s: does the condition hold? */
static bool holds(struct fx *fx, const char *var, const char *op, const char *operand,
		  enum rule_var v, const char *s)
{
	char value[512];
	struct rule_ctx ctx;
	struct rule *r;

	snprintf(value, sizeof(value),
		 "[{ if = \"%s\", %s = %s, then = \"yes\" }, { else = \"no\" }]", var, op, operand);
	r = compile_ok(fx, value);
	ctx_init(&ctx);
	ctx_set(&ctx, v, s);
	return strcmp(eval_str(r, &ctx), "yes") == 0;
}

/* ------------------------------------------------------------------ */
/* Plain values                                                        */

static void test_plain_value(void **state)
{
	struct fx *fx = *state;
	struct rule_ctx ctx;
	struct strbuf sb;
	struct rule *r = compile_ok(fx, "\"relay\"");

	assert_true(r->plain);
	assert_int_equal(r->n_entries, 1);
	assert_null(r->entries[0].cond);
	ctx_init(&ctx);
	assert_string_equal(eval_str(r, &ctx), "relay");

	strbuf_init(&sb);
	rule_dump(r, &sb, rule_value_dump, NULL);
	assert_string_equal(strbuf_str(&sb), "\"relay\"");
	strbuf_free(&sb);

	/* For a list setting, a plain array of strings is a plain value. */
	r = compile_ex(fx, "[\"a\", \"b\"]", NULL, ALL_VARS, true, RULE_LIST_VALUED);
	assert_non_null(r);
	assert_true(r->plain);
	assert_int_equal(rule_eval(r, &ctx)->n_items, 2);

	/* And an empty array too. */
	r = compile_ex(fx, "[]", NULL, ALL_VARS, true, RULE_LIST_VALUED);
	assert_non_null(r);
	assert_true(r->plain);
	assert_int_equal(rule_eval(r, &ctx)->n_items, 0);

	/* A key that takes no rules still takes a plain value. */
	r = compile_ex(fx, "false", NULL, 0, false, 0);
	assert_non_null(r);
	assert_true(rule_eval(r, &ctx)->none);
}

/* ------------------------------------------------------------------ */
/* Operators                                                           */

static void test_op_eq_ne(void **state)
{
	struct fx *fx = *state;
	const enum rule_var D = RULE_VAR_RCPT_DOMAIN;

	assert_true(holds(fx, "rcpt-domain", "eq", "\"example.com\"", D, "example.com"));
	assert_false(holds(fx, "rcpt-domain", "eq", "\"example.com\"", D, "example.org"));
	assert_false(holds(fx, "rcpt-domain", "eq", "\"example.com\"", D, "EXAMPLE.COM"));
	assert_false(holds(fx, "rcpt-domain", "eq", "\"example.com\"", D, "example.co"));
	assert_false(holds(fx, "rcpt-domain", "eq", "\"example.com\"", D, "example.comm"));
	assert_true(holds(fx, "rcpt-domain", "equal-to", "\"example.com\"", D, "example.com"));
	assert_false(holds(fx, "rcpt-domain", "equal-to", "\"example.com\"", D, "x"));

	assert_false(holds(fx, "rcpt-domain", "ne", "\"example.com\"", D, "example.com"));
	assert_true(holds(fx, "rcpt-domain", "ne", "\"example.com\"", D, "example.org"));
	assert_false(holds(fx, "rcpt-domain", "not-equal-to", "\"example.com\"", D, "example.com"));
	assert_true(holds(fx, "rcpt-domain", "not-equal-to", "\"example.com\"", D, "x"));

	/* An unknown variable (NULL) is the empty string. */
	assert_true(holds(fx, "rcpt-domain", "eq", "\"\"", D, NULL));
	assert_false(holds(fx, "rcpt-domain", "eq", "\"a\"", D, NULL));
	assert_true(holds(fx, "sender", "eq", "\"\"", RULE_VAR_SENDER, ""));
}

static void test_op_starts_ends(void **state)
{
	struct fx *fx = *state;
	const enum rule_var S = RULE_VAR_SENDER;

	assert_true(holds(fx, "sender", "starts-with", "\"bounce-\"", S, "bounce-1@x"));
	assert_true(holds(fx, "sender", "starts-with", "\"bounce-\"", S, "bounce-"));
	assert_false(holds(fx, "sender", "starts-with", "\"bounce-\"", S, "bounce"));
	assert_false(holds(fx, "sender", "starts-with", "\"bounce-\"", S, "Bounce-1"));
	assert_false(holds(fx, "sender", "not-starts-with", "\"bounce-\"", S, "bounce-1@x"));
	assert_true(holds(fx, "sender", "not-starts-with", "\"bounce-\"", S, "info@x"));

	assert_true(holds(fx, "sender", "ends-with", "\"@example.com\"", S, "a@example.com"));
	assert_false(holds(fx, "sender", "ends-with", "\"@example.com\"", S, "a@example.co"));
	assert_false(holds(fx, "sender", "ends-with", "\"@example.com\"", S, "com"));
	assert_false(holds(fx, "sender", "not-ends-with", "\"@example.com\"", S, "a@example.com"));
	assert_true(holds(fx, "sender", "not-ends-with", "\"@example.com\"", S, "a@example.org"));
	assert_true(holds(fx, "sender", "not-ends-with", "\"@example.com\"", S, NULL));
}

static void test_op_matches(void **state)
{
	struct fx *fx = *state;
	const enum rule_var M = RULE_VAR_MX;
	struct rule_ctx ctx;
	struct rule *r;

	/* Unanchored POSIX ERE. */
	assert_true(holds(fx, "mx", "matches", "'mx[0-9]+\\.example'", M, "mx12.example.com"));
	assert_true(holds(fx, "mx", "matches", "'example'", M, "mx1.example.com"));
	assert_false(holds(fx, "mx", "matches", "'^example'", M, "mx1.example.com"));
	assert_true(holds(fx, "mx", "matches", "'\\.com$'", M, "mx1.example.com"));
	assert_false(holds(fx, "mx", "matches", "'(a|b)c'", M, "cab"));
	assert_true(holds(fx, "mx", "matches", "'(a|b)c'", M, "xbc"));
	/* GNU \w and \s work. */
	assert_true(holds(fx, "mx", "matches", "'^\\w+\\s\\w+$'", M, "ab cd"));
	assert_false(holds(fx, "mx", "matches", "'^\\w+\\s\\w+$'", M, "ab-cd"));
	assert_false(holds(fx, "mx", "not-matches", "'^mx'", M, "mx1"));
	assert_true(holds(fx, "mx", "not-matches", "'^mx'", M, "smtp1"));
	assert_true(holds(fx, "mx", "matches", "'^$'", M, NULL));

	/* Only the variable's len bytes are matched: the text need not be
	 * NUL-terminated and bytes past len are not seen. */
	r = compile_ok(fx, "[{ if = \"mx\", matches = '^abc$', then = \"yes\" }, { else = \"no\" }]");
	ctx_init(&ctx);
	ctx.var[RULE_VAR_MX].ptr = "abcdef";
	ctx.var[RULE_VAR_MX].len = 3;
	assert_string_equal(eval_str(r, &ctx), "yes");
	ctx.var[RULE_VAR_MX].len = 4;
	assert_string_equal(eval_str(r, &ctx), "no");

	r = compile_ok(fx, "[{ if = \"mx\", matches = 'd', then = \"yes\" }, { else = \"no\" }]");
	ctx.var[RULE_VAR_MX].len = 3;
	assert_string_equal(eval_str(r, &ctx), "no");
}

static void test_op_in_list(void **state)
{
	struct fx *fx = *state;
	const enum rule_var D = RULE_VAR_RCPT_DOMAIN;

	assert_true(holds(fx, "rcpt-domain", "in-list", "\"list/domains\"", D, "example.com"));
	assert_true(holds(fx, "rcpt-domain", "in-list", "\"list/domains\"", D, "example.org"));
	assert_false(holds(fx, "rcpt-domain", "in-list", "\"list/domains\"", D, "example.net"));
	assert_false(holds(fx, "rcpt-domain", "in-list", "\"list/domains\"", D, "Example.com"));
	assert_false(holds(fx, "rcpt-domain", "in-list", "\"list/domains\"", D, NULL));
	assert_true(holds(fx, "rcpt-domain", "in-list", "\"list/single\"", D, "only.example"));
	assert_false(holds(fx, "rcpt-domain", "not-in-list", "\"list/domains\"", D, "example.com"));
	assert_true(holds(fx, "rcpt-domain", "not-in-list", "\"list/domains\"", D, "example.net"));
}

static void test_in_list_file(void **state)
{
	struct fx *fx = *state;
	struct rule_ctx ctx;
	struct rule *r;
	char extra[256];
	int fd;
	FILE *f;

	strcpy(fx->list_path, "/tmp/tern-test-list-XXXXXX");
	fd = mkstemp(fx->list_path);
	assert_true(fd >= 0);
	f = fdopen(fd, "w");
	assert_non_null(f);
	fputs("  a.example \n\n\t\nb.example\r\n   \nc.example", f);
	fclose(f);

	snprintf(extra, sizeof(extra), "[list]\nfromfile = [\"inline.example\", \"file://%s\"]\n",
		 fx->list_path);
	r = compile_ex(fx, "[{ if = \"rcpt-domain\", in-list = \"list/fromfile\", then = \"yes\" }, "
		       "{ else = \"no\" }]", extra, ALL_VARS, true, 0);
	assert_non_null(r);
	assert_int_equal(fx->diags.errors, 0);
	assert_int_equal(cfg_list_count(cfg_lists_find(fx->lists, "fromfile", 8)), 4);

	ctx_init(&ctx);
	const char *yes[] = { "inline.example", "a.example", "b.example", "c.example" };
	const char *no[] = { "", " a.example", "a.example ", "b.example\r", "d.example" };
	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		ctx_set(&ctx, RULE_VAR_RCPT_DOMAIN, yes[i]);
		assert_string_equal(eval_str(r, &ctx), "yes");
	}
	for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++) {
		ctx_set(&ctx, RULE_VAR_RCPT_DOMAIN, no[i]);
		assert_string_equal(eval_str(r, &ctx), "no");
	}
}

/* ------------------------------------------------------------------ */
/* Groups                                                              */

static void test_groups(void **state)
{
	struct fx *fx = *state;
	struct rule_ctx ctx;
	struct rule *any, *all, *none;

	any = compile_ok(fx, "[{ any-of = [{ if = \"sender\", eq = \"a\" }, "
			 "{ if = \"sender\", eq = \"b\" }], then = \"yes\" }, { else = \"no\" }]");
	all = compile_ok(fx, "[{ all-of = [{ if = \"sender\", starts-with = \"a\" }, "
			 "{ if = \"sender\", ends-with = \"z\" }], then = \"yes\" }, { else = \"no\" }]");
	none = compile_ok(fx, "[{ none-of = [{ if = \"sender\", eq = \"a\" }, "
			  "{ if = \"sender\", eq = \"b\" }], then = \"yes\" }, { else = \"no\" }]");
	ctx_init(&ctx);

	ctx_set(&ctx, RULE_VAR_SENDER, "a");
	assert_string_equal(eval_str(any, &ctx), "yes");
	assert_string_equal(eval_str(all, &ctx), "no");
	assert_string_equal(eval_str(none, &ctx), "no");
	ctx_set(&ctx, RULE_VAR_SENDER, "b");
	assert_string_equal(eval_str(any, &ctx), "yes");
	assert_string_equal(eval_str(none, &ctx), "no");
	ctx_set(&ctx, RULE_VAR_SENDER, "c");
	assert_string_equal(eval_str(any, &ctx), "no");
	assert_string_equal(eval_str(none, &ctx), "yes");
	ctx_set(&ctx, RULE_VAR_SENDER, "a-z");
	assert_string_equal(eval_str(all, &ctx), "yes");
	ctx_set(&ctx, RULE_VAR_SENDER, "b-z");
	assert_string_equal(eval_str(all, &ctx), "no");

	/* Mixed nesting: all-of(sender eq x, none-of(rcpt-domain in-list, any-of(mx starts-with))) */
	any = compile_ok(fx, "[{ all-of = [{ if = \"sender\", eq = \"x\" }, { none-of = ["
			 "{ if = \"rcpt-domain\", in-list = \"list/domains\" }, "
			 "{ any-of = [{ if = \"mx\", starts-with = \"bad\" }] }] }], then = \"yes\" }, "
			 "{ else = \"no\" }]");
	ctx_init(&ctx);
	ctx_set(&ctx, RULE_VAR_SENDER, "x");
	ctx_set(&ctx, RULE_VAR_RCPT_DOMAIN, "other.example");
	ctx_set(&ctx, RULE_VAR_MX, "good.mx");
	assert_string_equal(eval_str(any, &ctx), "yes");
	ctx_set(&ctx, RULE_VAR_MX, "bad.mx");
	assert_string_equal(eval_str(any, &ctx), "no");
	ctx_set(&ctx, RULE_VAR_MX, "good.mx");
	ctx_set(&ctx, RULE_VAR_RCPT_DOMAIN, "example.com");
	assert_string_equal(eval_str(any, &ctx), "no");
}

/* A rule whose condition is `levels` groups (alternating kinds that all
 * pass the innermost test through) around `sender eq "deep"`. */
static char *nested_rule(unsigned levels)
{
	struct strbuf sb;
	char *s;

	strbuf_init(&sb);
	strbuf_puts(&sb, "[{ ");
	for (unsigned i = 0; i < levels; i++)
		strbuf_puts(&sb, i % 2 == 0 ? "any-of = [{ " : "all-of = [{ ");
	strbuf_puts(&sb, "if = \"sender\", eq = \"deep\"");
	for (unsigned i = 0; i < levels; i++)
		strbuf_puts(&sb, " }]");
	strbuf_puts(&sb, ", then = \"yes\" }, { else = \"no\" }]");
	s = strdup(strbuf_str(&sb));
	strbuf_free(&sb);
	assert_non_null(s);
	return s;
}

static void test_nesting_depth(void **state)
{
	struct fx *fx = *state;
	struct rule_ctx ctx;
	struct rule *r;
	char *text;

	text = nested_rule(RULE_MAX_DEPTH);
	r = compile_ok(fx, text);
	ctx_init(&ctx);
	ctx_set(&ctx, RULE_VAR_SENDER, "deep");
	assert_string_equal(eval_str(r, &ctx), "yes");
	ctx_set(&ctx, RULE_VAR_SENDER, "shallow");
	assert_string_equal(eval_str(r, &ctx), "no");
	free(text);

	text = nested_rule(RULE_MAX_DEPTH + 1);
	EXPECT_ERROR(fx, ALL_VARS, text, "nest", "10");
	free(text);

	/* Much deeper input is refused the same way, without deep recursion. */
	text = nested_rule(50);
	EXPECT_ERROR(fx, ALL_VARS, text, "nest");
	free(text);
}

/* ------------------------------------------------------------------ */
/* Addresses and priority                                              */

static void test_cidr(void **state)
{
	struct fx *fx = *state;
	struct rule_ctx ctx;
	struct rule *r4, *r6, *ne, *text, *local;

	r4 = compile_ok(fx, "[{ if = \"remote-ip\", eq = \"192.0.2.0/24\", then = \"yes\" }, "
			"{ else = \"no\" }]");
	r6 = compile_ok(fx, "[{ if = \"remote-ip\", equal-to = \"2001:db8::/32\", then = \"yes\" }, "
			"{ else = \"no\" }]");
	ne = compile_ok(fx, "[{ if = \"remote-ip\", ne = \"10.0.0.1\", then = \"yes\" }, "
			"{ else = \"no\" }]");
	text = compile_ok(fx, "[{ if = \"remote-ip\", starts-with = \"192.0.2.\", then = \"yes\" }, "
			  "{ else = \"no\" }]");
	local = compile_ok(fx, "[{ if = \"local-ip\", eq = \"::1\", then = \"yes\" }, "
			   "{ else = \"no\" }]");
	ctx_init(&ctx);

	/* No address: eq never holds, ne always does. */
	assert_string_equal(eval_str(r4, &ctx), "no");
	assert_string_equal(eval_str(ne, &ctx), "yes");

	ctx_set_ip(&ctx, RULE_VAR_REMOTE_IP, "192.0.2.7");
	assert_string_equal(eval_str(r4, &ctx), "yes");
	assert_string_equal(eval_str(r6, &ctx), "no");
	assert_string_equal(eval_str(ne, &ctx), "yes");
	assert_string_equal(eval_str(text, &ctx), "yes");
	ctx_set_ip(&ctx, RULE_VAR_REMOTE_IP, "192.0.3.7");
	assert_string_equal(eval_str(r4, &ctx), "no");
	assert_string_equal(eval_str(text, &ctx), "no");
	ctx_set_ip(&ctx, RULE_VAR_REMOTE_IP, "10.0.0.1");
	assert_string_equal(eval_str(ne, &ctx), "no");
	ctx_set_ip(&ctx, RULE_VAR_REMOTE_IP, "10.0.0.2");
	assert_string_equal(eval_str(ne, &ctx), "yes");

	/* IPv4 rules match the v4-mapped IPv6 form. */
	ctx_set_ip(&ctx, RULE_VAR_REMOTE_IP, "::ffff:192.0.2.200");
	assert_string_equal(eval_str(r4, &ctx), "yes");
	assert_string_equal(eval_str(r6, &ctx), "no");
	ctx_set_ip(&ctx, RULE_VAR_REMOTE_IP, "::ffff:192.0.3.1");
	assert_string_equal(eval_str(r4, &ctx), "no");
	/* ...but not other IPv6 addresses that end in the same bytes. */
	ctx_set_ip(&ctx, RULE_VAR_REMOTE_IP, "::192.0.2.1");
	assert_string_equal(eval_str(r4, &ctx), "no");
	ctx_set_ip(&ctx, RULE_VAR_REMOTE_IP, "::ffff:10.0.0.1");
	assert_string_equal(eval_str(ne, &ctx), "no");

	ctx_set_ip(&ctx, RULE_VAR_REMOTE_IP, "2001:db8:ffff::1");
	assert_string_equal(eval_str(r6, &ctx), "yes");
	assert_string_equal(eval_str(r4, &ctx), "no");
	ctx_set_ip(&ctx, RULE_VAR_REMOTE_IP, "2001:db9::1");
	assert_string_equal(eval_str(r6, &ctx), "no");

	assert_string_equal(eval_str(local, &ctx), "no");
	ctx_set_ip(&ctx, RULE_VAR_LOCAL_IP, "::1");
	assert_string_equal(eval_str(local, &ctx), "yes");
	ctx_set_ip(&ctx, RULE_VAR_LOCAL_IP, "::2");
	assert_string_equal(eval_str(local, &ctx), "no");
}

static void test_ipaddr(void **state)
{
	struct ipprefix p;
	struct ipaddr a;
	char buf[IPADDR_STRLEN];
	(void)state;

#define PFX(s) ipprefix_parse((s), strlen(s), &p)
	assert_true(PFX("10.0.0.0/8"));
	assert_int_equal(p.bits, 8);
	assert_true(PFX("10.1.2.3/8")); /* host bits cleared */
	assert_string_equal(ipaddr_format(&p.addr, buf, sizeof(buf)), "10.0.0.0");
	assert_true(PFX("10.1.2.3/12"));
	assert_string_equal(ipaddr_format(&p.addr, buf, sizeof(buf)), "10.0.0.0");
	assert_true(PFX("10.31.2.3/12"));
	assert_string_equal(ipaddr_format(&p.addr, buf, sizeof(buf)), "10.16.0.0");
	assert_true(PFX("2001:db8:1234::1/36"));
	assert_string_equal(ipaddr_format(&p.addr, buf, sizeof(buf)), "2001:db8:1000::");
	assert_true(PFX("0.0.0.0/0"));
	assert_true(PFX("::/0"));
	assert_true(PFX("::1/128"));
	assert_true(PFX("1.2.3.4"));
	assert_int_equal(p.bits, 32);
	assert_true(PFX("1.2.3.4/32"));

	assert_false(PFX(""));
	assert_false(PFX("/8"));
	assert_false(PFX("10.0.0.0/"));
	assert_false(PFX("10.0.0.0/33"));
	assert_false(PFX("::/129"));
	assert_false(PFX("10.0.0.0/08"));
	assert_false(PFX("10.0.0.0/+8"));
	assert_false(PFX("10.0.0.0/-1"));
	assert_false(PFX("10.0.0.0/8 "));
	assert_false(PFX(" 10.0.0.0/8"));
	assert_false(PFX("10.0.0.0/8/8"));
	assert_false(PFX("10.0.0.0/1000"));
	assert_false(PFX("10.0.0"));
	assert_false(PFX("10.0.0.256"));
	assert_false(PFX("fe80::1%eth0"));
	assert_false(PFX("[::1]"));
	assert_false(PFX("example.com"));
	assert_false(PFX("1111:2222:3333:4444:5555:6666:7777:8888:9999:aaaa:bbbb:cccc/64"));
#undef PFX
	/* Length-bounded: bytes past len are not read. */
	assert_true(ipprefix_parse("10.0.0.0/8xyz", 10, &p));
	assert_int_equal(p.bits, 8);
	assert_false(ipaddr_parse("10.0.0.1\0junk", 13, &a));
	assert_true(ipaddr_parse("10.0.0.1junk", 8, &a));
	assert_int_equal(a.family, AF_INET);

	struct ipaddr none = { 0 };
	assert_true(ipprefix_parse("0.0.0.0/0", 9, &p));
	assert_false(ipprefix_contains(&p, &none));
	assert_string_equal(ipaddr_format(&none, buf, sizeof(buf)), "");
	/* A v6 prefix over the mapped range holds plain IPv4 addresses. */
	assert_true(ipprefix_parse("::ffff:10.0.0.0/104", 19, &p));
	assert_true(ipaddr_parse("10.9.9.9", 8, &a));
	assert_true(ipprefix_contains(&p, &a));
	assert_true(ipaddr_parse("11.9.9.9", 8, &a));
	assert_false(ipprefix_contains(&p, &a));
}

static void test_priority(void **state)
{
	struct fx *fx = *state;
	struct rule_ctx ctx;
	struct rule *s, *i, *ne, *neg, *text, *r;

	s = compile_ok(fx, "[{ if = \"priority\", eq = \"010\", then = \"yes\" }, { else = \"no\" }]");
	i = compile_ok(fx, "[{ if = \"priority\", eq = 10, then = \"yes\" }, { else = \"no\" }]");
	ne = compile_ok(fx, "[{ if = \"priority\", ne = \"+10\", then = \"yes\" }, { else = \"no\" }]");
	neg = compile_ok(fx, "[{ if = \"priority\", eq = \"-5\", then = \"yes\" }, { else = \"no\" }]");
	text = compile_ok(fx, "[{ if = \"priority\", starts-with = \"1\", then = \"yes\" }, "
			  "{ else = \"no\" }]");
	ctx_init(&ctx);
	ctx.priority = 10;
	ctx_set(&ctx, RULE_VAR_PRIORITY, "10");
	assert_string_equal(eval_str(s, &ctx), "yes");
	assert_string_equal(eval_str(i, &ctx), "yes");
	assert_string_equal(eval_str(ne, &ctx), "no");
	assert_string_equal(eval_str(neg, &ctx), "no");
	assert_string_equal(eval_str(text, &ctx), "yes");
	ctx.priority = -5;
	ctx_set(&ctx, RULE_VAR_PRIORITY, "-5");
	assert_string_equal(eval_str(s, &ctx), "no");
	assert_string_equal(eval_str(i, &ctx), "no");
	assert_string_equal(eval_str(ne, &ctx), "yes");
	assert_string_equal(eval_str(neg, &ctx), "yes");
	assert_string_equal(eval_str(text, &ctx), "no");

	/* The whole int64 range. */
	r = compile_ok(fx, "[{ if = \"priority\", eq = \"-9223372036854775808\", then = \"min\" }, "
		       "{ if = \"priority\", eq = \"9223372036854775807\", then = \"max\" }, "
		       "{ else = \"no\" }]");
	ctx.priority = INT64_MIN;
	assert_string_equal(eval_str(r, &ctx), "min");
	ctx.priority = INT64_MAX;
	assert_string_equal(eval_str(r, &ctx), "max");
	EXPECT_ERROR(fx, ALL_VARS, "[{ if = \"priority\", eq = \"9223372036854775808\", "
		     "then = 1 }, { else = 2 }]", "integer");

	/* The integer form is dumped as an integer, the string as written. */
	struct strbuf sb;
	strbuf_init(&sb);
	rule_dump(i, &sb, rule_value_dump, NULL);
	rule_dump(s, &sb, rule_value_dump, NULL);
	assert_string_equal(strbuf_str(&sb),
			    "[{ if = \"priority\", eq = 10, then = \"yes\" }, { else = \"no\" }]"
			    "[{ if = \"priority\", eq = \"010\", then = \"yes\" }, { else = \"no\" }]");
	strbuf_free(&sb);
}

/* ------------------------------------------------------------------ */
/* Order                                                               */

static void test_many_entries(void **state)
{
	struct fx *fx = *state;
	struct rule_ctx ctx;
	struct strbuf sb;
	struct rule *r;
	char dom[32], want[32];

	strbuf_init(&sb);
	strbuf_putc(&sb, '[');
	for (int i = 1; i <= 14; i++)
		strbuf_printf(&sb, "{ if = \"rcpt-domain\", eq = \"d%d.example\", then = \"v%d\" }, ",
			      i, i);
	/* A later entry that also matches d11 must not win over the 11th. */
	strbuf_puts(&sb, "{ if = \"rcpt-domain\", ends-with = \".example\", then = \"late\" }, ");
	strbuf_puts(&sb, "{ else = \"default\" }]");
	r = compile_ok(fx, strbuf_str(&sb));
	strbuf_free(&sb);
	assert_int_equal(r->n_entries, 16);

	ctx_init(&ctx);
	for (int i = 1; i <= 14; i++) {
		snprintf(dom, sizeof(dom), "d%d.example", i);
		snprintf(want, sizeof(want), "v%d", i);
		ctx_set(&ctx, RULE_VAR_RCPT_DOMAIN, dom);
		assert_string_equal(eval_str(r, &ctx), want);
	}
	ctx_set(&ctx, RULE_VAR_RCPT_DOMAIN, "d1");
	assert_string_equal(eval_str(r, &ctx), "default");
	ctx_set(&ctx, RULE_VAR_RCPT_DOMAIN, "d15.example");
	assert_string_equal(eval_str(r, &ctx), "late");
	ctx_set(&ctx, RULE_VAR_RCPT_DOMAIN, "d1.example");
	assert_string_equal(eval_str(r, &ctx), "v1");
}

/* ------------------------------------------------------------------ */
/* List settings                                                       */

static void test_list_valued(void **state)
{
	struct fx *fx = *state;
	struct rule_ctx ctx;
	struct strbuf sb;
	struct rule *r;
	const struct cfg_value *v;

	/* No else: empty list. An entry without then: empty list. */
	r = compile_ex(fx, "[{ if = \"sender\", eq = \"a\", then = [\"x\", \"y\"] }, "
		       "{ if = \"sender\", eq = \"b\" }]", NULL, ALL_VARS, true, RULE_LIST_VALUED);
	assert_non_null(r);
	assert_int_equal(fx->diags.errors, 0);
	ctx_init(&ctx);
	ctx_set(&ctx, RULE_VAR_SENDER, "a");
	v = rule_eval(r, &ctx);
	assert_int_equal(v->n_items, 2);
	assert_string_equal(v->items[1].str, "y");
	ctx_set(&ctx, RULE_VAR_SENDER, "b");
	assert_int_equal(rule_eval(r, &ctx)->n_items, 0);
	ctx_set(&ctx, RULE_VAR_SENDER, "c");
	v = rule_eval(r, &ctx);
	assert_int_equal(v->n_items, 0);
	assert_false(v->none);

	/* Dumped as written: no then, no else. */
	strbuf_init(&sb);
	rule_dump(r, &sb, rule_value_dump, NULL);
	assert_string_equal(strbuf_str(&sb),
			    "[{ if = \"sender\", eq = \"a\", then = [\"x\", \"y\"] }, "
			    "{ if = \"sender\", eq = \"b\" }]");
	strbuf_free(&sb);

	/* An explicit empty else is kept. */
	r = compile_ex(fx, "[{ if = \"sender\", eq = \"a\", then = \"x\" }, { else = [] }]", NULL,
		       ALL_VARS, true, RULE_LIST_VALUED);
	assert_non_null(r);
	strbuf_init(&sb);
	rule_dump(r, &sb, rule_value_dump, NULL);
	assert_string_equal(strbuf_str(&sb),
			    "[{ if = \"sender\", eq = \"a\", then = \"x\" }, { else = [] }]");
	strbuf_free(&sb);
}

/* ------------------------------------------------------------------ */
/* Dump                                                                */

static void dump_roundtrip(struct fx *fx, const char *value, const char *want)
{
	struct strbuf first, second;
	struct rule *r = compile_ok(fx, value);

	strbuf_init(&first);
	rule_dump(r, &first, rule_value_dump, NULL);
	assert_string_equal(strbuf_str(&first), want);
	/* The dump is TOML that compiles back to the same rule. */
	r = compile_ok(fx, strbuf_str(&first));
	strbuf_init(&second);
	rule_dump(r, &second, rule_value_dump, NULL);
	assert_string_equal(strbuf_str(&second), strbuf_str(&first));
	strbuf_free(&first);
	strbuf_free(&second);
}

static void test_dump_roundtrip(void **state)
{
	struct fx *fx = *state;

	dump_roundtrip(fx, "[{if=\"rcpt-domain\",in-list=\"list/domains\",then=\"lmtp\"},{else=false}]",
		       "[{ if = \"rcpt-domain\", in-list = \"list/domains\", then = \"lmtp\" }, "
		       "{ else = false }]");
	dump_roundtrip(fx, "[{ if = \"sender\", equal-to = \"a\\\"b\", then = \"x\" }, "
		       "{ if = \"sender\", not-equal-to = \"c\", then = \"y\" }, { else = \"z\" }]",
		       "[{ if = \"sender\", eq = \"a\\\"b\", then = \"x\" }, "
		       "{ if = \"sender\", ne = \"c\", then = \"y\" }, { else = \"z\" }]");
	dump_roundtrip(fx, "[{ any-of = [{ if = \"mx\", matches = '^mx\\w' }, { all-of = ["
		       "{ if = \"remote-ip\", eq = \"10.0.0.0/8\" }, { if = \"priority\", eq = 5 }] }], "
		       "then = 1 }, { none-of = [{ if = \"listener\", not-starts-with = \"in\" }], "
		       "then = 2 }, { else = 3 }]",
		       "[{ any-of = [{ if = \"mx\", matches = \"^mx\\\\w\" }, { all-of = ["
		       "{ if = \"remote-ip\", eq = \"10.0.0.0/8\" }, { if = \"priority\", eq = 5 }] }], "
		       "then = 1 }, { none-of = [{ if = \"listener\", not-starts-with = \"in\" }], "
		       "then = 2 }, { else = 3 }]");
	dump_roundtrip(fx, "[{ else = \"only\" }]", "[{ else = \"only\" }]");
}

/* ------------------------------------------------------------------ */
/* Errors                                                              */

static void test_errors_variables(void **state)
{
	struct fx *fx = *state;

	EXPECT_ERROR(fx, ALL_VARS, "[{ if = \"rcptt\", eq = \"a\", then = 1 }, { else = 2 }]",
		     "unknown variable", "rcptt", "did you mean \"rcpt\"", "authenticated-as");
	EXPECT_ERROR(fx, ALL_VARS, "[{ if = \"colour\", eq = \"a\", then = 1 }, { else = 2 }]",
		     "unknown variable", "colour", "sender-domain");
	EXPECT_ERROR(fx, RULE_VARS_R, "[{ if = \"rcpt\", eq = \"a\", then = 1 }, { else = 2 }]",
		     "variable \"rcpt\" is not available here; "
		     "allowed: sender, sender-domain, priority, rcpt-domain");
	EXPECT_ERROR(fx, RULE_VARS_C, "[{ any-of = [{ if = \"sender\", eq = \"a\" }], then = 1 }, "
		     "{ else = 2 }]", "\"sender\"", "not available", "remote-ip, local-ip, listener");
	EXPECT_ERROR(fx, ALL_VARS, "[{ if = 5, eq = \"a\", then = 1 }, { else = 2 }]",
		     "`if`", "string");
}

static void test_errors_operators(void **state)
{
	struct fx *fx = *state;

	EXPECT_ERROR(fx, ALL_VARS, "[{ if = \"rcpt\", eqq = \"a\", then = 1 }, { else = 2 }]",
		     "unknown operator", "eqq", "did you mean \"eq\"");
	EXPECT_ERROR(fx, ALL_VARS, "[{ if = \"rcpt\", startswith = \"a\", then = 1 }, { else = 2 }]",
		     "unknown operator", "startswith", "starts-with");
	EXPECT_ERROR(fx, ALL_VARS, "[{ if = \"rcpt\", contains = \"a\", then = 1 }, { else = 2 }]",
		     "unknown operator", "contains", "in-list");
	EXPECT_ERROR(fx, ALL_VARS,
		     "[{ if = \"rcpt\", eq = \"a\", starts-with = \"b\", then = 1 }, { else = 2 }]",
		     "two operators", "eq", "starts-with");
	EXPECT_ERROR(fx, ALL_VARS, "[{ any-of = [{ if = \"rcpt\", ne = \"a\", ends-with = \"b\" }], "
		     "then = 1 }, { else = 2 }]", "two operators");
	EXPECT_ERROR(fx, ALL_VARS, "[{ any-of = [{ if = \"rcpt\", eqq = \"a\" }], then = 1 }, "
		     "{ else = 2 }]", "unknown operator", "eqq", "did you mean \"eq\"");
	EXPECT_ERROR(fx, ALL_VARS, "[{ any-of = [{ iff = \"rcpt\" }], then = 1 }, "
		     "{ else = 2 }]", "unknown key", "iff", "condition", "did you mean \"if\"");
	EXPECT_ERROR(fx, ALL_VARS, "[{ if = \"rcpt\", then = 1 }, { else = 2 }]", "no operator");
	EXPECT_ERROR(fx, ALL_VARS, "[{ eq = \"a\", then = 1 }, { else = 2 }]", "eq", "without `if`");
}

static void test_errors_structure(void **state)
{
	struct fx *fx = *state;

	EXPECT_ERROR(fx, ALL_VARS, "[{ then = 1 }, { else = 2 }]", "`then` without `if`");
	EXPECT_ERROR(fx, ALL_VARS, "[{ if = \"rcpt\", eq = \"a\" }, { else = 2 }]",
		     "`if` without `then`");
	EXPECT_ERROR(fx, ALL_VARS, "[{ all-of = [{ if = \"rcpt\", eq = \"a\" }] }, { else = 2 }]",
		     "all-of", "without `then`");
	EXPECT_ERROR(fx, ALL_VARS, "[{ if = \"rcpt\", eq = \"a\", then = 1 }]",
		     "missing final", "else");
	EXPECT_ERROR(fx, ALL_VARS, "[{ else = 2 }, { if = \"rcpt\", eq = \"a\", then = 1 }]",
		     "else must be the last entry");
	EXPECT_ERROR(fx, ALL_VARS, "[{ else = 2 }, { else = 3 }]", "else must be the last entry");
	EXPECT_ERROR(fx, ALL_VARS, "[{ if = \"rcpt\", eq = \"a\", then = 1, else = 2 }]",
		     "else entry takes no condition");
	EXPECT_ERROR(fx, ALL_VARS, "[{ else = 2, colour = \"red\" }]", "unknown key", "colour");
	EXPECT_ERROR(fx, ALL_VARS, "[{ thenn = 1 }, { else = 2 }]", "unknown key", "thenn",
		     "did you mean \"then\"");
	EXPECT_ERROR(fx, ALL_VARS, "[{ any-of = [{ if = \"rcpt\", eq = \"a\", then = 1 }], "
		     "then = 1 }, { else = 2 }]", "then", "not to a condition");
	EXPECT_ERROR(fx, ALL_VARS, "[{ any-of = [], then = 1 }, { else = 2 }]", "any-of",
		     "non-empty");
	EXPECT_ERROR(fx, ALL_VARS, "[{ any-of = [\"x\"], then = 1 }, { else = 2 }]", "any-of",
		     "conditions");
	EXPECT_ERROR(fx, ALL_VARS, "[{ any-of = [{ if = \"rcpt\", eq = \"a\" }], "
		     "all-of = [{ if = \"rcpt\", eq = \"a\" }], then = 1 }, { else = 2 }]",
		     "any-of", "all-of");
	EXPECT_ERROR(fx, ALL_VARS, "[{ if = \"rcpt\", eq = \"a\", any-of = [{ if = \"rcpt\", "
		     "eq = \"a\" }], then = 1 }, { else = 2 }]", "either `if`");
	EXPECT_ERROR(fx, ALL_VARS, "[{}, { else = 2 }]", "empty rule entry");
	EXPECT_ERROR(fx, ALL_VARS, "[{ else = 2 }, \"x\"]", "mixes");

	/* A key that takes only plain values. */
	fx_reset_diags(fx);
	expect_error_words(fx, compile_ex(fx, "[{ else = 2 }]", NULL, ALL_VARS, false, 0), "",
			   "plain value", "not rules", (const char *)NULL);
	/* The value callback's own error fails the compile. */
	EXPECT_ERROR(fx, ALL_VARS, "[{ if = \"rcpt\", eq = \"a\", then = 1.5 }, { else = 2 }]",
		     "unsupported value type");
}

static void test_errors_operands(void **state)
{
	struct fx *fx = *state;

	EXPECT_ERROR(fx, ALL_VARS, "[{ if = \"rcpt\", matches = \"(\", then = 1 }, { else = 2 }]",
		     "bad regex", "(");
	EXPECT_ERROR(fx, ALL_VARS, "[{ if = \"rcpt\", not-matches = \"a{2,1}\", then = 1 }, "
		     "{ else = 2 }]", "bad regex");
	EXPECT_ERROR(fx, ALL_VARS, "[{ if = \"rcpt\", in-list = \"list/nope\", then = 1 }, "
		     "{ else = 2 }]", "undefined list", "list/nope");
	EXPECT_ERROR(fx, ALL_VARS, "[{ if = \"rcpt\", not-in-list = \"domains\", then = 1 }, "
		     "{ else = 2 }]", "list/<id>", "domains");
	EXPECT_ERROR(fx, ALL_VARS, "[{ if = \"rcpt\", in-list = \"list/\", then = 1 }, "
		     "{ else = 2 }]", "list/<id>");
	EXPECT_ERROR(fx, ALL_VARS, "[{ if = \"remote-ip\", eq = \"not-an-ip\", then = 1 }, "
		     "{ else = 2 }]", "remote-ip", "not-an-ip", "CIDR");
	EXPECT_ERROR(fx, ALL_VARS, "[{ if = \"local-ip\", ne = \"10.0.0.0/33\", then = 1 }, "
		     "{ else = 2 }]", "local-ip", "10.0.0.0/33");
	EXPECT_ERROR(fx, ALL_VARS, "[{ if = \"priority\", eq = \"high\", then = 1 }, "
		     "{ else = 2 }]", "priority", "integer", "high");
	EXPECT_ERROR(fx, ALL_VARS, "[{ if = \"priority\", ne = \"99999999999999999999\", then = 1 }, "
		     "{ else = 2 }]", "integer");
	EXPECT_ERROR(fx, ALL_VARS, "[{ if = \"rcpt\", eq = 5, then = 1 }, { else = 2 }]",
		     "operand", "string", "integer");
	EXPECT_ERROR(fx, ALL_VARS, "[{ if = \"priority\", starts-with = 5, then = 1 }, "
		     "{ else = 2 }]", "operand", "string");
	EXPECT_ERROR(fx, ALL_VARS, "[{ if = \"rcpt\", matches = [\"a\"], then = 1 }, { else = 2 }]",
		     "operand", "string", "array");
}

static char *repeat(const char *head, const char *unit, unsigned n, const char *tail)
{
	struct strbuf sb;
	char *s;

	strbuf_init(&sb);
	strbuf_puts(&sb, head);
	for (unsigned i = 0; i < n; i++)
		strbuf_puts(&sb, unit);
	strbuf_puts(&sb, tail);
	s = strdup(strbuf_str(&sb));
	strbuf_free(&sb);
	assert_non_null(s);
	return s;
}

/* Patterns that would make glibc's regcomp overflow the stack or expand
 * to gigabytes are refused before it sees them. */
static void test_regex_limits(void **state)
{
	struct fx *fx = *state;
	char *open, *close, *text;
	struct rule_ctx ctx;
	struct rule *r;

	/* 32 nested groups are fine, 33 are not. */
	open = repeat("", "(", 32, "");
	close = repeat("", ")", 32, "");
	text = malloc(strlen(open) + strlen(close) + 128);
	assert_non_null(text);
	sprintf(text, "[{ if = \"mx\", matches = '^%sab%s$', then = \"yes\" }, { else = \"no\" }]",
		open, close);
	r = compile_ok(fx, text);
	ctx_init(&ctx);
	ctx_set(&ctx, RULE_VAR_MX, "ab");
	assert_string_equal(eval_str(r, &ctx), "yes");
	sprintf(text, "[{ if = \"mx\", matches = '(%sab%s)', then = \"yes\" }, { else = \"no\" }]",
		open, close);
	EXPECT_ERROR(fx, ALL_VARS, text, "bad regex", "nest more than 32 deep");
	free(open);
	free(close);
	free(text);

	/* Each + doubles what glibc builds. */
	EXPECT_ERROR(fx, ALL_VARS, "[{ if = \"mx\", matches = 'a++++++++++++++++++++++++', "
		     "then = 1 }, { else = 2 }]", "bad regex", "expand");
	EXPECT_ERROR(fx, ALL_VARS, "[{ if = \"mx\", matches = 'x{1000}{1000}', then = 1 }, "
		     "{ else = 2 }]", "bad regex", "expand");
	EXPECT_ERROR(fx, ALL_VARS, "[{ if = \"mx\", matches = '((a{100}){100})', then = 1 }, "
		     "{ else = 2 }]", "expand");
	/* Repeating what can be empty: exponential in glibc after an anchor. */
	EXPECT_ERROR(fx, ALL_VARS, "[{ if = \"mx\", matches = '^(a*)*x', then = 1 }, "
		     "{ else = 2 }]", "bad regex", "empty string");
	EXPECT_ERROR(fx, ALL_VARS, "[{ if = \"mx\", matches = '^a**', then = 1 }, "
		     "{ else = 2 }]", "empty string");
	EXPECT_ERROR(fx, ALL_VARS, "[{ if = \"mx\", matches = '(b|(a|))+', then = 1 }, "
		     "{ else = 2 }]", "empty string");
	EXPECT_ERROR(fx, ALL_VARS, "[{ if = \"mx\", matches = '(x?y*){2,}', then = 1 }, "
		     "{ else = 2 }]", "empty string");
	EXPECT_ERROR(fx, ALL_VARS, "[{ if = \"mx\", matches = '^(a*)?$', then = 1 }, "
		     "{ else = 2 }]", "empty string");
	EXPECT_ERROR(fx, ALL_VARS, "[{ if = \"mx\", matches = '(b?){2}', then = 1 }, "
		     "{ else = 2 }]", "empty string");
	EXPECT_ERROR(fx, ALL_VARS, "[{ if = \"mx\", matches = '(\\b)*', then = 1 }, "
		     "{ else = 2 }]", "empty string");
	EXPECT_ERROR(fx, ALL_VARS, "[{ if = \"mx\", matches = 'a*?" "?', then = 1 }, "
		     "{ else = 2 }]", "empty string");
	/* Anchors joined by what can be empty: exponential too. */
	EXPECT_ERROR(fx, ALL_VARS, "[{ if = \"mx\", matches = '(\\bxa?){9}', then = 1 }, "
		     "{ else = 2 }]", "anchors");
	r = compile_ok(fx, "[{ if = \"mx\", matches = '^\\<a\\>|\\bb\\B|^c$', then = \"yes\" }, "
		       "{ else = \"no\" }]");
	ctx_set(&ctx, RULE_VAR_MX, "x b");
	assert_string_equal(eval_str(r, &ctx), "no");
	ctx_set(&ctx, RULE_VAR_MX, "c");
	assert_string_equal(eval_str(r, &ctx), "yes");

	/* Loops over what cannot be empty are fine, with optional and
	 * alternative parts inside. */
	r = compile_ok(fx, "[{ if = \"mx\", matches = '^(a|b)?(x?y)*(c|d*e)+(\\.[a-z]+)*$', "
		       "then = \"yes\" }, { else = \"no\" }]");
	ctx_set(&ctx, RULE_VAR_MX, "byxyeddde.ab.c");
	assert_string_equal(eval_str(r, &ctx), "yes");
	ctx_set(&ctx, RULE_VAR_MX, "byxy");
	assert_string_equal(eval_str(r, &ctx), "no");

	/* Perl's lazy a+? means at least one a, as in Stalwart; POSIX alone
	 * would read (a+)? and match "b". The operand is dumped as written. */
	r = compile_ok(fx, "[{ if = \"mx\", matches = '^a+?b.*?$', then = \"yes\" }, "
		       "{ else = \"no\" }]");
	ctx_set(&ctx, RULE_VAR_MX, "aab");
	assert_string_equal(eval_str(r, &ctx), "yes");
	ctx_set(&ctx, RULE_VAR_MX, "b");
	assert_string_equal(eval_str(r, &ctx), "no");
	struct strbuf sb;
	strbuf_init(&sb);
	rule_dump(r, &sb, rule_value_dump, NULL);
	assert_string_equal(strbuf_str(&sb), "[{ if = \"mx\", matches = \"^a+?b.*?$\", "
			    "then = \"yes\" }, { else = \"no\" }]");
	strbuf_free(&sb);

	/* Braces inside brackets and escaped ones are not repetitions. */
	compile_ok(fx, "[{ if = \"mx\", matches = '^[{}]{2}[[:alpha:]{]+\\{9999\\}[0-9]{1,3}"
		   "(\\.[0-9]{1,3}){3}$', then = 1 }, { else = 2 }]");
	compile_ok(fx, "[{ if = \"mx\", matches = 'a{990}', then = 1 }, { else = 2 }]");
	EXPECT_ERROR(fx, ALL_VARS, "[{ if = \"mx\", matches = 'a{1000}', then = 1 }, "
		     "{ else = 2 }]", "expand to more than 1000");

	/* And all regexes together are bounded too. */
	fx_reset_diags(fx);
	text = repeat("[", "{ if = \"mx\", matches = 'a{990}', then = 1 }, ", 51, "{ else = 2 }]");
	EXPECT_ERROR(fx, ALL_VARS, text, "too many or too large regexes");
	free(text);
}

/* Several mistakes in one rule are all reported. */
static void test_errors_collected(void **state)
{
	struct fx *fx = *state;
	struct rule *r;

	fx_reset_diags(fx);
	r = compile_ex(fx, "[{ if = \"nope\", eq = \"a\", then = 1 },\n"
		       " { if = \"rcpt\", matches = \"(\", then = 2 },\n"
		       " { if = \"rcpt\", in-list = \"list/none\", then = 3 }]", LISTS, ALL_VARS,
		       true, 0);
	assert_null(r);
	assert_int_equal(fx->diags.errors, 4);
	assert_int_equal(fx->diags.items[1].pos.line, 2);
	assert_int_equal(fx->diags.items[2].pos.line, 3);
}

/* ------------------------------------------------------------------ */
/* Lists                                                               */

static void test_lists_load(void **state)
{
	struct fx *fx = *state;
	const struct cfg_list *l;

	fx_load(fx, "[list]\n"
		"a = [\"x\", \"y\", \"x\", \"\"]\n"
		"b = \"one\"\n"
		"empty = []\n");
	assert_int_equal(fx->diags.errors, 0);
	assert_int_equal(cfg_lists_count(fx->lists), 3);
	l = cfg_lists_find(fx->lists, "a", 1);
	assert_non_null(l);
	assert_string_equal(cfg_list_id(l), "a");
	assert_int_equal(cfg_list_count(l), 3); /* duplicates dropped */
	assert_string_equal(cfg_list_entry(l, 0), "x");
	assert_string_equal(cfg_list_entry(l, 1), "y");
	assert_string_equal(cfg_list_entry(l, 2), "");
	assert_null(cfg_list_entry(l, 3));
	assert_true(cfg_list_contains(l, "x", 1));
	assert_true(cfg_list_contains(l, "", 0));
	assert_true(cfg_list_contains(l, "xyz", 1));
	assert_false(cfg_list_contains(l, "X", 1));
	assert_false(cfg_list_contains(l, "xy", 2));

	assert_ptr_equal(cfg_lists_ref(fx->lists, "list/b", 6), cfg_lists_at(fx->lists, 1));
	assert_null(cfg_lists_ref(fx->lists, "list/", 5));
	assert_null(cfg_lists_ref(fx->lists, "b", 1));
	assert_null(cfg_lists_ref(fx->lists, "lists/b", 7));
	assert_null(cfg_lists_ref(fx->lists, "list/bb", 7));
	assert_null(cfg_lists_find(fx->lists, "c", 1));
	assert_int_equal(cfg_list_count(cfg_lists_find(fx->lists, "empty", 5)), 0);
	assert_false(cfg_list_contains(cfg_lists_find(fx->lists, "empty", 5), "", 0));
}

static bool has_error(struct fx *fx, const char *key, const char *w1, const char *w2)
{
	for (size_t i = 0; i < fx->diags.len; i++) {
		const struct diag *d = &fx->diags.items[i];

		if (d->level == DIAG_ERROR && strcmp(d->key, key) == 0 &&
		    strstr(d->message, w1) != NULL && (w2 == NULL || strstr(d->message, w2) != NULL))
			return true;
	}
	return false;
}

static void test_lists_errors(void **state)
{
	struct fx *fx = *state;

	fx_load(fx, "[list]\n"
		"missing = [\"ok\", \"file:///nonexistent/tern-list.txt\"]\n"
		"num = 5\n"
		"mixed = [\"a\", 1]\n"
		"rel = \"file://relative.txt\"\n"
		"dir = \"file:///\"\n"
		"sub.x = \"a\"\n");
	assert_true(has_error(fx, "list.missing", "/nonexistent/tern-list.txt",
			      "No such file or directory"));
	assert_true(has_error(fx, "list.num", "integer", NULL));
	assert_true(has_error(fx, "list.mixed", "integer", NULL));
	assert_true(has_error(fx, "list.rel", "absolute", NULL));
	assert_true(has_error(fx, "list.dir", "Is a directory", NULL));
	assert_true(has_error(fx, "list.sub", "table", NULL));
	/* Lists with errors still exist, with what could be read. */
	assert_true(cfg_list_contains(cfg_lists_find(fx->lists, "missing", 7), "ok", 2));
	assert_non_null(cfg_lists_find(fx->lists, "num", 3));
	assert_true(cfg_list_contains(cfg_lists_find(fx->lists, "mixed", 5), "a", 1));

	/* ...so a rule naming them gives no second error. */
	fx_reset_diags(fx);
	assert_non_null(compile_ex(fx, "[{ if = \"mx\", in-list = \"list/missing\", then = 1 }, "
				   "{ else = 2 }]", "[list]\nmissing = \"file:///nonexistent/x\"\n",
				   ALL_VARS, true, 0));
	assert_int_equal(fx->diags.errors, 1);
	assert_true(has_error(fx, "list.missing", "/nonexistent/x", NULL));
}

static void test_lists_large_file(void **state)
{
	struct fx *fx = *state;
	const struct cfg_list *l;
	char extra[128], name[64];
	FILE *f;
	int fd;
	enum { N = 100000 };

	strcpy(fx->list_path, "/tmp/tern-test-biglist-XXXXXX");
	fd = mkstemp(fx->list_path);
	assert_true(fd >= 0);
	f = fdopen(fd, "w");
	assert_non_null(f);
	for (int i = 0; i < N; i++)
		fprintf(f, "host%d.example\n", i);
	/* One very long line. */
	for (int i = 0; i < 20000; i++)
		fputs("long.", f);
	fputs("end\n", f);
	fclose(f);

	snprintf(extra, sizeof(extra), "[list]\nbig = \"file://%s\"\n", fx->list_path);
	fx_load(fx, extra);
	assert_int_equal(fx->diags.errors, 0);
	l = cfg_lists_find(fx->lists, "big", 3);
	assert_int_equal(cfg_list_count(l), N + 1);
	for (int i = 0; i < N; i++) {
		int n = snprintf(name, sizeof(name), "host%d.example", i);
		assert_true(cfg_list_contains(l, name, (size_t)n));
	}
	for (int i = N; i < N + 1000; i++) {
		int n = snprintf(name, sizeof(name), "host%d.example", i);
		assert_false(cfg_list_contains(l, name, (size_t)n));
	}
	assert_int_equal(strlen(cfg_list_entry(l, N)), 20000 * 5 + 3);
}

static void test_var_names(void **state)
{
	(void)state;
	assert_string_equal(rule_var_name(RULE_VAR_SENDER), "sender");
	assert_string_equal(rule_var_name(RULE_VAR_RCPT_DOMAIN), "rcpt-domain");
	assert_string_equal(rule_var_name(RULE_VAR_AUTHENTICATED_AS), "authenticated-as");
	assert_null(rule_var_name(RULE_VAR_COUNT));
	assert_null(rule_var_name((enum rule_var)-1));
}

#define T(f) cmocka_unit_test_setup_teardown(f, fx_setup, fx_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_plain_value),
		T(test_op_eq_ne),
		T(test_op_starts_ends),
		T(test_op_matches),
		T(test_op_in_list),
		T(test_in_list_file),
		T(test_groups),
		T(test_nesting_depth),
		T(test_cidr),
		T(test_ipaddr),
		T(test_priority),
		T(test_many_entries),
		T(test_list_valued),
		T(test_dump_roundtrip),
		T(test_errors_variables),
		T(test_errors_operators),
		T(test_errors_structure),
		T(test_errors_operands),
		T(test_regex_limits),
		T(test_errors_collected),
		T(test_lists_load),
		T(test_lists_errors),
		T(test_lists_large_file),
		T(test_var_names),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
