/*
 * config_load.h - unit tests' way to load a configuration from text: it
 * must load (the test fails with the diagnostics otherwise).
 */
#ifndef TERN_TESTS_SUPPORT_CONFIG_LOAD_H
#define TERN_TESTS_SUPPORT_CONFIG_LOAD_H

#include <stdio.h>
#include <string.h>

#include "config/settings.h"

static inline struct config *load(const char *text)
{
	struct diags diags;
	struct config *cfg;

	diags_init(&diags, "test.toml");
	cfg = config_load_buffer(text, strlen(text), "/tmp", 0, &diags);
	if (cfg == NULL)
		diags_print(&diags, stderr);
	diags_free(&diags);
	assert_non_null(cfg);
	return cfg;
}

#endif
