/*
 * rules.h - the rule language: compiled once at load, evaluated per
 * recipient / connection without allocating or re-parsing.
 *
 *   key = VALUE
 *   key = [ { if = "VAR", OP = "OPERAND", then = VALUE },
 *           { any-of = [ {if=..., OP=...}, ... ], then = VALUE },  (all-of, none-of)
 *           { else = VALUE } ]
 *
 * Entries are tried in order; the first whose condition holds gives the
 * value, else the else value. Operators: eq, ne (equal-to, not-equal-to),
 * starts-with, ends-with, matches (POSIX ERE, unanchored), in-list, and
 * not-starts-with, not-ends-with, not-matches, not-in-list. remote-ip and
 * local-ip compare eq/ne against an address or CIDR; priority compares eq/ne
 * as an integer. Groups nest at most RULE_MAX_DEPTH deep.
 *
 * A plain value compiles to a rule with only an else entry, so every
 * setting that accepts rules is evaluated the same way.
 */
#ifndef TERN_CONFIG_RULES_H
#define TERN_CONFIG_RULES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/diag.h"
#include "config/lists.h"
#include "config/toml.h"
#include "config/value.h"
#include "util/arena.h"
#include "util/ipaddr.h"
#include "util/strbuf.h"

#define RULE_MAX_DEPTH 10

enum rule_var {
	RULE_VAR_SENDER,
	RULE_VAR_SENDER_DOMAIN,
	RULE_VAR_RCPT,
	RULE_VAR_RCPT_DOMAIN,
	RULE_VAR_PRIORITY,
	RULE_VAR_MX,
	RULE_VAR_REMOTE_IP,
	RULE_VAR_LOCAL_IP,
	RULE_VAR_LISTENER,
	RULE_VAR_AUTHENTICATED_AS,
	RULE_VAR_COUNT
};

#define RULE_VAR_BIT(v) (1u << (v))
/* The variable sets of SPEC §2. */
#define RULE_VARS_S (RULE_VAR_BIT(RULE_VAR_SENDER) | RULE_VAR_BIT(RULE_VAR_SENDER_DOMAIN) | \
		     RULE_VAR_BIT(RULE_VAR_PRIORITY))
#define RULE_VARS_R (RULE_VARS_S | RULE_VAR_BIT(RULE_VAR_RCPT_DOMAIN))
#define RULE_VARS_M (RULE_VARS_R | RULE_VAR_BIT(RULE_VAR_MX))
#define RULE_VARS_H (RULE_VARS_M | RULE_VAR_BIT(RULE_VAR_REMOTE_IP) | RULE_VAR_BIT(RULE_VAR_LOCAL_IP))
#define RULE_VARS_C (RULE_VAR_BIT(RULE_VAR_LISTENER) | RULE_VAR_BIT(RULE_VAR_REMOTE_IP) | \
		     RULE_VAR_BIT(RULE_VAR_LOCAL_IP))
#define RULE_VARS_A (RULE_VARS_C | RULE_VAR_BIT(RULE_VAR_AUTHENTICATED_AS) | \
		     RULE_VAR_BIT(RULE_VAR_SENDER) | RULE_VAR_BIT(RULE_VAR_SENDER_DOMAIN) | \
		     RULE_VAR_BIT(RULE_VAR_RCPT) | RULE_VAR_BIT(RULE_VAR_RCPT_DOMAIN))

/* "sender", "rcpt-domain", ...; NULL for an out-of-range value. */
const char *rule_var_name(enum rule_var v);

/*
 * What a rule is evaluated against. Strings are borrowed, not copied; a
 * variable whose ptr is NULL is unknown and compares as the empty string.
 * Addresses and domains are expected lower-cased by the caller.
 * remote_ip/local_ip with family 0 match no address or prefix.
 */
struct rule_ctx {
	struct {
		const char *ptr;
		size_t len;
	} var[RULE_VAR_COUNT]; /* text of every variable, remote-ip/local-ip/priority included */
	int64_t priority;
	struct ipaddr remote_ip;
	struct ipaddr local_ip;
};

/*
 * Turns one TOML value (a plain value, or the then/else of an entry) into
 * a typed value. Reports its own errors to diags with the value's position
 * and returns false when the value is unusable.
 */
typedef bool (*rule_value_parse_fn)(void *ctx, const struct toml_value *v,
				    struct cfg_value *out, struct diags *diags);
/* Appends the TOML text of a value (for `config dump`). */
typedef void (*rule_value_dump_fn)(void *ctx, const struct cfg_value *v, struct strbuf *out);

struct rule_cond;

struct rule_entry {
	const struct rule_cond *cond; /* NULL for else */
	struct cfg_value value;
};

struct rule {
	const char *key;           /* full key name, for messages */
	struct rule_entry *entries; /* in order; the last is the else entry */
	size_t n_entries;
	bool plain;                 /* written as a plain value, not a rule array */
};

/* Compile flags */
#define RULE_LIST_VALUED 0x1u /* list setting: then/else may be omitted (empty list) */

/* Regexes compiled by rules are registered here so they can be freed. */
struct rule_regexes;

/*
 * Compile v as the value of key. allowed_vars is a RULE_VARS_* mask;
 * allow_rules false rejects rule arrays (the key takes only a plain value).
 * Returns NULL after recording errors in diags. regex state is recorded in
 * *regexes (created on first use, in the arena); free it with
 * rule_regexes_free when the arena goes.
 */
struct rule *rule_compile(struct arena *a, const char *key, const struct toml_value *v,
			  uint32_t allowed_vars, bool allow_rules, unsigned flags,
			  const struct cfg_lists *lists, struct rule_regexes **regexes,
			  rule_value_parse_fn parse, void *parse_ctx, struct diags *diags);

void rule_regexes_free(struct rule_regexes *regexes);

/* The value of the first entry whose condition holds. Never NULL. */
const struct cfg_value *rule_eval(const struct rule *r, const struct rule_ctx *ctx);

/* The TOML text of the rule as `config dump` prints it: the plain value, or
 * an array of inline tables with operands as written. */
void rule_dump(const struct rule *r, struct strbuf *out, rule_value_dump_fn dump, void *dump_ctx);

#endif
