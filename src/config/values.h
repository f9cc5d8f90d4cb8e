/*
 * values.h - parse one TOML value into a typed setting value, and print it
 * back as TOML. Used as the rule compiler's value callbacks, so a rule's
 * then/else values are checked exactly like a plain value.
 */
#ifndef TERN_CONFIG_VALUES_H
#define TERN_CONFIG_VALUES_H

#include <stdbool.h>
#include <stdint.h>

#include "config/diag.h"
#include "config/value.h"
#include "util/strbuf.h"

struct cfg_key_def;
struct config;

/* What the value callbacks need to know about the key being loaded. */
struct cfg_value_ctx {
	const struct cfg_key_def *def;
	const char *key;           /* full key name for messages */
	struct config *cfg;        /* arena, lists, sections, config folder */
};

bool cfg_value_parse(void *ctx, const struct toml_value *v, struct cfg_value *out,
		     struct diags *diags);
void cfg_value_dump(void *ctx, const struct cfg_value *v, struct strbuf *out);

/* "5m" -> 300000. Returns false with a message in err (size errlen). */
bool cfg_parse_duration(const char *s, size_t len, int64_t *ms, char *err, size_t errlen);
/* 300000 -> "5m": the largest unit that divides the value. */
void cfg_format_duration(int64_t ms, struct strbuf *out);

#endif
