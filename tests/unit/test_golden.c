/*
 * test_golden.c - configuration golden files: tests/golden/config/NAME.toml
 * is loaded and what tern prints for it (the diagnostics, then the
 * `config dump` when it loaded) must equal NAME.out byte for byte.
 *
 * "@DIR@" in a .toml stands for the golden folder's absolute path (for
 * file:// lists and secrets) and is written back as "@DIR@" in the output.
 * The machine's host name (the default of server.hostname) is written as
 * "@HOSTNAME@" where it appears as a whole quoted value or after an '@'.
 * A name containing "strict" is loaded with --strict. Set UPDATE_GOLDEN=1
 * to rewrite the .out files after reviewing a change in the output.
 */
#include <dirent.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "config/settings.h"
#include "util/strbuf.h"

#ifndef GOLDEN_DIR
#define GOLDEN_DIR "tests/golden/config"
#endif

static char golden_abs[PATH_MAX];

static char *read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	struct strbuf sb;
	char buf[4096];
	size_t n;

	if (f == NULL)
		return NULL;
	strbuf_init(&sb);
	while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
		strbuf_append(&sb, buf, n);
	fclose(f);
	if (sb.data == NULL)
		strbuf_append(&sb, "", 0);
	*len = sb.len;
	return sb.data;
}

/* Replace every occurrence of from with to. */
static void replace_all(struct strbuf *out, const char *in, size_t len, const char *from, const char *to)
{
	size_t flen = strlen(from);

	for (size_t i = 0; i < len;) {
		if (flen > 0 && i + flen <= len && memcmp(in + i, from, flen) == 0) {
			strbuf_puts(out, to);
			i += flen;
		} else {
			strbuf_putc(out, in[i++]);
		}
	}
}

static void mask_hostname(struct strbuf *sb)
{
	char host[HOST_NAME_MAX + 1], quoted[HOST_NAME_MAX + 4], at[HOST_NAME_MAX + 4];
	struct strbuf tmp;

	if (gethostname(host, sizeof(host)) != 0)
		return;
	host[HOST_NAME_MAX] = '\0';
	snprintf(quoted, sizeof(quoted), "\"%s\"", host);
	snprintf(at, sizeof(at), "@%s\"", host);
	strbuf_init(&tmp);
	replace_all(&tmp, sb->data, sb->len, quoted, "\"@HOSTNAME@\"");
	strbuf_reset(sb);
	replace_all(sb, tmp.data, tmp.len, at, "@@HOSTNAME@\"");
	strbuf_free(&tmp);
}

static void run_golden(void **state)
{
	const char *name = *state;
	char path[PATH_MAX], out_path[PATH_MAX];
	size_t len, exp_len, got_len;
	char *text, *expected, *diag_text = NULL;
	struct strbuf input, output, final;
	struct diags diags;
	struct config *cfg;
	FILE *mem;

	snprintf(path, sizeof(path), "%s/%s.toml", GOLDEN_DIR, name);
	snprintf(out_path, sizeof(out_path), "%s/%s.out", GOLDEN_DIR, name);
	text = read_file(path, &len);
	assert_non_null(text);
	strbuf_init(&input);
	replace_all(&input, text, len, "@DIR@", golden_abs);
	free(text);

	char file_name[300];
	snprintf(file_name, sizeof(file_name), "%s.toml", name);
	diags_init(&diags, file_name);
	cfg = config_load_buffer(input.data, input.len, golden_abs,
				 strstr(name, "strict") != NULL ? CONFIG_STRICT : 0, &diags);
	mem = open_memstream(&diag_text, &got_len);
	assert_non_null(mem);
	diags_print(&diags, mem);
	fclose(mem);
	diags_free(&diags);

	strbuf_init(&output);
	strbuf_append(&output, diag_text, got_len);
	free(diag_text);
	if (cfg != NULL) {
		config_dump(cfg, &output);
		config_free(cfg);
	}
	strbuf_init(&final);
	replace_all(&final, output.data, output.len, golden_abs, "@DIR@");
	mask_hostname(&final);

	if (getenv("UPDATE_GOLDEN") != NULL) {
		FILE *f = fopen(out_path, "wb");
		assert_non_null(f);
		fwrite(final.data, 1, final.len, f);
		fclose(f);
	}
	expected = read_file(out_path, &exp_len);
	if (expected == NULL)
		fail_msg("%s is missing; its output would be:\n%s", out_path, strbuf_str(&final));
	if (exp_len != final.len || memcmp(expected, final.data, exp_len) != 0)
		fail_msg("%s differs.\n--- expected\n%s--- got\n%s", out_path, expected,
			 strbuf_str(&final));
	free(expected);
	strbuf_free(&input);
	strbuf_free(&output);
	strbuf_free(&final);
}

static int name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int main(void)
{
	DIR *d = opendir(GOLDEN_DIR);
	struct dirent *e;
	char **names = NULL;
	size_t n = 0, cap = 0;
	struct CMUnitTest *tests;
	int rc;

	if (d == NULL || realpath(GOLDEN_DIR, golden_abs) == NULL) {
		fprintf(stderr, "cannot open %s (run from the repository root)\n", GOLDEN_DIR);
		return 1;
	}
	while ((e = readdir(d)) != NULL) {
		size_t l = strlen(e->d_name);

		if (l < 6 || strcmp(e->d_name + l - 5, ".toml") != 0)
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 64;
			names = realloc(names, cap * sizeof(*names));
			assert_non_null(names);
		}
		names[n++] = strndup(e->d_name, l - 5);
	}
	closedir(d);
	qsort(names, n, sizeof(*names), name_cmp);
	tests = calloc(n ? n : 1, sizeof(*tests));
	for (size_t i = 0; i < n; i++) {
		tests[i].name = names[i];
		tests[i].test_func = run_golden;
		tests[i].initial_state = names[i];
	}
	rc = _cmocka_run_group_tests("golden", tests, n, NULL, NULL);
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	free(tests);
	return rc;
}
