/*
 * settings.h - tern's configuration: load, validate, query, dump.
 *
 * The public surface of the config module. A struct config is immutable
 * once loaded; everything it holds lives in its arena and is released by
 * config_free. Keys are named by enum cfg_key, generated from the table in
 * keys.h. Keys that accept rules are evaluated with config_eval against a
 * rule_ctx; plain keys are read with config_get.
 */
#ifndef TERN_CONFIG_SETTINGS_H
#define TERN_CONFIG_SETTINGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/diag.h"
#include "config/keys.h"
#include "config/lists.h"
#include "config/rules.h"
#include "config/value.h"
#include "util/strbuf.h"

enum cfg_key {
#define CFG_KEY_ENUM(id, ...) CFG_##id,
	CFG_KEYS(CFG_KEY_ENUM)
#undef CFG_KEY_ENUM
	CFG_KEY_COUNT
};

/* Keys are global, or belong to one instance of a named section. */
enum cfg_group {
	CFG_GROUP_GLOBAL,
	CFG_GROUP_LISTENER,    /* server.listener.<id> */
	CFG_GROUP_CERTIFICATE, /* certificate.<id> */
	CFG_GROUP_REMOTE,      /* remote.<id> */
	CFG_GROUP_COUNT
};

struct cfg_key_def {
	const char *name;
	enum cfg_type type;
	unsigned flags;      /* K_* of keys.h */
	uint32_t vars;       /* RULE_VARS_* allowed in rules */
	const char *def;     /* default as TOML text or a $-word; NULL = none */
	const char *const *words;
	int64_t min, max;    /* integers; for CFG_IPADDR min is the family (4 or 6) */
	const char *help;
};

extern const struct cfg_key_def cfg_key_defs[CFG_KEY_COUNT];
enum cfg_group cfg_key_group(enum cfg_key key);

/* Word lists of CFG_WORD keys, in the order of their enums below. */
extern const char *const cfg_words_listener_protocol[];
extern const char *const cfg_words_remote_protocol[];
extern const char *const cfg_words_ip_strategy[];
extern const char *const cfg_words_resolver_type[];
extern const char *const cfg_words_auth_mechanism[];
enum cfg_ip_strategy { CFG_IPV4_ONLY, CFG_IPV6_ONLY, CFG_IPV4_THEN_IPV6, CFG_IPV6_THEN_IPV4 };
enum cfg_resolver_type { CFG_RESOLVER_TYPE_SYSTEM, CFG_RESOLVER_TYPE_CUSTOM };
enum cfg_protocol { CFG_PROTO_SMTP, CFG_PROTO_LMTP, CFG_PROTO_HTTP };

/* One [remote."id"], [server.listener."id"] or [certificate."id"]. */
struct cfg_section {
	const char *id;
	enum cfg_group group;
	struct toml_pos pos;
	const struct rule *rules[CFG_KEY_COUNT]; /* only this group's keys are set */
	bool written[CFG_KEY_COUNT]; /* the file sets it (even if invalid) */
};

struct config;

#define CONFIG_STRICT 0x1u /* unknown keys are errors, not warnings */

/* Load a file. Returns NULL when it has errors (all recorded in diags,
 * which the caller initialised with the file name). Warnings may be
 * recorded on success too. */
struct config *config_load_file(const char *path, unsigned flags, struct diags *diags);
/* Load from memory; dir is the folder relative paths are resolved in. */
struct config *config_load_buffer(const char *buf, size_t len, const char *dir,
				  unsigned flags, struct diags *diags);
void config_free(struct config *cfg);

const struct rule *config_rule(const struct config *cfg, enum cfg_key key);
/* A global key's value; for a key given as a rule, its else value. */
const struct cfg_value *config_get(const struct config *cfg, enum cfg_key key);
const struct cfg_value *config_eval(const struct config *cfg, enum cfg_key key,
				    const struct rule_ctx *ctx);

size_t config_section_count(const struct config *cfg, enum cfg_group group);
const struct cfg_section *config_section_at(const struct config *cfg, enum cfg_group group, size_t i);
const struct cfg_section *config_section_find(const struct config *cfg, enum cfg_group group,
					      const char *id, size_t id_len);
const struct cfg_value *cfg_section_get(const struct cfg_section *sec, enum cfg_key key);

const struct cfg_lists *config_lists(const struct config *cfg);

/* Effective settings, defaults included, as valid TOML. */
void config_dump(const struct config *cfg, struct strbuf *out);
/* Every key with type, default, rule variables and help (`tern config keys`). */
void config_describe_keys(struct strbuf *out);

#endif
