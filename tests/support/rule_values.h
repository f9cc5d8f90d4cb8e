/*
 * rule_values.h - a small value type for testing and fuzzing the rule
 * compiler without the settings table: strings -> CFG_STRING, false ->
 * "no value", true -> CFG_BOOL, integers -> CFG_INT, arrays of strings ->
 * a list of CFG_STRING. Strings are copied into the arena passed as ctx,
 * since rules outlive the documents they came from. Errors name the key
 * "k", the key every user of this header compiles.
 *
 * Header-only (static functions) because each test program is one file.
 */
#ifndef TERN_TESTS_RULE_VALUES_H
#define TERN_TESTS_RULE_VALUES_H

#include <inttypes.h>

#include "config/diag.h"
#include "config/toml.h"
#include "config/value.h"
#include "util/arena.h"
#include "util/strbuf.h"

static bool rule_value_parse(void *ctx, const struct toml_value *v, struct cfg_value *out,
			     struct diags *diags)
{
	struct arena *a = ctx;

	switch (v->type) {
	case TOML_STRING:
		out->type = CFG_STRING;
		out->str = arena_strndup(a, v->u.str.ptr, v->u.str.len);
		out->len = v->u.str.len;
		return out->str != NULL;
	case TOML_BOOL:
		out->type = CFG_BOOL;
		out->num = v->u.boolean;
		out->none = !v->u.boolean;
		return true;
	case TOML_INTEGER:
		out->type = CFG_INT;
		out->num = v->u.integer;
		return true;
	case TOML_ARRAY: {
		struct cfg_value *items = arena_grow(a, NULL, 0, v->u.array.len + 1, sizeof(*items));

		if (items == NULL)
			return false;
		for (size_t i = 0; i < v->u.array.len; i++) {
			const struct toml_value *e = v->u.array.items[i];

			if (e->type != TOML_STRING) {
				diag_error(diags, e->pos, "k", "list items must be strings");
				return false;
			}
			items[i].type = CFG_STRING;
			items[i].str = arena_strndup(a, e->u.str.ptr, e->u.str.len);
			items[i].len = e->u.str.len;
			if (items[i].str == NULL)
				return false;
		}
		out->type = CFG_STRING;
		out->items = items;
		out->n_items = v->u.array.len;
		return true;
	}
	default:
		diag_error(diags, v->pos, "k", "unsupported value type %s", toml_type_name(v->type));
		return false;
	}
}

static void rule_value_dump(void *ctx, const struct cfg_value *v, struct strbuf *out)
{
	(void)ctx;
	if (v->items != NULL || v->n_items > 0) {
		strbuf_putc(out, '[');
		for (size_t i = 0; i < v->n_items; i++) {
			if (i > 0)
				strbuf_puts(out, ", ");
			strbuf_put_quoted(out, v->items[i].str, v->items[i].len);
		}
		strbuf_putc(out, ']');
	} else if (v->type == CFG_BOOL) {
		strbuf_puts(out, v->num ? "true" : "false");
	} else if (v->type == CFG_INT) {
		strbuf_printf(out, "%" PRId64, v->num);
	} else {
		strbuf_put_quoted(out, v->str, v->len);
	}
}

#endif
