/*
 * values.c - typed setting values: TOML in, checked value out, TOML back.
 *
 * Every check of a single value lives here: types, integer ranges,
 * durations and their units, policy and other words, "no value" words,
 * IP addresses, bind and name-server addresses, references to lists,
 * remotes and certificates, file:// secrets and relative paths. Each
 * problem becomes one diagnostic at the value's position.
 */
#include "config/values.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "config/internal.h"
#include "util/fileio.h"

/* Files named by file:// secrets are small; refuse anything absurd. */
#define CFG_SECRET_MAX (1024 * 1024)

static bool str_ieq(const char *a, size_t alen, const char *b)
{
	return alen == strlen(b) && strncasecmp(a, b, alen) == 0;
}

/* false, "", "false", 0, "0", "never", "disable", "disabled" */
static bool is_no_value(const struct toml_value *v)
{
	static const char *const words[] = { "", "false", "0", "never", "disable", "disabled" };

	if (v->type == TOML_BOOL)
		return !v->u.boolean;
	if (v->type == TOML_INTEGER)
		return v->u.integer == 0;
	if (v->type != TOML_STRING)
		return false;
	for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++)
		if (str_ieq(v->u.str.ptr, v->u.str.len, words[i]))
			return true;
	return false;
}

static const char *expected_name(enum cfg_type type)
{
	switch (type) {
	case CFG_STRING: return "a string";
	case CFG_SECRET: return "a string (or file:///path)";
	case CFG_INT: return "an integer";
	case CFG_BOOL: return "true or false";
	case CFG_DURATION: return "a duration such as \"30s\", \"5m\", \"2h\" or \"1d\"";
	case CFG_SIZE: return "a size in bytes (an integer)";
	case CFG_WORD: return "a string";
	case CFG_POLICY: return "\"optional\", \"require\" or \"disable\"";
	case CFG_IPADDR: return "an IP address (a string)";
	case CFG_BIND: return "an address and port such as \"127.0.0.1:25\" or \"[::1]:25\"";
	case CFG_REMOTE: return "the id of a [remote.\"<id>\"] host";
	case CFG_LISTREF: return "a list reference \"list/<id>\"";
	case CFG_CERTREF: return "the id of a [certificate.\"<id>\"]";
	case CFG_NSADDR: return "a name server such as \"udp://127.0.0.1:53\"";
	case CFG_PATH: return "a path (a string)";
	}
	return "a value";
}

static bool type_error(struct cfg_value_ctx *c, const struct toml_value *v, struct diags *diags)
{
	if (v->type == TOML_STRING)
		diag_error(diags, v->pos, c->key, "expected %s, got the string \"%.*s\"",
			   expected_name(c->def->type), (int)(v->u.str.len > 60 ? 60 : v->u.str.len),
			   v->u.str.ptr);
	else
		diag_error(diags, v->pos, c->key, "expected %s, got %s %s",
			   expected_name(c->def->type),
			   v->type == TOML_INTEGER || v->type == TOML_ARRAY ? "an" : "a",
			   toml_type_name(v->type));
	return false;
}

bool cfg_parse_duration(const char *s, size_t len, int64_t *ms, char *err, size_t errlen)
{
	static const struct { const char *unit; int64_t ms; } units[] = {
		{ "ms", 1 }, { "s", 1000 }, { "m", 60000 }, { "h", 3600000 }, { "d", 86400000 },
	};
	size_t i = 0, unit_start;
	int64_t n = 0;

	while (i < len && isspace((unsigned char)s[i]))
		i++;
	if (i < len && s[i] == '-') {
		snprintf(err, errlen, "a duration must be positive");
		return false;
	}
	if (i == len || !isdigit((unsigned char)s[i])) {
		snprintf(err, errlen, "expected a duration such as \"30s\", \"5m\", \"2h\" or \"1d\"");
		return false;
	}
	for (; i < len && isdigit((unsigned char)s[i]); i++) {
		if (n > (INT64_MAX - 9) / 10) {
			snprintf(err, errlen, "duration is too large");
			return false;
		}
		n = n * 10 + (s[i] - '0');
	}
	while (i < len && isspace((unsigned char)s[i]))
		i++;
	unit_start = i;
	while (i < len && !isspace((unsigned char)s[i]))
		i++;
	size_t unit_len = i - unit_start;
	while (i < len && isspace((unsigned char)s[i]))
		i++;
	if (i != len) {
		snprintf(err, errlen, "unexpected text after the duration");
		return false;
	}
	int64_t factor = 1; /* a bare number means milliseconds */
	if (unit_len > 0) {
		size_t u;

		for (u = 0; u < sizeof(units) / sizeof(units[0]); u++)
			if (str_ieq(s + unit_start, unit_len, units[u].unit))
				break;
		if (u == sizeof(units) / sizeof(units[0])) {
			snprintf(err, errlen, "unknown duration unit \"%.*s\" (use ms, s, m, h or d)",
				 (int)(unit_len > 20 ? 20 : unit_len), s + unit_start);
			return false;
		}
		factor = units[u].ms;
	}
	if (n == 0) {
		snprintf(err, errlen, "a duration must be positive");
		return false;
	}
	if (n > INT64_MAX / factor) {
		snprintf(err, errlen, "duration is too large");
		return false;
	}
	*ms = n * factor;
	return true;
}

void cfg_format_duration(int64_t ms, struct strbuf *out)
{
	static const struct { const char *unit; int64_t ms; } units[] = {
		{ "d", 86400000 }, { "h", 3600000 }, { "m", 60000 }, { "s", 1000 },
	};

	for (size_t u = 0; u < sizeof(units) / sizeof(units[0]); u++) {
		if (ms % units[u].ms == 0) {
			strbuf_printf(out, "\"%" PRId64 "%s\"", ms / units[u].ms, units[u].unit);
			return;
		}
	}
	strbuf_printf(out, "\"%" PRId64 "ms\"", ms);
}

static const struct {
	const char *word;
	enum cfg_policy policy;
} policy_words[] = {
	{ "optional", CFG_POLICY_OPTIONAL }, { "require", CFG_POLICY_REQUIRE },
	{ "required", CFG_POLICY_REQUIRE },  { "disable", CFG_POLICY_DISABLE },
	{ "disabled", CFG_POLICY_DISABLE },  { "none", CFG_POLICY_DISABLE },
	{ "false", CFG_POLICY_DISABLE },
};
static const char *const policy_canonical[] = { "optional", "require", "disable" };

/* Read a whole file:// file for a secret or certificate. */
static bool read_secret_file(struct cfg_value_ctx *c, const struct toml_value *v, const char *path,
			     struct cfg_value *out, struct diags *diags)
{
	char *data;
	size_t len;
	int err = file_read_all(path, CFG_SECRET_MAX, &data, &len);

	if (err != 0) {
		diag_error(diags, v->pos, c->key, "cannot read %s: %s", path,
			   err == EFBIG ? "larger than 1 MiB" : strerror(err));
		return false;
	}
	/* A secret written with an editor ends in a newline that is not part of it. */
	while (len > 0 && (data[len - 1] == '\n' || data[len - 1] == '\r'))
		len--;
	out->str = arena_strndup(&c->cfg->arena, data, len);
	free(data);
	if (out->str == NULL)
		return false;
	out->len = len;
	out->written = v->u.str.ptr;
	return true;
}

/* "[v6]:port", "v4:port"; also "udp://..." for name servers (default port 53). */
static bool parse_host_port(const char *s, size_t len, int default_port, struct ipaddr *addr,
			    int64_t *port)
{
	const char *host = s, *colon = NULL;
	size_t host_len;

	if (len > 0 && s[0] == '[') {
		const char *close = memchr(s, ']', len);
		if (close == NULL)
			return false;
		host = s + 1;
		host_len = (size_t)(close - host);
		if ((size_t)(close - s) + 1 < len) {
			if (close[1] != ':')
				return false;
			colon = close + 1;
		}
	} else {
		colon = memrchr(s, ':', len);
		/* More than one colon without brackets is a bare IPv6 address. */
		if (colon != NULL && memchr(s, ':', (size_t)(colon - s)) != NULL)
			colon = NULL;
		host_len = colon != NULL ? (size_t)(colon - s) : len;
	}
	if (!ipaddr_parse(host, host_len, addr))
		return false;
	if (colon == NULL) {
		if (default_port < 0)
			return false;
		*port = default_port;
		return true;
	}
	const char *p = colon + 1, *end = s + len;
	int64_t n = 0;
	if (p == end)
		return false;
	for (; p < end; p++) {
		if (!isdigit((unsigned char)*p) || n > 65535)
			return false;
		n = n * 10 + (*p - '0');
	}
	if (n < 1 || n > 65535)
		return false;
	*port = n;
	return true;
}

static bool section_exists(struct config *cfg, enum cfg_group group, const char *id, size_t len)
{
	return config_section_find(cfg, group, id, len) != NULL;
}

/* Resolve a possibly relative path against the config file's folder. */
static const char *resolve_path(struct config *cfg, const char *path, size_t len)
{
	struct strbuf sb;
	const char *res;

	if (len > 0 && path[0] == '/')
		return arena_strndup(&cfg->arena, path, len);
	strbuf_init(&sb);
	strbuf_puts(&sb, cfg->dir != NULL ? cfg->dir : ".");
	strbuf_putc(&sb, '/');
	strbuf_append(&sb, path, len);
	res = strbuf_failed(&sb) ? NULL : arena_strndup(&cfg->arena, sb.data, sb.len);
	strbuf_free(&sb);
	return res;
}

static bool parse_scalar(struct cfg_value_ctx *c, const struct toml_value *v, struct cfg_value *out,
			 struct diags *diags)
{
	const struct cfg_key_def *def = c->def;
	const char *s = v->type == TOML_STRING ? v->u.str.ptr : NULL;
	size_t len = v->type == TOML_STRING ? v->u.str.len : 0;

	out->type = def->type;
	out->pos = v->pos;
	switch (def->type) {
	case CFG_STRING:
	case CFG_SECRET:
	case CFG_PATH:
		if (s == NULL)
			return type_error(c, v, diags);
		if (memchr(s, '\0', len) != NULL) {
			diag_error(diags, v->pos, c->key, "must not contain a NUL character");
			return false;
		}
		out->str = s;
		out->len = len;
		if (def->type == CFG_SECRET && len >= 7 && strncmp(s, "file://", 7) == 0)
			return read_secret_file(c, v, s + 7, out, diags);
		if (def->type == CFG_PATH) {
			const char *p = s;
			size_t plen = len;
			if (plen >= 7 && strncmp(p, "file://", 7) == 0) {
				p += 7;
				plen -= 7;
			}
			if (plen == 0) {
				diag_error(diags, v->pos, c->key, "the path is empty");
				return false;
			}
			out->str = resolve_path(c->cfg, p, plen);
			if (out->str == NULL)
				return false;
			out->len = strlen(out->str);
			out->written = s;
		}
		return true;
	case CFG_INT:
	case CFG_SIZE:
		if (v->type != TOML_INTEGER)
			return type_error(c, v, diags);
		if (v->u.integer < def->min || (def->max > 0 && v->u.integer > def->max)) {
			if (def->max > 0)
				diag_error(diags, v->pos, c->key, "%" PRId64 " is out of range (%" PRId64
					   " to %" PRId64 ")", (int64_t)v->u.integer, def->min, def->max);
			else
				diag_error(diags, v->pos, c->key, "%" PRId64 " is out of range (at least %"
					   PRId64 ")", (int64_t)v->u.integer, def->min);
			return false;
		}
		out->num = v->u.integer;
		return true;
	case CFG_BOOL:
		if (v->type == TOML_BOOL) {
			out->num = v->u.boolean;
			return true;
		}
		if (s != NULL && (str_ieq(s, len, "true") || str_ieq(s, len, "false"))) {
			out->num = str_ieq(s, len, "true");
			return true;
		}
		return type_error(c, v, diags);
	case CFG_DURATION: {
		char err[128];

		if (v->type == TOML_INTEGER) {
			if (v->u.integer <= 0) {
				diag_error(diags, v->pos, c->key, "a duration must be positive");
				return false;
			}
			out->num = v->u.integer;
			return true;
		}
		if (s == NULL)
			return type_error(c, v, diags);
		if (!cfg_parse_duration(s, len, &out->num, err, sizeof(err))) {
			diag_error(diags, v->pos, c->key, "%s", err);
			return false;
		}
		return true;
	}
	case CFG_WORD: {
		struct strbuf allowed;

		if (s == NULL)
			return type_error(c, v, diags);
		for (size_t i = 0; def->words[i] != NULL; i++) {
			if (str_ieq(s, len, def->words[i])) {
				out->num = (int64_t)i;
				out->str = def->words[i];
				out->len = strlen(def->words[i]);
				return true;
			}
		}
		strbuf_init(&allowed);
		for (size_t i = 0; def->words[i] != NULL; i++)
			strbuf_printf(&allowed, "%s\"%s\"", i ? ", " : "", def->words[i]);
		diag_error(diags, v->pos, c->key, "unknown value \"%.*s\" (expected one of %s)",
			   (int)(len > 60 ? 60 : len), s, strbuf_str(&allowed));
		strbuf_free(&allowed);
		return false;
	}
	case CFG_POLICY:
		if (v->type == TOML_BOOL && !v->u.boolean) {
			out->num = CFG_POLICY_DISABLE;
			return true;
		}
		if (s == NULL)
			return type_error(c, v, diags);
		for (size_t i = 0; i < sizeof(policy_words) / sizeof(policy_words[0]); i++) {
			if (str_ieq(s, len, policy_words[i].word)) {
				out->num = policy_words[i].policy;
				return true;
			}
		}
		diag_error(diags, v->pos, c->key, "unknown policy \"%.*s\" (expected \"optional\", "
			   "\"require\" or \"disable\")", (int)(len > 60 ? 60 : len), s);
		return false;
	case CFG_IPADDR:
		if (s == NULL)
			return type_error(c, v, diags);
		if (!ipaddr_parse(s, len, &out->addr)) {
			diag_error(diags, v->pos, c->key, "\"%.*s\" is not an IP address",
				   (int)(len > 60 ? 60 : len), s);
			return false;
		}
		if (def->min == 4 && out->addr.family != AF_INET) {
			diag_error(diags, v->pos, c->key, "\"%.*s\" is not an IPv4 address",
				   (int)len, s);
			return false;
		}
		if (def->min == 6 && out->addr.family != AF_INET6) {
			diag_error(diags, v->pos, c->key, "\"%.*s\" is not an IPv6 address",
				   (int)len, s);
			return false;
		}
		out->str = s;
		out->len = len;
		return true;
	case CFG_BIND:
		if (s == NULL)
			return type_error(c, v, diags);
		if (!parse_host_port(s, len, -1, &out->addr, &out->num)) {
			diag_error(diags, v->pos, c->key, "\"%.*s\" is not an address and port such as "
				   "\"127.0.0.1:25\" or \"[::1]:25\"", (int)(len > 60 ? 60 : len), s);
			return false;
		}
		out->str = s;
		out->len = len;
		return true;
	case CFG_NSADDR: {
		bool ok = s != NULL && len > 6 &&
			  (strncmp(s, "udp://", 6) == 0 || strncmp(s, "tcp://", 6) == 0) &&
			  parse_host_port(s + 6, len - 6, 53, &out->addr, &out->num);
		if (s == NULL)
			return type_error(c, v, diags);
		if (!ok) {
			diag_error(diags, v->pos, c->key, "\"%.*s\" is not a name server such as "
				   "\"udp://127.0.0.1:53\"", (int)(len > 60 ? 60 : len), s);
			return false;
		}
		out->str = s;
		out->len = len;
		return true;
	}
	case CFG_REMOTE:
		if (s == NULL)
			return type_error(c, v, diags);
		if (!section_exists(c->cfg, CFG_GROUP_REMOTE, s, len)) {
			diag_error(diags, v->pos, c->key, "no [remote.\"%.*s\"] is defined",
				   (int)(len > 60 ? 60 : len), s);
			return false;
		}
		out->str = s;
		out->len = len;
		return true;
	case CFG_CERTREF:
		if (s == NULL)
			return type_error(c, v, diags);
		if (!section_exists(c->cfg, CFG_GROUP_CERTIFICATE, s, len)) {
			diag_error(diags, v->pos, c->key, "no [certificate.\"%.*s\"] is defined",
				   (int)(len > 60 ? 60 : len), s);
			return false;
		}
		out->str = s;
		out->len = len;
		return true;
	case CFG_LISTREF:
		if (s == NULL)
			return type_error(c, v, diags);
		if (len < 5 || strncmp(s, "list/", 5) != 0) {
			diag_error(diags, v->pos, c->key, "expected a list reference \"list/<id>\", got \"%.*s\"",
				   (int)(len > 60 ? 60 : len), s);
			return false;
		}
		out->list = cfg_lists_ref(c->cfg->lists, s, len);
		if (out->list == NULL) {
			diag_error(diags, v->pos, c->key, "list \"%.*s\" is not defined in [list]",
				   (int)(len - 5 > 60 ? 60 : len - 5), s + 5);
			return false;
		}
		out->str = s;
		out->len = len;
		return true;
	}
	return type_error(c, v, diags);
}

bool cfg_value_parse(void *ctx, const struct toml_value *v, struct cfg_value *out,
		     struct diags *diags)
{
	struct cfg_value_ctx *c = ctx;
	const struct cfg_key_def *def = c->def;

	memset(out, 0, sizeof(*out));
	out->type = def->type;
	out->pos = v->pos;
	if ((def->flags & K_OPT) && is_no_value(v)) {
		out->none = true;
		return true;
	}
	if (!(def->flags & K_LIST))
		return parse_scalar(c, v, out, diags);

	/* A list: a scalar is a one-item list. */
	size_t n = v->type == TOML_ARRAY ? v->u.array.len : 1;
	struct cfg_value *items = arena_alloc(&c->cfg->arena, (n ? n : 1) * sizeof(*items));
	bool ok = true;

	if (items == NULL)
		return false;
	for (size_t i = 0; i < n; i++) {
		const struct toml_value *item = v->type == TOML_ARRAY ? v->u.array.items[i] : v;

		if (item->type == TOML_ARRAY || item->type == TOML_TABLE) {
			diag_error(diags, item->pos, c->key, "expected a list of %s, found %s %s in it",
				   expected_name(def->type), item->type == TOML_ARRAY ? "an" : "a",
				   toml_type_name(item->type));
			ok = false;
			continue;
		}
		if (!parse_scalar(c, item, &items[i], diags))
			ok = false;
	}
	out->items = items;
	out->n_items = n;
	return ok;
}

static void dump_scalar(const struct cfg_value *v, struct strbuf *out)
{
	switch (v->type) {
	case CFG_STRING:
	case CFG_SECRET:
	case CFG_PATH:
		if (v->written != NULL)
			strbuf_put_quoted(out, v->written, strlen(v->written));
		else
			strbuf_put_quoted(out, v->str, v->len);
		return;
	case CFG_INT:
	case CFG_SIZE:
		strbuf_printf(out, "%" PRId64, v->num);
		return;
	case CFG_BOOL:
		strbuf_puts(out, v->num ? "true" : "false");
		return;
	case CFG_DURATION:
		cfg_format_duration(v->num, out);
		return;
	case CFG_POLICY:
		strbuf_printf(out, "\"%s\"", policy_canonical[v->num]);
		return;
	case CFG_WORD:
	case CFG_IPADDR:
	case CFG_BIND:
	case CFG_NSADDR:
	case CFG_REMOTE:
	case CFG_LISTREF:
	case CFG_CERTREF:
		strbuf_put_quoted(out, v->str, v->len);
		return;
	}
}

void cfg_value_dump(void *ctx, const struct cfg_value *v, struct strbuf *out)
{
	struct cfg_value_ctx *c = ctx;

	if (v->none && !(c->def->flags & K_LIST)) {
		strbuf_puts(out, "false");
		return;
	}
	if (!(c->def->flags & K_LIST)) {
		dump_scalar(v, out);
		return;
	}
	strbuf_putc(out, '[');
	for (size_t i = 0; i < v->n_items; i++) {
		if (i > 0)
			strbuf_puts(out, ", ");
		dump_scalar(&v->items[i], out);
	}
	strbuf_putc(out, ']');
}
