/*
 * toml.h - TOML 1.0 parser.
 *
 * Reads a byte buffer of explicit length (it may contain NUL bytes, which
 * are then an error) and builds a tree of values. Every value and every key
 * keeps the line and column (1-based, columns counted in bytes) where it
 * starts, so configuration errors can point at the text. The whole tree
 * lives in one arena owned by the toml_doc and is freed with toml_doc_free.
 *
 * Tables keep their keys in document order. Strings are stored decoded
 * (escapes resolved), NUL-terminated, with their byte length (a string may
 * contain U+0000 through the \u0000 escape). Date-times are kept as the
 * validated source text plus their kind; tern's settings never need them
 * as numbers.
 */
#ifndef TERN_CONFIG_TOML_H
#define TERN_CONFIG_TOML_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/arena.h"

enum toml_type {
	TOML_STRING,
	TOML_INTEGER,
	TOML_FLOAT,
	TOML_BOOL,
	TOML_DATETIME,       /* offset date-time */
	TOML_DATETIME_LOCAL, /* local date-time */
	TOML_DATE_LOCAL,
	TOML_TIME_LOCAL,
	TOML_ARRAY,
	TOML_TABLE,
};

struct toml_pos {
	uint32_t line; /* 1-based */
	uint32_t col;  /* 1-based, in bytes */
};

struct toml_value;

struct toml_keyval {
	const char *key; /* decoded, NUL-terminated */
	size_t key_len;
	struct toml_pos key_pos;
	struct toml_value *value;
};

struct toml_value {
	enum toml_type type;
	struct toml_pos pos; /* where the value starts ([ of a table header, { of an inline table) */
	union {
		struct {
			const char *ptr; /* decoded, NUL-terminated */
			size_t len;
		} str; /* TOML_STRING; also the source text of date-times */
		int64_t integer;
		double flt;
		bool boolean;
		struct {
			struct toml_value **items;
			size_t len;
		} array;
		struct {
			struct toml_keyval *items;
			size_t len;
		} table;
	} u;
};

struct toml_doc {
	struct arena arena;
	struct toml_value *root; /* TOML_TABLE */
};

struct toml_error {
	struct toml_pos pos;
	char message[256];
};

/*
 * Parse len bytes. On success returns a document (free with toml_doc_free);
 * on failure returns NULL and fills err with the position and a message.
 * Memory exhaustion is reported the same way.
 */
struct toml_doc *toml_parse(const char *buf, size_t len, struct toml_error *err);
void toml_doc_free(struct toml_doc *doc);

/* Look up a key in a table (NULL if absent or t is not a table). */
const struct toml_value *toml_table_get(const struct toml_value *t, const char *key);
const struct toml_keyval *toml_table_find(const struct toml_value *t, const char *key);

/* "string", "integer", ... as used in messages ("table", "array"). */
const char *toml_type_name(enum toml_type type);

#endif
