/*
 * test_toml.c - unit tests for the TOML parser (src/config/toml.c).
 *
 * The toml-test suite (tests/run-all.sh) covers what is and is not TOML.
 * These tests cover what it cannot see: positions of values and keys,
 * strings holding NUL, the lookup helpers, error positions and messages,
 * the nesting limit, wide tables, and that every prefix of a document
 * parses or fails cleanly. Every input is copied into a buffer of exactly
 * its length, so AddressSanitizer catches any read past the end.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "config/toml.h"
#include "util/strbuf.h"

static const char example_config[] =
	"[queue.outbound]\n"
	"next-hop = [ { if = \"rcpt-domain\", in-list = \"list/domains\", then = \"lmtp\" },\n"
	"             { else = false } ]\n"
	"ip-strategy = \"ipv4-then-ipv6\"\n"
	"hostname = \"mx.mydomain.net\"\n"
	"\n"
	"[queue.outbound.source-ip]\n"
	"v4 = [\"10.0.0.10\", \"10.0.0.11\"]\n"
	"v6 = [\"a::b\", \"a::c\"]\n"
	"\n"
	"[remote.\"lmtp\"]\n"
	"address = \"localhost\"\n"
	"port = 24\n";

/* Parse len bytes from an exact-size heap copy. */
static struct toml_doc *parse_n(const char *text, size_t len, struct toml_error *err)
{
	char *copy = malloc(len ? len : 1);
	struct toml_doc *doc;

	assert_non_null(copy);
	memcpy(copy, text, len);
	doc = toml_parse(copy, len, err);
	free(copy);
	return doc;
}

static struct toml_doc *parse_ok(const char *text)
{
	struct toml_error err;
	struct toml_doc *doc = parse_n(text, strlen(text), &err);

	if (doc == NULL)
		fail_msg("unexpected error %u:%u: %s", err.pos.line, err.pos.col, err.message);
	return doc;
}

/* Expect failure at line:col with a message containing want. */
static void expect_error_n(const char *text, size_t len, uint32_t line, uint32_t col,
			   const char *want)
{
	struct toml_error err;
	struct toml_doc *doc = parse_n(text, len, &err);

	if (doc != NULL) {
		toml_doc_free(doc);
		fail_msg("accepted invalid input: %s", text);
	}
	if (err.pos.line != line || err.pos.col != col || strstr(err.message, want) == NULL)
		fail_msg("for %s: got %u:%u \"%s\", want %u:%u \"%s\"", text, err.pos.line,
			 err.pos.col, err.message, line, col, want);
}

static void expect_error(const char *text, uint32_t line, uint32_t col, const char *want)
{
	expect_error_n(text, strlen(text), line, col, want);
}

/* Follow a dotted path of plain keys (no dots inside keys). */
static const struct toml_value *get_path(const struct toml_value *t, const char *path)
{
	char buf[256];
	char *save = NULL;

	snprintf(buf, sizeof(buf), "%s", path);
	for (char *k = strtok_r(buf, ".", &save); k != NULL && t != NULL;
	     k = strtok_r(NULL, ".", &save))
		t = toml_table_get(t, k);
	return t;
}

static void assert_pos(struct toml_pos pos, uint32_t line, uint32_t col)
{
	if (pos.line != line || pos.col != col)
		fail_msg("position %u:%u, want %u:%u", pos.line, pos.col, line, col);
}

static void test_example_config(void **state)
{
	struct toml_doc *doc = parse_ok(example_config);
	const struct toml_value *hops, *v;

	(void)state;
	hops = get_path(doc->root, "queue.outbound.next-hop");
	assert_non_null(hops);
	assert_int_equal(hops->type, TOML_ARRAY);
	assert_int_equal(hops->u.array.len, 2);
	v = toml_table_get(hops->u.array.items[0], "in-list");
	assert_non_null(v);
	assert_string_equal(v->u.str.ptr, "list/domains");
	v = toml_table_get(hops->u.array.items[1], "else");
	assert_non_null(v);
	assert_int_equal(v->type, TOML_BOOL);
	assert_false(v->u.boolean);
	v = get_path(doc->root, "queue.outbound.source-ip.v6");
	assert_non_null(v);
	assert_int_equal(v->u.array.len, 2);
	assert_string_equal(v->u.array.items[1]->u.str.ptr, "a::c");
	v = get_path(doc->root, "remote.lmtp.port");
	assert_non_null(v);
	assert_int_equal(v->type, TOML_INTEGER);
	assert_int_equal(v->u.integer, 24);
	/* Keys stay in document order. */
	v = get_path(doc->root, "queue.outbound");
	assert_string_equal(v->u.table.items[0].key, "next-hop");
	assert_string_equal(v->u.table.items[3].key, "source-ip");
	toml_doc_free(doc);
}

static void test_positions(void **state)
{
	struct toml_doc *doc = parse_ok("a = 1\n"
					"  b.c = \"x\"\n"
					"[t]\n"
					"arr = [ 1,\n"
					"\t2 ]\n"
					"it = { k = true }\n"
					"[[aot]]\n"
					"[[aot]]\n"
					"d = 1979-05-27\n");
	const struct toml_value *root = doc->root, *t, *v;
	const struct toml_keyval *kv;

	(void)state;
	assert_pos(root->pos, 1, 1);
	kv = toml_table_find(root, "a");
	assert_pos(kv->key_pos, 1, 1);
	assert_pos(kv->value->pos, 1, 5);

	kv = toml_table_find(root, "b");
	assert_pos(kv->key_pos, 2, 3);
	kv = toml_table_find(kv->value, "c");
	assert_pos(kv->key_pos, 2, 5);
	assert_pos(kv->value->pos, 2, 9);

	kv = toml_table_find(root, "t");
	assert_pos(kv->key_pos, 3, 2);
	assert_pos(kv->value->pos, 3, 1);
	t = kv->value;
	v = toml_table_get(t, "arr");
	assert_pos(v->pos, 4, 7);
	assert_pos(v->u.array.items[0]->pos, 4, 9);
	assert_pos(v->u.array.items[1]->pos, 5, 2);
	v = toml_table_get(t, "it");
	assert_pos(v->pos, 6, 6);
	kv = toml_table_find(v, "k");
	assert_pos(kv->key_pos, 6, 8);
	assert_pos(kv->value->pos, 6, 12);

	v = toml_table_get(root, "aot");
	assert_int_equal(v->u.array.len, 2);
	assert_pos(v->pos, 7, 1);
	assert_pos(v->u.array.items[0]->pos, 7, 1);
	assert_pos(v->u.array.items[1]->pos, 8, 1);
	kv = toml_table_find(v->u.array.items[1], "d");
	assert_pos(kv->value->pos, 9, 5);
	assert_int_equal(kv->value->type, TOML_DATE_LOCAL);
	assert_string_equal(kv->value->u.str.ptr, "1979-05-27");
	toml_doc_free(doc);
}

/* An implicit table gets the position of the header that defines it. */
static void test_positions_implicit_table(void **state)
{
	struct toml_doc *doc = parse_ok("[a.b]\nx = 1\n\n[a]\ny = 2\n");
	const struct toml_keyval *kv = toml_table_find(doc->root, "a");

	(void)state;
	assert_pos(kv->key_pos, 1, 2);
	assert_pos(kv->value->pos, 4, 1);
	kv = toml_table_find(kv->value, "b");
	assert_pos(kv->key_pos, 1, 4);
	assert_pos(kv->value->pos, 1, 1);
	toml_doc_free(doc);
}

static void test_positions_crlf(void **state)
{
	struct toml_doc *doc = parse_ok("a = 1\r\n\r\n  b = 'x'\r\n[t]\r\nc = [\r\n 1 ]\r\n");
	const struct toml_keyval *kv;
	const struct toml_value *v;

	(void)state;
	kv = toml_table_find(doc->root, "b");
	assert_pos(kv->key_pos, 3, 3);
	assert_pos(kv->value->pos, 3, 7);
	v = get_path(doc->root, "t.c");
	assert_pos(v->pos, 5, 5);
	assert_pos(v->u.array.items[0]->pos, 6, 2);
	toml_doc_free(doc);
}

static void test_positions_after_multiline_strings(void **state)
{
	struct toml_doc *doc;
	const struct toml_keyval *kv;

	(void)state;
	doc = parse_ok("s = \"\"\"\n"
		       "one\r\n"
		       "two \\\n"
		       "\n"
		       "   three\"\"\"\n"
		       "l = '''\n"
		       "x\n"
		       "y''' # c\n"
		       "  z = 1\n");
	kv = toml_table_find(doc->root, "s");
	assert_pos(kv->value->pos, 1, 5);
	/* The first newline is dropped, CRLF becomes LF, the backslash eats
	 * the line break and the indentation. */
	assert_string_equal(kv->value->u.str.ptr, "one\ntwo three");
	kv = toml_table_find(doc->root, "l");
	assert_pos(kv->key_pos, 6, 1);
	assert_string_equal(kv->value->u.str.ptr, "x\ny");
	kv = toml_table_find(doc->root, "z");
	assert_pos(kv->key_pos, 9, 3);
	assert_pos(kv->value->pos, 9, 7);
	toml_doc_free(doc);
}

/* A BOM is skipped and not counted as columns. */
static void test_bom(void **state)
{
	struct toml_doc *doc = parse_ok("\xEF\xBB\xBF" "a = 1\n");
	const struct toml_keyval *kv = toml_table_find(doc->root, "a");

	(void)state;
	assert_pos(kv->key_pos, 1, 1);
	assert_pos(kv->value->pos, 1, 5);
	toml_doc_free(doc);
	expect_error("a = 1\n\xEF\xBB\xBF" "b = 2\n", 2, 1, "expected a key");
}

static void test_string_with_nul(void **state)
{
	struct toml_doc *doc = parse_ok("s = \"a\\u0000b\"\n\"k\\u0000\" = 1\n");
	const struct toml_value *v = toml_table_get(doc->root, "s");

	(void)state;
	assert_non_null(v);
	assert_int_equal(v->u.str.len, 3);
	assert_memory_equal(v->u.str.ptr, "a\0b", 4);
	/* The NUL-terminated lookup cannot name this key, but it is there. */
	assert_int_equal(doc->root->u.table.items[1].key_len, 2);
	assert_memory_equal(doc->root->u.table.items[1].key, "k\0", 3);
	toml_doc_free(doc);
}

static void test_string_escapes(void **state)
{
	struct toml_doc *doc = parse_ok("s = \"\\b\\t\\n\\f\\r\\\"\\\\\\u00e9\\U0001F600\"\n");
	const struct toml_value *v = toml_table_get(doc->root, "s");

	(void)state;
	assert_string_equal(v->u.str.ptr, "\b\t\n\f\r\"\\\xC3\xA9\xF0\x9F\x98\x80");
	assert_int_equal(v->u.str.len, 13);
	toml_doc_free(doc);
}

static void test_scalars(void **state)
{
	struct toml_doc *doc = parse_ok("i = -9_223_372_036_854_775_808\n"
					"h = 0xDEAD_beef\n"
					"o = 0o755\n"
					"b = 0b1010\n"
					"f = 6.626e-34\n"
					"g = -inf\n"
					"t = 07:32:00.5\n"
					"dt = 1979-05-27 07:32:00Z\n"
					"ldt = 1979-05-27T07:32:00\n");
	const struct toml_value *r = doc->root;

	(void)state;
	assert_true(toml_table_get(r, "i")->u.integer == INT64_MIN);
	assert_int_equal(toml_table_get(r, "h")->u.integer, 0xDEADBEEF);
	assert_int_equal(toml_table_get(r, "o")->u.integer, 0755);
	assert_int_equal(toml_table_get(r, "b")->u.integer, 10);
	assert_true(toml_table_get(r, "f")->u.flt == 6.626e-34);
	assert_int_equal(toml_table_get(r, "g")->type, TOML_FLOAT);
	assert_true(toml_table_get(r, "g")->u.flt < -1e308);
	assert_int_equal(toml_table_get(r, "t")->type, TOML_TIME_LOCAL);
	assert_int_equal(toml_table_get(r, "dt")->type, TOML_DATETIME);
	assert_string_equal(toml_table_get(r, "dt")->u.str.ptr, "1979-05-27 07:32:00Z");
	assert_int_equal(toml_table_get(r, "dt")->u.str.len, 20);
	assert_int_equal(toml_table_get(r, "ldt")->type, TOML_DATETIME_LOCAL);
	toml_doc_free(doc);
}

static void test_lookup(void **state)
{
	struct toml_doc *doc = parse_ok("a = 1\n[t]\nx = \"y\"\n");
	const struct toml_value *t = toml_table_get(doc->root, "t");
	const struct toml_keyval *kv;

	(void)state;
	assert_non_null(t);
	assert_int_equal(t->type, TOML_TABLE);
	kv = toml_table_find(t, "x");
	assert_non_null(kv);
	assert_string_equal(kv->key, "x");
	assert_int_equal(kv->key_len, 1);
	assert_ptr_equal(toml_table_get(t, "x"), kv->value);
	assert_null(toml_table_get(t, "missing"));
	assert_null(toml_table_find(t, ""));
	assert_null(toml_table_get(toml_table_get(doc->root, "a"), "x")); /* not a table */
	assert_null(toml_table_get(NULL, "x"));
	assert_null(toml_table_find(doc->root, NULL));
	toml_doc_free(doc);
}

static void test_type_names(void **state)
{
	(void)state;
	assert_string_equal(toml_type_name(TOML_STRING), "string");
	assert_string_equal(toml_type_name(TOML_INTEGER), "integer");
	assert_string_equal(toml_type_name(TOML_TABLE), "table");
	assert_string_equal(toml_type_name(TOML_ARRAY), "array");
}

static void test_errors(void **state)
{
	(void)state;
	expect_error("a = 1\nb 2\n", 2, 3, "expected '=' after key");
	expect_error("x = 1\n[t]\nx = 1\n  x = 2\n", 4, 3, "duplicate key \"x\"");
	expect_error("s = \"ab\\qc\"\n", 1, 8, "invalid escape \\q");
	expect_error("s = \"abc\n", 1, 5, "unterminated string");
	expect_error("s = '''abc\n\n", 1, 5, "unterminated multi-line string");
	expect_error("[a]\n[b]\n[a]\n", 3, 2, "table \"a\" is defined twice");
	expect_error("a = { b = 1 }\n[a.c]\n", 2, 2, "inline table");
	expect_error("a = { b = 1 }\na.c = 1\n", 2, 1, "inline table \"a\" cannot be extended");
	expect_error("a = [1]\n[[a]]\n", 2, 3, "already defined as an array");
	expect_error("[x]\ny.z = 1\n[x.y]\n", 3, 4, "already defined by dotted keys");
	expect_error("[a.b.c]\n[a]\nb.c.d = 1\n", 3, 1, "dotted keys cannot extend");
	expect_error("a = {b = 1,}\n", 1, 12, "trailing comma");
	expect_error("a = {b = 1,\nc = 2}\n", 1, 12, "newline not allowed in inline table");
	expect_error("a = 1 b = 2\n", 1, 7, "expected newline after value");
	expect_error("a = 0x_1\n", 1, 7, "'_' must be between digits");
	expect_error("a = 012\n", 1, 5, "leading zeros");
	expect_error("a = 9223372036854775808\n", 1, 5, "integer out of range");
	expect_error("a = 2023-02-29\n", 1, 13, "day out of range");
	expect_error("a = 2024-02-29T24:00:00\n", 1, 16, "hour out of range");
	expect_error("a = hello\n", 1, 5, "strings must be quoted");
	expect_error("\"\"\"k\"\"\" = 1\n", 1, 1, "multi-line string");
	/* Keys in messages are escaped and cut. */
	expect_error("\"a\\nb\" = 1\n\"a\\nb\" = 2\n", 2, 1, "duplicate key \"a\\u000Ab\"");
}

static void test_encoding_errors(void **state)
{
	(void)state;
	expect_error_n("a = 1\nb = \"x\0y\"\n", 15, 2, 7, "NUL byte");
	expect_error("a = 1\r\nb = 2\rc = 3\n", 2, 6, "carriage return");
	expect_error("# ok\n# \xC3\x28\n", 2, 3, "invalid UTF-8");
	expect_error("s = \"\xED\xA0\x80\"\n", 1, 6, "invalid UTF-8"); /* surrogate */
	expect_error("s = \"\xC0\xAF\"\n", 1, 6, "invalid UTF-8");     /* overlong */
	expect_error("s = \"\xF4\x90\x80\x80\"\n", 1, 6, "invalid UTF-8"); /* > U+10FFFF */
	expect_error("a = 1 # \x7f\n", 1, 9, "control character U+007F");
	expect_error_n("s = \"\xE2\x82", 8, 1, 6, "invalid UTF-8");      /* cut at the end */
}

static void nested(struct strbuf *sb, int levels, const char *open, const char *inner,
		   const char *close)
{
	strbuf_puts(sb, "a = ");
	for (int i = 0; i < levels; i++)
		strbuf_puts(sb, open);
	strbuf_puts(sb, inner);
	for (int i = 0; i < levels; i++)
		strbuf_puts(sb, close);
	strbuf_putc(sb, '\n');
}

static void test_depth_limit(void **state)
{
	struct strbuf sb;
	struct toml_doc *doc;

	(void)state;
	strbuf_init(&sb);
	nested(&sb, 128, "[", "1", "]");
	doc = parse_ok(sb.data);
	toml_doc_free(doc);

	strbuf_reset(&sb);
	nested(&sb, 129, "[", "1", "]");
	expect_error(sb.data, 1, 5 + 128, "nesting deeper than 128 levels");

	strbuf_reset(&sb);
	nested(&sb, 100000, "{b=", "1", "}");
	expect_error(sb.data, 1, 5 + 128 * 3, "nesting deeper than 128 levels");

	/* Dotted keys and header paths count towards the same limit. */
	strbuf_reset(&sb);
	for (int i = 0; i < 300; i++)
		strbuf_puts(&sb, "k.");
	strbuf_puts(&sb, "k = 1\n");
	expect_error(sb.data, 1, 1 + 2 * 129, "nesting deeper than 128 levels");

	strbuf_reset(&sb);
	strbuf_puts(&sb, "[x]\n[x");
	for (int i = 0; i < 128; i++)
		strbuf_puts(&sb, ".k");
	strbuf_puts(&sb, "]\n");
	expect_error(sb.data, 2, 1, "nesting deeper than 128 levels");

	/* Headers plus dotted keys plus values, each within the limit alone. */
	strbuf_reset(&sb);
	strbuf_puts(&sb, "[h");
	for (int i = 0; i < 99; i++)
		strbuf_puts(&sb, ".h");
	strbuf_puts(&sb, "]\n");
	for (int i = 0; i < 20; i++)
		strbuf_puts(&sb, "d.");
	strbuf_puts(&sb, "d = ");
	for (int i = 0; i < 20; i++)
		strbuf_putc(&sb, '[');
	/* 100 + 20 tables, then the 8th '[' is at depth 128 and the 9th fails. */
	expect_error(sb.data, 2, 2 * 20 + 5 + 8, "nesting deeper than 128 levels");
	strbuf_free(&sb);
}

/* Wide tables use the hash index: duplicates are still found, lookups work. */
static void test_wide_table(void **state)
{
	const int n = 20000;
	struct strbuf sb;
	struct toml_doc *doc;
	const struct toml_value *t;

	(void)state;
	strbuf_init(&sb);
	strbuf_puts(&sb, "[t]\n");
	for (int i = 0; i < n; i++)
		strbuf_printf(&sb, "k%d = %d\n", i, i);
	doc = parse_ok(sb.data);
	t = toml_table_get(doc->root, "t");
	assert_int_equal(t->u.table.len, n);
	assert_int_equal(toml_table_get(t, "k12345")->u.integer, 12345);
	assert_string_equal(t->u.table.items[n - 1].key, "k19999");
	toml_doc_free(doc);

	strbuf_puts(&sb, "k777 = 0\n");
	expect_error(sb.data, (uint32_t)n + 2, 1, "duplicate key \"k777\"");

	/* The same for a wide inline table. */
	strbuf_reset(&sb);
	strbuf_puts(&sb, "t = {");
	for (int i = 0; i < n; i++)
		strbuf_printf(&sb, "k%d = %d, ", i, i);
	strbuf_puts(&sb, "k5 = 0}\n");
	expect_error(sb.data, 1, (uint32_t)sb.len - 7, "duplicate key \"k5\"");
	strbuf_free(&sb);
}

static void test_empty_inputs(void **state)
{
	struct toml_doc *doc;

	(void)state;
	doc = toml_parse(NULL, 0, NULL);
	assert_non_null(doc);
	assert_int_equal(doc->root->type, TOML_TABLE);
	assert_int_equal(doc->root->u.table.len, 0);
	toml_doc_free(doc);
	doc = parse_ok(" \t\n# only a comment");
	toml_doc_free(doc);
	toml_doc_free(NULL);
}

/* Cut a document after every byte: each prefix parses or fails cleanly. */
static void test_every_prefix(void **state)
{
	static const char doc_text[] =
		"\xEF\xBB\xBF# tern test document\r\n"
		"title = \"T\\u00e9st \\\"q\\\"\"\n"
		"lit = 'C:\\path'\n"
		"ml = \"\"\"\n  one \\\n  two\"\"\"\"\"\n"
		"mll = '''\nraw\r\n'''\n"
		"ints = [ 1_000, 0xfF, 0o17, 0b1, +9 ]\n"
		"floats = [ 1.5, -2e-3, 6_0.1_2E+1_0, inf, -nan ]\n"
		"dates = [ 1979-05-27T07:32:00.999-07:00, 1979-05-27 07:32:00, 1979-05-27, 00:00:60 ]\n"
		"nested = [ [ 1, 2 ], [ \"a\", { x = 1, y.z = [ {} ] } ], ]\n"
		"a.\"b c\".'d' = true # comment\n"
		"[server.\"é\"]\n"
		"listen = { addr = \"::1\", port = 25 }\n"
		"[[rule]]\n"
		"if = \"x\"\n"
		"[[rule]]\n"
		"[rule.sub]\n"
		"k = false\n";
	const size_t len = sizeof(doc_text) - 1;
	struct toml_error err;
	struct toml_doc *doc;

	(void)state;
	for (size_t n = 0; n <= len; n++) {
		doc = parse_n(doc_text, n, &err);
		if (doc == NULL) {
			assert_true(err.pos.line >= 1 && err.pos.col >= 1);
			assert_true(err.message[0] != '\0');
		}
		toml_doc_free(doc);
	}
	doc = parse_n(doc_text, len, &err);
	if (doc == NULL)
		fail_msg("full document: %u:%u: %s", err.pos.line, err.pos.col, err.message);
	assert_int_equal(get_path(doc->root, "rule")->u.array.len, 2);
	assert_string_equal(get_path(doc->root, "ml")->u.str.ptr, "  one two\"\"");
	toml_doc_free(doc);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_example_config),
		cmocka_unit_test(test_positions),
		cmocka_unit_test(test_positions_implicit_table),
		cmocka_unit_test(test_positions_crlf),
		cmocka_unit_test(test_positions_after_multiline_strings),
		cmocka_unit_test(test_bom),
		cmocka_unit_test(test_string_with_nul),
		cmocka_unit_test(test_string_escapes),
		cmocka_unit_test(test_scalars),
		cmocka_unit_test(test_lookup),
		cmocka_unit_test(test_type_names),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_encoding_errors),
		cmocka_unit_test(test_depth_limit),
		cmocka_unit_test(test_wide_table),
		cmocka_unit_test(test_empty_inputs),
		cmocka_unit_test(test_every_prefix),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
