/*
 * diag.c - collect and print configuration diagnostics; see diag.h.
 *
 * Messages are formatted once, when recorded, and printed sorted by file
 * position so the output reads top to bottom like the file. Recording may
 * fail for lack of memory; that is remembered and reported at print time
 * rather than lost silently.
 */
#include "config/diag.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "util/strbuf.h"

void diags_init(struct diags *d, const char *file)
{
	memset(d, 0, sizeof(*d));
	d->file = file;
}

void diags_free(struct diags *d)
{
	for (size_t i = 0; i < d->len; i++) {
		free(d->items[i].key);
		free(d->items[i].message);
	}
	free(d->items);
	diags_init(d, NULL);
}

void diag_add(struct diags *d, enum diag_level level, struct toml_pos pos,
	      const char *key, const char *fmt, ...)
{
	struct strbuf msg;
	va_list ap;
	struct diag *item;

	if (level == DIAG_ERROR)
		d->errors++;
	if (d->len == d->cap) {
		size_t cap = d->cap ? d->cap * 2 : 16;
		struct diag *items = realloc(d->items, cap * sizeof(*items));

		if (items == NULL) {
			d->failed = true;
			return;
		}
		d->items = items;
		d->cap = cap;
	}
	strbuf_init(&msg);
	va_start(ap, fmt);
	strbuf_vprintf(&msg, fmt, ap);
	va_end(ap);
	item = &d->items[d->len];
	item->level = level;
	item->file = d->file;
	item->pos = pos;
	item->key = strdup(key != NULL ? key : "");
	item->message = msg.data;
	if (item->key == NULL || item->message == NULL || strbuf_failed(&msg)) {
		free(item->key);
		strbuf_free(&msg);
		d->failed = true;
		return;
	}
	d->len++;
}

static int diag_cmp(const void *pa, const void *pb)
{
	const struct diag *a = pa, *b = pb;

	if (a->pos.line != b->pos.line)
		return a->pos.line < b->pos.line ? -1 : 1;
	if (a->pos.col != b->pos.col)
		return a->pos.col < b->pos.col ? -1 : 1;
	/* Same place: keep recording order (qsort is not stable). */
	return a < b ? -1 : (a > b);
}

void diags_print(struct diags *d, FILE *out)
{
	if (d->len > 1)
		qsort(d->items, d->len, sizeof(d->items[0]), diag_cmp);
	for (size_t i = 0; i < d->len; i++) {
		const struct diag *g = &d->items[i];
		const char *file = g->file != NULL ? g->file : "-";

		if (g->pos.line > 0)
			fprintf(out, "%s:%u:%u: ", file, (unsigned)g->pos.line, (unsigned)g->pos.col);
		else
			fprintf(out, "%s: ", file);
		if (g->key[0] != '\0')
			fprintf(out, "%s: ", g->key);
		fprintf(out, "%s%s\n", g->level == DIAG_WARNING ? "warning: " : "", g->message);
	}
	if (d->failed)
		fprintf(out, "%s: out of memory while recording problems; some are not shown\n",
			d->file != NULL ? d->file : "-");
}
