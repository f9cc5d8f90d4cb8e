/*
 * lists.h - the [list] section: named sets of strings for `in-list`.
 *
 * [list] <id> = "entry" | ["entry", "file:///path", ...]
 * A file:// entry adds one entry per line of the file (whitespace trimmed,
 * blank lines skipped). Membership is exact and case-sensitive, answered
 * from a hash table so rules can test it on the delivery hot path
 * without allocating.
 */
#ifndef TERN_CONFIG_LISTS_H
#define TERN_CONFIG_LISTS_H

#include <stdbool.h>
#include <stddef.h>

#include "config/diag.h"
#include "config/toml.h"
#include "util/arena.h"

struct cfg_list;
struct cfg_lists;

/* Build every list of the [list] table (may be NULL: no lists). Problems
 * go to diags; lists with errors are still created (possibly partial) so
 * references to them do not cascade into more errors. */
struct cfg_lists *cfg_lists_load(struct arena *a, const struct toml_value *list_table,
				 struct diags *diags);

/* Find a list by its id ("domains"), NULL when undefined. */
const struct cfg_list *cfg_lists_find(const struct cfg_lists *lists, const char *id, size_t id_len);

/* Resolve a "list/<id>" reference; NULL when not of that form or undefined. */
const struct cfg_list *cfg_lists_ref(const struct cfg_lists *lists, const char *ref, size_t ref_len);

bool cfg_list_contains(const struct cfg_list *list, const char *s, size_t len);
const char *cfg_list_id(const struct cfg_list *list);
size_t cfg_list_count(const struct cfg_list *list);
/* Entry i in the order defined (for dumps). */
const char *cfg_list_entry(const struct cfg_list *list, size_t i);

size_t cfg_lists_count(const struct cfg_lists *lists);
const struct cfg_list *cfg_lists_at(const struct cfg_lists *lists, size_t i);

#endif
