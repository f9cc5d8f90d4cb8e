/*
 * fuzz_rules.c - libFuzzer harness for the rule compiler (rules.c).
 *
 * The input is a TOML document; every top-level key's value is compiled
 * as a rule (all variables allowed, once as a scalar setting and once as
 * a list setting) against a fixed set of lists, evaluated against a few
 * contexts, and dumped. A rule that compiles must dump to TOML that
 * compiles again, without errors, to a rule that dumps the same: that is
 * what `tern config dump` promises.
 *
 * Inputs past a kilobyte only add regexes that are slow to compile by
 * design (rules.c lets each take up to some 0.2 s), so run it as
 *     build/fuzz/fuzz_rules -max_len=1024 tests/fuzz/seeds/rules
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "config/diag.h"
#include "config/lists.h"
#include "config/rules.h"
#include "config/toml.h"
#include "util/arena.h"
#include "util/ipaddr.h"
#include "util/strbuf.h"
#include "../support/rule_values.h"

#define ALL_VARS ((1u << RULE_VAR_COUNT) - 1)

static const char lists_text[] =
	"[list]\n"
	"domains = [\"example.com\", \"example.org\", \"\"]\n"
	"hosts = \"mx1.example.com\"\n"
	"empty = []\n";

static struct arena lists_arena;
static struct toml_doc *lists_doc;
static struct cfg_lists *lists;

static void set_var(struct rule_ctx *ctx, enum rule_var v, const char *s)
{
	ctx->var[v].ptr = s;
	ctx->var[v].len = strlen(s);
}

static void set_ip(struct rule_ctx *ctx, enum rule_var v, struct ipaddr *a, const char *s)
{
	ipaddr_parse(s, strlen(s), a);
	set_var(ctx, v, s);
}

static void fill_ctx(struct rule_ctx *c, int which)
{
	memset(c, 0, sizeof(*c));
	if (which == 0)
		return; /* everything unknown */
	set_var(c, RULE_VAR_SENDER, which == 1 ? "a@example.com" : "");
	set_var(c, RULE_VAR_SENDER_DOMAIN, which == 1 ? "example.com" : "example.org");
	set_var(c, RULE_VAR_RCPT, "postmaster@example.org");
	set_var(c, RULE_VAR_RCPT_DOMAIN, "example.org");
	set_var(c, RULE_VAR_MX, "mx1.example.com");
	set_var(c, RULE_VAR_LISTENER, "smtp");
	set_var(c, RULE_VAR_AUTHENTICATED_AS, "user");
	set_var(c, RULE_VAR_PRIORITY, which == 1 ? "10" : "-1");
	c->priority = which == 1 ? 10 : -1;
	if (which == 1) {
		set_ip(c, RULE_VAR_REMOTE_IP, &c->remote_ip, "192.0.2.1");
		set_ip(c, RULE_VAR_LOCAL_IP, &c->local_ip, "2001:db8::1");
	} else {
		set_ip(c, RULE_VAR_REMOTE_IP, &c->remote_ip, "::ffff:10.1.2.3");
		set_ip(c, RULE_VAR_LOCAL_IP, &c->local_ip, "127.0.0.1");
	}
}

static void init_lists(void)
{
	struct toml_error err;
	struct diags d;

	arena_init(&lists_arena);
	lists_doc = toml_parse(lists_text, sizeof(lists_text) - 1, &err);
	if (lists_doc == NULL)
		abort();
	diags_init(&d, "lists");
	lists = cfg_lists_load(&lists_arena, toml_table_get(lists_doc->root, "list"), &d);
	if (lists == NULL || d.errors != 0)
		abort();
	diags_free(&d);
}

static struct rule *compile(struct arena *a, const struct toml_value *v, unsigned flags,
			    struct rule_regexes **regexes, struct diags *d)
{
	return rule_compile(a, "k", v, ALL_VARS, true, flags, lists, regexes, rule_value_parse, a, d);
}

/* The dump of a compiled rule compiles again and dumps the same. */
static void check_roundtrip(const struct strbuf *dump, unsigned flags)
{
	struct strbuf doc, again;
	struct toml_error err;
	struct toml_doc *t;
	struct arena a;
	struct diags d;
	struct rule_regexes *regexes = NULL;
	struct rule *r;

	strbuf_init(&doc);
	strbuf_puts(&doc, "k = ");
	strbuf_append(&doc, dump->data, dump->len);
	if (strbuf_failed(&doc))
		abort();
	t = toml_parse(doc.data, doc.len, &err);
	if (t == NULL) {
		fprintf(stderr, "dump is not TOML: %s\n%s\n", err.message, doc.data);
		abort();
	}
	arena_init(&a);
	diags_init(&d, "dump");
	r = compile(&a, toml_table_get(t->root, "k"), flags, &regexes, &d);
	if (r == NULL || d.errors != 0) {
		fprintf(stderr, "dump does not compile: %s\n", doc.data);
		abort();
	}
	strbuf_init(&again);
	rule_dump(r, &again, rule_value_dump, NULL);
	if (again.len != dump->len || memcmp(again.data, dump->data, dump->len) != 0) {
		fprintf(stderr, "dump changed:\n%s\n%s\n", strbuf_str(dump), strbuf_str(&again));
		abort();
	}
	strbuf_free(&again);
	rule_regexes_free(regexes);
	diags_free(&d);
	arena_free(&a);
	toml_doc_free(t);
	strbuf_free(&doc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct toml_error err;
	struct toml_doc *doc;
	struct rule_ctx ctxs[3];

	if (lists == NULL)
		init_lists();
	doc = toml_parse((const char *)data, size, &err);
	if (doc == NULL)
		return 0;
	for (int i = 0; i < 3; i++)
		fill_ctx(&ctxs[i], i);

	for (size_t k = 0; k < doc->root->u.table.len; k++) {
		const struct toml_value *v = doc->root->u.table.items[k].value;

		for (unsigned flags = 0; flags <= RULE_LIST_VALUED; flags += RULE_LIST_VALUED) {
			struct arena a;
			struct diags d;
			struct rule_regexes *regexes = NULL;
			struct rule *r;

			arena_init(&a);
			diags_init(&d, "fuzz");
			r = compile(&a, v, flags, &regexes, &d);
			if (r != NULL) {
				struct strbuf out;

				if (d.errors != 0 || r->n_entries == 0)
					abort();
				for (int i = 0; i < 3; i++)
					if (rule_eval(r, &ctxs[i]) == NULL)
						abort();
				strbuf_init(&out);
				rule_dump(r, &out, rule_value_dump, NULL);
				if (!strbuf_failed(&out))
					check_roundtrip(&out, flags);
				strbuf_free(&out);
			} else if (d.errors == 0 && !d.failed) {
				/* A failed compile always says why. */
				abort();
			}
			rule_regexes_free(regexes);
			diags_free(&d);
			arena_free(&a);
		}
	}
	toml_doc_free(doc);
	return 0;
}
