/*
 * internal.h - what the files of the config module share and nothing else
 * sees: the layout of struct config.
 */
#ifndef TERN_CONFIG_INTERNAL_H
#define TERN_CONFIG_INTERNAL_H

#include "config/settings.h"
#include "util/arena.h"

struct cfg_sections {
	struct cfg_section **items;
	size_t len, cap;
};

struct config {
	struct arena arena;
	const char *dir;        /* folder of the config file, for relative paths */
	const char *hostname;   /* effective server.hostname, for $-defaults */
	struct cfg_lists *lists;
	struct rule_regexes *regexes;
	const struct rule *global[CFG_KEY_COUNT];
	struct cfg_sections sections[CFG_GROUP_COUNT];
	/* TOML documents whose strings compiled values borrow */
	struct toml_doc **docs;
	size_t n_docs, cap_docs;
};

/* Keep doc alive (and free it) with the config; false when out of memory. */
bool config_keep_doc(struct config *cfg, struct toml_doc *doc);

/* Print a key segment bare when TOML allows it, else quoted. */
void cfg_put_key_segment(struct strbuf *out, const char *seg, size_t len);

#endif
