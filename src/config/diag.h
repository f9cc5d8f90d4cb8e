/*
 * diag.h - configuration diagnostics: errors and warnings with locations.
 *
 * Loading never stops at the first mistake: every problem is collected so
 * that `tern config check` shows them all at once, each printed as
 *     FILE:LINE:COL: key: message
 * (warnings as FILE:LINE:COL: key: warning: message). Under --strict the
 * loader records would-be warnings as errors.
 */
#ifndef TERN_CONFIG_DIAG_H
#define TERN_CONFIG_DIAG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "config/toml.h"

enum diag_level { DIAG_ERROR, DIAG_WARNING };

struct diag {
	enum diag_level level;
	const char *file; /* file the position refers to (a list file may differ) */
	struct toml_pos pos;
	char *key;     /* full dotted key; may be empty */
	char *message;
};

struct diags {
	struct diag *items;
	size_t len, cap;
	size_t errors;
	const char *file; /* default file for positions */
	bool failed;      /* out of memory while recording */
};

void diags_init(struct diags *d, const char *file);
void diags_free(struct diags *d);
void diag_add(struct diags *d, enum diag_level level, struct toml_pos pos,
	      const char *key, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));
#define diag_error(d, pos, key, ...) diag_add((d), DIAG_ERROR, (pos), (key), __VA_ARGS__)
#define diag_warn(d, pos, key, ...) diag_add((d), DIAG_WARNING, (pos), (key), __VA_ARGS__)
/* Print in the order recorded, sorted by position. */
void diags_print(struct diags *d, FILE *out);

#endif
