/*
 * fuzz_toml.c - libFuzzer harness for the TOML parser.
 *
 * Parses the input as is (explicit length: NULs, broken UTF-8 and stray
 * CRs must all be rejected cleanly) and, when it parses, walks the whole
 * tree checking what toml.h promises: positions are 1-based, strings are
 * NUL-terminated at their length, containers hold no NULL entries. The
 * walk recurses; the parser's nesting limit is what keeps that safe.
 * Seeds: tests/fuzz/seeds/toml/.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "config/toml.h"

static void check(int ok)
{
	if (!ok)
		abort();
}

static void walk(const struct toml_value *v)
{
	check(v != NULL);
	check(v->pos.line >= 1 && v->pos.col >= 1);
	switch (v->type) {
	case TOML_TABLE:
		for (size_t i = 0; i < v->u.table.len; i++) {
			const struct toml_keyval *kv = &v->u.table.items[i];

			check(kv->key != NULL && kv->key[kv->key_len] == '\0');
			check(kv->key_pos.line >= 1 && kv->key_pos.col >= 1);
			walk(kv->value);
		}
		break;
	case TOML_ARRAY:
		for (size_t i = 0; i < v->u.array.len; i++)
			walk(v->u.array.items[i]);
		break;
	case TOML_STRING:
	case TOML_DATETIME:
	case TOML_DATETIME_LOCAL:
	case TOML_DATE_LOCAL:
	case TOML_TIME_LOCAL:
		check(v->u.str.ptr != NULL && v->u.str.ptr[v->u.str.len] == '\0');
		break;
	case TOML_INTEGER:
	case TOML_FLOAT:
	case TOML_BOOL:
		break;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct toml_error err;
	struct toml_doc *doc = toml_parse((const char *)data, size, &err);

	if (doc == NULL) {
		check(err.pos.line >= 1 && err.pos.col >= 1 && err.message[0] != '\0');
		return 0;
	}
	check(doc->root != NULL && doc->root->type == TOML_TABLE);
	walk(doc->root);
	toml_doc_free(doc);
	return 0;
}
