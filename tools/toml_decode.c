/*
 * toml_decode.c - build/toml-decode, the toml-test decoder for tern's TOML
 * parser.
 *
 * Reads all of stdin as bytes (the length read, never strlen: inputs may
 * hold NULs), parses it and writes toml-test's tagged JSON on stdout, exit
 * 0; on invalid input writes "toml-decode: LINE:COL: message" on stderr and
 * exits 1. Exit 2 is for trouble that is not about the input (I/O, memory).
 *
 * The output is valid JSON and valid UTF-8: the parser guarantees decoded
 * strings are UTF-8, and strbuf_put_quoted escapes control characters.
 * Recursion follows the tree, whose depth the parser bounds.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/toml.h"
#include "util/strbuf.h"

static const char *tag_name(enum toml_type type)
{
	switch (type) {
	case TOML_STRING: return "string";
	case TOML_INTEGER: return "integer";
	case TOML_FLOAT: return "float";
	case TOML_BOOL: return "bool";
	case TOML_DATETIME: return "datetime";
	case TOML_DATETIME_LOCAL: return "datetime-local";
	case TOML_DATE_LOCAL: return "date-local";
	case TOML_TIME_LOCAL: return "time-local";
	case TOML_ARRAY:
	case TOML_TABLE:
		break;
	}
	return NULL;
}

/* The shortest %g form that reads back as the same double. */
static void put_float(struct strbuf *out, double d)
{
	char buf[40];

	if (isnan(d)) {
		strbuf_puts(out, "nan");
		return;
	}
	if (isinf(d)) {
		strbuf_puts(out, d < 0 ? "-inf" : "inf");
		return;
	}
	for (int prec = 15; prec <= 17; prec++) {
		snprintf(buf, sizeof(buf), "%.*g", prec, d);
		if (strtod(buf, NULL) == d)
			break;
	}
	strbuf_puts(out, buf);
}

static void put_value(struct strbuf *out, const struct toml_value *v)
{
	switch (v->type) {
	case TOML_TABLE:
		strbuf_putc(out, '{');
		for (size_t i = 0; i < v->u.table.len; i++) {
			const struct toml_keyval *kv = &v->u.table.items[i];

			if (i > 0)
				strbuf_putc(out, ',');
			strbuf_put_quoted(out, kv->key, kv->key_len);
			strbuf_putc(out, ':');
			put_value(out, kv->value);
		}
		strbuf_putc(out, '}');
		return;
	case TOML_ARRAY:
		strbuf_putc(out, '[');
		for (size_t i = 0; i < v->u.array.len; i++) {
			if (i > 0)
				strbuf_putc(out, ',');
			put_value(out, v->u.array.items[i]);
		}
		strbuf_putc(out, ']');
		return;
	default:
		break;
	}
	strbuf_printf(out, "{\"type\":\"%s\",\"value\":", tag_name(v->type));
	switch (v->type) {
	case TOML_INTEGER:
		strbuf_printf(out, "\"%" PRId64 "\"", v->u.integer);
		break;
	case TOML_FLOAT:
		strbuf_putc(out, '"');
		put_float(out, v->u.flt);
		strbuf_putc(out, '"');
		break;
	case TOML_BOOL:
		strbuf_puts(out, v->u.boolean ? "\"true\"" : "\"false\"");
		break;
	default: /* strings, and date-times as their source text */
		strbuf_put_quoted(out, v->u.str.ptr, v->u.str.len);
		break;
	}
	strbuf_putc(out, '}');
}

static bool read_all(FILE *f, struct strbuf *in)
{
	char chunk[65536];
	size_t n;

	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		strbuf_append(in, chunk, n);
	return !ferror(f) && !strbuf_failed(in);
}

int main(void)
{
	struct strbuf in, out;
	struct toml_error err;
	struct toml_doc *doc;
	int status = 0;

	strbuf_init(&in);
	if (!read_all(stdin, &in)) {
		fprintf(stderr, "toml-decode: cannot read standard input\n");
		strbuf_free(&in);
		return 2;
	}
	doc = toml_parse(in.data, in.len, &err);
	strbuf_free(&in);
	if (doc == NULL) {
		fprintf(stderr, "toml-decode: %" PRIu32 ":%" PRIu32 ": %s\n", err.pos.line,
			err.pos.col, err.message);
		return 1;
	}

	strbuf_init(&out);
	put_value(&out, doc->root);
	strbuf_putc(&out, '\n');
	toml_doc_free(doc);
	if (strbuf_failed(&out)) {
		fprintf(stderr, "toml-decode: out of memory\n");
		status = 2;
	} else if (fwrite(out.data, 1, out.len, stdout) != out.len || fflush(stdout) != 0) {
		fprintf(stderr, "toml-decode: cannot write standard output\n");
		status = 2;
	}
	strbuf_free(&out);
	return status;
}
