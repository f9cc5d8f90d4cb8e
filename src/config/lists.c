/*
 * lists.c - the [list] section: named string sets for `in-list`; see lists.h.
 *
 * Each list keeps its entries in the order first defined (duplicates are
 * dropped: a list is a set) and an open-addressing hash table of indexes
 * into them, sized to a power of two and kept at most half full, so a
 * membership test is a hash and one or two probes with no allocation. The
 * table grows by rebuilding into a doubled one; the old one stays in the
 * arena, which costs at most as much again as the final table.
 *
 * Everything lives in the caller's arena. A file:// entry is read at load
 * time only; the file is not watched.
 */
#include "config/lists.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/diag.h"
#include "util/text.h"

#define LIST_FILE_PREFIX "file://"
#define LIST_REF_PREFIX "list/"
/* Slots hold index + 1 in 32 bits (0 = empty), which bounds a list. */
#define LIST_MAX_ENTRIES (UINT32_MAX / 4)

struct list_entry {
	const char *s; /* NUL-terminated copy; len is the truth */
	size_t len;
	uint64_t hash;
};

struct cfg_list {
	const char *id;
	size_t id_len;
	struct list_entry *entries;
	size_t n, cap;
	uint32_t *slots; /* index + 1 into entries, 0 = empty */
	size_t n_slots;  /* power of two, >= 2 * n */
};

struct cfg_lists {
	struct cfg_list **items;
	size_t n;
};

/* State of one list being built, for messages. */
struct list_build {
	struct arena *a;
	struct diags *diags;
	struct cfg_list *list;
	const char *key; /* "list.<id>" */
	bool oom_reported;
};

/* The slot holding s, or the empty slot where it would go. */
static size_t list_probe(const struct cfg_list *l, const char *s, size_t len, uint64_t hash)
{
	size_t mask = l->n_slots - 1;
	size_t i = (size_t)hash & mask;

	for (;;) {
		uint32_t slot = l->slots[i];

		if (slot == 0)
			return i;
		const struct list_entry *e = &l->entries[slot - 1];
		if (e->hash == hash && e->len == len && memcmp(e->s, s, len) == 0)
			return i;
		i = (i + 1) & mask;
	}
}

static bool list_rehash(struct arena *a, struct cfg_list *l, size_t n_slots)
{
	uint32_t *slots;

	if (n_slots > SIZE_MAX / sizeof(*slots))
		return false;
	slots = arena_alloc(a, n_slots * sizeof(*slots));
	if (slots == NULL)
		return false;
	l->slots = slots;
	l->n_slots = n_slots;
	for (size_t i = 0; i < l->n; i++) {
		const struct list_entry *e = &l->entries[i];
		l->slots[list_probe(l, e->s, e->len, e->hash)] = (uint32_t)(i + 1);
	}
	return true;
}

static void build_oom(struct list_build *b, struct toml_pos pos)
{
	if (b->oom_reported)
		return;
	b->oom_reported = true;
	diag_error(b->diags, pos, b->key, "out of memory while building the list");
}

/* Add one entry (copied); a duplicate is dropped. */
static void list_add(struct list_build *b, const char *s, size_t len, struct toml_pos pos)
{
	struct cfg_list *l = b->list;
	uint64_t hash = text_hash(s, len);
	size_t at;

	if (l->n >= LIST_MAX_ENTRIES) {
		if (l->n == LIST_MAX_ENTRIES)
			diag_error(b->diags, pos, b->key, "too many entries (more than %zu)",
				   (size_t)LIST_MAX_ENTRIES);
		return;
	}
	/* Keep the table at most half full so probes stay short. */
	if (l->n_slots == 0 || l->n + 1 > l->n_slots / 2) {
		if (!list_rehash(b->a, l, l->n_slots == 0 ? 16 : l->n_slots * 2)) {
			build_oom(b, pos);
			return;
		}
	}
	at = list_probe(l, s, len, hash);
	if (l->slots[at] != 0)
		return;
	if (l->n == l->cap) {
		size_t cap = l->cap == 0 ? 16 : l->cap * 2;
		struct list_entry *e = arena_grow(b->a, l->entries, l->n, cap, sizeof(*e));

		if (e == NULL) {
			build_oom(b, pos);
			return;
		}
		l->entries = e;
		l->cap = cap;
	}
	char *copy = arena_strndup(b->a, s, len);
	if (copy == NULL) {
		build_oom(b, pos);
		return;
	}
	l->entries[l->n] = (struct list_entry){ .s = copy, .len = len, .hash = hash };
	l->n++;
	l->slots[at] = (uint32_t)l->n;
}

static bool is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

/* Read path: one entry per line, trimmed, blank lines skipped. pos is
 * where the file:// string was written; errors point there. */
static void list_add_file(struct list_build *b, const char *path, struct toml_pos pos)
{
	FILE *f;
	char *line = NULL;
	size_t line_cap = 0;
	ssize_t got;
	unsigned long lineno = 0;

	f = fopen(path, "r");
	if (f == NULL) {
		diag_error(b->diags, pos, b->key, "cannot read list file %s: %s", path, strerror(errno));
		return;
	}
	errno = 0;
	while ((got = getline(&line, &line_cap, f)) != -1) {
		size_t start = 0, end = (size_t)got;

		lineno++;
		while (start < end && is_space(line[start]))
			start++;
		while (end > start && is_space(line[end - 1]))
			end--;
		if (start == end)
			continue;
		/* Entries are handed out as C strings (cfg_list_entry). */
		if (memchr(line + start, '\0', end - start) != NULL) {
			diag_error(b->diags, pos, b->key, "list file %s: line %lu contains a NUL byte",
				   path, lineno);
			continue;
		}
		list_add(b, line + start, end - start, pos);
		errno = 0;
	}
	if (ferror(f))
		diag_error(b->diags, pos, b->key, "cannot read list file %s: %s", path,
			   strerror(errno != 0 ? errno : EIO));
	free(line);
	fclose(f);
}

static void list_add_value(struct list_build *b, const struct toml_value *v)
{
	const char *s;
	size_t len, plen = sizeof(LIST_FILE_PREFIX) - 1;

	if (v->type != TOML_STRING) {
		diag_error(b->diags, v->pos, b->key, "list entries must be strings, not %s",
			   toml_type_name(v->type));
		return;
	}
	s = v->u.str.ptr;
	len = v->u.str.len;
	/* Entries are handed out as C strings (cfg_list_entry), and a path
	 * with a NUL would name another file. */
	if (memchr(s, '\0', len) != NULL) {
		diag_error(b->diags, v->pos, b->key, "list entry contains a NUL character");
		return;
	}
	if (len < plen || memcmp(s, LIST_FILE_PREFIX, plen) != 0) {
		list_add(b, s, len, v->pos);
		return;
	}
	if (len == plen || s[plen] != '/') {
		diag_error(b->diags, v->pos, b->key,
			   "list file must be an absolute path (file:///path), not \"%s\"", s);
		return;
	}
	list_add_file(b, s + plen, v->pos);
}

static struct cfg_list *list_build(struct arena *a, const struct toml_keyval *kv,
				   struct diags *diags)
{
	struct cfg_list *l = arena_alloc(a, sizeof(*l));
	char *id = arena_strndup(a, kv->key, kv->key_len);
	char key[256];
	struct list_build b;
	const struct toml_value *v = kv->value;

	snprintf(key, sizeof(key), "list.%s", kv->key);
	if (l == NULL || id == NULL) {
		diag_error(diags, kv->key_pos, key, "out of memory while building the list");
		return NULL;
	}
	l->id = id;
	l->id_len = kv->key_len;
	b = (struct list_build){ .a = a, .diags = diags, .list = l, .key = key };

	if (v->type == TOML_ARRAY) {
		for (size_t i = 0; i < v->u.array.len; i++)
			list_add_value(&b, v->u.array.items[i]);
	} else if (v->type == TOML_STRING) {
		list_add_value(&b, v);
	} else {
		diag_error(diags, v->pos, key, "a list is a string or an array of strings, not %s",
			   toml_type_name(v->type));
	}
	return l;
}

struct cfg_lists *cfg_lists_load(struct arena *a, const struct toml_value *list_table,
				 struct diags *diags)
{
	struct cfg_lists *ls = arena_alloc(a, sizeof(*ls));
	struct toml_pos pos = { 0, 0 };

	if (list_table != NULL)
		pos = list_table->pos;
	if (ls == NULL) {
		diag_error(diags, pos, "list", "out of memory while building lists");
		return NULL;
	}
	if (list_table == NULL)
		return ls;
	if (list_table->type != TOML_TABLE) {
		diag_error(diags, list_table->pos, "list", "[list] must be a table, not %s",
			   toml_type_name(list_table->type));
		return ls;
	}
	size_t n = list_table->u.table.len;
	if (n > 0) {
		ls->items = arena_grow(a, NULL, 0, n, sizeof(*ls->items));
		if (ls->items == NULL) {
			diag_error(diags, list_table->pos, "list", "out of memory while building lists");
			return ls;
		}
	}
	for (size_t i = 0; i < n; i++) {
		struct cfg_list *l = list_build(a, &list_table->u.table.items[i], diags);

		if (l != NULL)
			ls->items[ls->n++] = l;
	}
	return ls;
}

const struct cfg_list *cfg_lists_find(const struct cfg_lists *lists, const char *id, size_t id_len)
{
	if (lists == NULL || id == NULL)
		return NULL;
	for (size_t i = 0; i < lists->n; i++) {
		const struct cfg_list *l = lists->items[i];

		if (l->id_len == id_len && memcmp(l->id, id, id_len) == 0)
			return l;
	}
	return NULL;
}

const struct cfg_list *cfg_lists_ref(const struct cfg_lists *lists, const char *ref, size_t ref_len)
{
	size_t plen = sizeof(LIST_REF_PREFIX) - 1;

	if (ref == NULL || ref_len <= plen || memcmp(ref, LIST_REF_PREFIX, plen) != 0)
		return NULL;
	return cfg_lists_find(lists, ref + plen, ref_len - plen);
}

bool cfg_list_contains(const struct cfg_list *list, const char *s, size_t len)
{
	if (list == NULL || list->n == 0)
		return false;
	if (s == NULL) {
		if (len != 0)
			return false;
		s = "";
	}
	return list->slots[list_probe(list, s, len, text_hash(s, len))] != 0;
}

const char *cfg_list_id(const struct cfg_list *list)
{
	return list != NULL ? list->id : NULL;
}

size_t cfg_list_count(const struct cfg_list *list)
{
	return list != NULL ? list->n : 0;
}

const char *cfg_list_entry(const struct cfg_list *list, size_t i)
{
	return (list != NULL && i < list->n) ? list->entries[i].s : NULL;
}

size_t cfg_lists_count(const struct cfg_lists *lists)
{
	return lists != NULL ? lists->n : 0;
}

const struct cfg_list *cfg_lists_at(const struct cfg_lists *lists, size_t i)
{
	return (lists != NULL && i < lists->n) ? lists->items[i] : NULL;
}
