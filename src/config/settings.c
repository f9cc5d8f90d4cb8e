/*
 * settings.c - load a configuration file into a struct config.
 *
 * Loading walks the TOML tree once, matching each key path against the
 * key table (keys.h); '*' segments name section instances (a remote, a
 * listener, a certificate). Matched values are compiled afterwards, once
 * every section and list is known, so a reference to a remote or list
 * defined later in the file resolves. Keys left unset get their default,
 * compiled from the default's TOML text through the very same path, so a
 * default can never be something a user could not have written.
 *
 * Every problem is recorded and loading goes on, so one run reports them
 * all; the config is returned only when there were no errors.
 */
#include "config/settings.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config/internal.h"
#include "config/values.h"
#include "util/fileio.h"
#include "util/text.h"

#define CFG_FILE_MAX (64 * 1024 * 1024)
#define CFG_MAX_SEGS 8

/* Problems that belong to the file as a whole, not a place in it. */
static const struct toml_pos no_pos = { 0, 0 };

const char *const cfg_words_listener_protocol[] = { "smtp", "lmtp", "http", NULL };
const char *const cfg_words_remote_protocol[] = { "smtp", "lmtp", NULL };
const char *const cfg_words_ip_strategy[] = { "ipv4-only", "ipv6-only", "ipv4-then-ipv6",
					      "ipv6-then-ipv4", NULL };
const char *const cfg_words_resolver_type[] = { "system", "custom", NULL };
const char *const cfg_words_auth_mechanism[] = { "plain", "login", NULL };

const struct cfg_key_def cfg_key_defs[CFG_KEY_COUNT] = {
#define CFG_KEY_DEF(id, name, type, flags, vars, def, words, min, max, help) \
	[CFG_##id] = { name, type, flags, vars, def, words, min, max, help },
	CFG_KEYS(CFG_KEY_DEF)
#undef CFG_KEY_DEF
};

/*
 * Stalwart settings tern does not implement (yet): named as such rather
 * than reported as unknown, so a migrated config says what it loses.
 * A prefix matches the key itself and everything below it.
 */
static const char *const stalwart_unimplemented[] = {
	"server.run-as", "server.thread-pool", "server.socket", "server.proxy",
	"server.tls.enable", "server.tls.implicit", "server.tls.timeout", "server.tls.protocols",
	"server.tls.ciphers", "server.tls.ignore-client-order", "server.tls.sni",
	"server.listener.*.socket", "server.listener.*.max-connections",
	"server.listener.*.tls.enable", "server.listener.*.tls.protocols",
	"server.listener.*.tls.ciphers", "server.listener.*.tls.ignore-client-order",
	"server.listener.*.hostname", "server.listener.*.proxy",
	"global", "session.connect", "session.ehlo", "session.mail", "session.duration",
	"session.transfer-limit", "session.rcpt.script", "session.rcpt.directory",
	"session.rcpt.errors", "session.rcpt.lookup", "session.rcpt.cache",
	"session.auth.directory", "session.auth.errors", "session.data.script",
	"session.data.pipe", "session.data.milter", "session.data.add-headers",
	"session.data.limits.timeout", "session.extensions.expn", "session.extensions.vrfy",
	"session.extensions.no-soliciting", "session.extensions.future-release",
	"session.extensions.deliver-by", "session.extensions.mt-priority",
	"queue.hash", "queue.quota", "queue.throttle", "queue.outbound.throttle",
	"queue.schedule.max-attempts", "queue.outbound.tls.allow-invalid-certs",
	"report", "resolver.preserve-intermediates", "resolver.concurrency", "resolver.cache",
	"resolver.public-suffix", "auth", "signature", "sieve", "directory", "mail-auth",
	"management.directory", "lookup", "database", "spam", "store", "storage", "tracer",
	"certificate.*.sni",
};

/* A key path seen in the file, waiting to be compiled. */
struct cfg_assignment {
	enum cfg_key key;
	struct cfg_section *section; /* NULL for global keys */
	const struct toml_value *value;
	char *name;
};

struct cfg_loader {
	struct config *cfg;
	struct diags *diags;
	unsigned flags;
	struct cfg_assignment *assign;
	size_t n_assign, cap_assign;
	/* the path being walked */
	const char *segs[CFG_MAX_SEGS];
	size_t seg_lens[CFG_MAX_SEGS];
};

/* Split table names once: "remote.*.tls.implicit" -> 4 segments. */
static struct {
	const char *seg[CFG_MAX_SEGS];
	size_t len[CFG_MAX_SEGS];
	size_t n;
} key_segs[CFG_KEY_COUNT];

static void split_key_names(void)
{
	if (key_segs[0].n != 0)
		return;
	for (size_t k = 0; k < CFG_KEY_COUNT; k++) {
		const char *p = cfg_key_defs[k].name;

		while (*p != '\0' && key_segs[k].n < CFG_MAX_SEGS) {
			const char *dot = strchr(p, '.');
			size_t len = dot != NULL ? (size_t)(dot - p) : strlen(p);

			key_segs[k].seg[key_segs[k].n] = p;
			key_segs[k].len[key_segs[k].n] = len;
			key_segs[k].n++;
			p += len;
			if (*p == '.')
				p++;
		}
	}
}

enum cfg_group cfg_key_group(enum cfg_key key)
{
	const char *name = cfg_key_defs[key].name;

	if (strncmp(name, "server.listener.", 16) == 0)
		return CFG_GROUP_LISTENER;
	if (strncmp(name, "certificate.", 12) == 0)
		return CFG_GROUP_CERTIFICATE;
	if (strncmp(name, "remote.", 7) == 0)
		return CFG_GROUP_REMOTE;
	return CFG_GROUP_GLOBAL;
}

static bool seg_eq(const char *a, size_t alen, const char *b, size_t blen)
{
	return alen == blen && memcmp(a, b, alen) == 0;
}

/* Does key k's name match the first depth segments of the walked path? */
static bool key_matches_path(const struct cfg_loader *l, size_t k, size_t depth)
{
	if (key_segs[k].n < depth)
		return false;
	for (size_t i = 0; i < depth; i++) {
		if (seg_eq(key_segs[k].seg[i], key_segs[k].len[i], "*", 1))
			continue;
		if (!seg_eq(key_segs[k].seg[i], key_segs[k].len[i], l->segs[i], l->seg_lens[i]))
			return false;
	}
	return true;
}

void cfg_put_key_segment(struct strbuf *out, const char *seg, size_t len)
{
	bool bare = len > 0;

	for (size_t i = 0; i < len && bare; i++) {
		char ch = seg[i];
		bare = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		       (ch >= '0' && ch <= '9') || ch == '-' || ch == '_';
	}
	if (bare)
		strbuf_append(out, seg, len);
	else
		strbuf_put_quoted(out, seg, len);
}

static char *path_name(const struct cfg_loader *l, size_t depth)
{
	struct strbuf sb;
	char *name;

	strbuf_init(&sb);
	for (size_t i = 0; i < depth; i++) {
		if (i > 0)
			strbuf_putc(&sb, '.');
		cfg_put_key_segment(&sb, l->segs[i], l->seg_lens[i]);
	}
	name = strbuf_failed(&sb) ? NULL : arena_strndup(&l->cfg->arena, sb.data, sb.len);
	strbuf_free(&sb);
	return name != NULL ? name : "";
}

const struct cfg_section *config_section_find(const struct config *cfg, enum cfg_group group,
					      const char *id, size_t id_len)
{
	const struct cfg_sections *s = &cfg->sections[group];

	for (size_t i = 0; i < s->len; i++)
		if (strlen(s->items[i]->id) == id_len && memcmp(s->items[i]->id, id, id_len) == 0)
			return s->items[i];
	return NULL;
}

static struct cfg_section *section_get(struct cfg_loader *l, enum cfg_group group, const char *id,
				       size_t id_len, struct toml_pos pos)
{
	struct cfg_sections *s = &l->cfg->sections[group];
	struct cfg_section *sec = (struct cfg_section *)config_section_find(l->cfg, group, id, id_len);

	if (sec != NULL)
		return sec;
	if (s->len == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 4;
		struct cfg_section **items = arena_grow(&l->cfg->arena, s->items, s->len, cap,
							sizeof(*items));
		if (items == NULL)
			return NULL;
		s->items = items;
		s->cap = cap;
	}
	sec = arena_alloc(&l->cfg->arena, sizeof(*sec));
	if (sec == NULL || (sec->id = arena_strndup(&l->cfg->arena, id, id_len)) == NULL)
		return NULL;
	sec->group = group;
	sec->pos = pos;
	s->items[s->len++] = sec;
	return sec;
}

/* The known key closest to an unknown path, with the path's own ids in
 * place of '*', or NULL when nothing is close. */
static const char *suggest_key(struct cfg_loader *l, size_t depth, const char *unknown)
{
	const char *best = NULL;
	size_t best_dist = strlen(unknown) / 4 + 1;

	if (best_dist > 3)
		best_dist = 3;
	for (size_t k = 0; k < CFG_KEY_COUNT; k++) {
		struct strbuf sb;
		size_t n = key_segs[k].n < depth ? key_segs[k].n : depth;
		size_t dist;

		strbuf_init(&sb);
		for (size_t i = 0; i < n; i++) {
			if (i > 0)
				strbuf_putc(&sb, '.');
			if (seg_eq(key_segs[k].seg[i], key_segs[k].len[i], "*", 1))
				cfg_put_key_segment(&sb, l->segs[i], l->seg_lens[i]);
			else
				strbuf_append(&sb, key_segs[k].seg[i], key_segs[k].len[i]);
		}
		dist = text_edit_distance(unknown, strlen(unknown), sb.data, sb.len);
		if (dist <= best_dist && dist > 0 && !strbuf_failed(&sb)) {
			/* Suggest the whole key when the typo is in its last segment. */
			for (size_t i = n; i < key_segs[k].n; i++) {
				strbuf_putc(&sb, '.');
				strbuf_append(&sb, key_segs[k].seg[i], key_segs[k].len[i]);
			}
			const char *cand = arena_strndup(&l->cfg->arena, sb.data, sb.len);
			if (cand != NULL && (dist < best_dist || best == NULL)) {
				best = cand;
				best_dist = dist;
			}
		}
		strbuf_free(&sb);
	}
	return best;
}

static bool is_stalwart_unimplemented(const struct cfg_loader *l, size_t depth)
{
	for (size_t u = 0; u < sizeof(stalwart_unimplemented) / sizeof(stalwart_unimplemented[0]); u++) {
		const char *p = stalwart_unimplemented[u];
		size_t i = 0;

		while (*p != '\0' && i < depth) {
			const char *dot = strchr(p, '.');
			size_t len = dot != NULL ? (size_t)(dot - p) : strlen(p);

			if (!seg_eq(p, len, "*", 1) && !seg_eq(p, len, l->segs[i], l->seg_lens[i]))
				break;
			i++;
			p += len + (dot != NULL);
			if (dot == NULL)
				break;
		}
		if (*p == '\0' && i <= depth && i > 0)
			return true;
	}
	return false;
}

static void unknown_key(struct cfg_loader *l, size_t depth, struct toml_pos pos)
{
	enum diag_level level = (l->flags & CONFIG_STRICT) ? DIAG_ERROR : DIAG_WARNING;
	char *name = path_name(l, depth);

	if (is_stalwart_unimplemented(l, depth)) {
		diag_add(l->diags, level, pos, name,
			 "this Stalwart setting is not implemented by tern; it is ignored");
		return;
	}
	const char *hint = suggest_key(l, depth, name);
	if (hint != NULL)
		diag_add(l->diags, level, pos, name, "unknown key (did you mean %s?)", hint);
	else
		diag_add(l->diags, level, pos, name, "unknown key");
}

static void add_assignment(struct cfg_loader *l, enum cfg_key key, struct cfg_section *sec,
			   const struct toml_value *v, char *name)
{
	if (l->n_assign == l->cap_assign) {
		size_t cap = l->cap_assign ? l->cap_assign * 2 : 64;
		struct cfg_assignment *a = realloc(l->assign, cap * sizeof(*a));

		if (a == NULL) {
			diag_error(l->diags, v->pos, name, "out of memory");
			return;
		}
		l->assign = a;
		l->cap_assign = cap;
	}
	l->assign[l->n_assign++] = (struct cfg_assignment){ key, sec, v, name };
}

static void walk_table(struct cfg_loader *l, const struct toml_value *t, size_t depth,
		       struct cfg_section *sec);

static void walk_key(struct cfg_loader *l, const struct toml_keyval *kv, size_t depth,
		     struct cfg_section *sec)
{
	bool prefix = false;
	size_t exact = CFG_KEY_COUNT;

	l->segs[depth] = kv->key;
	l->seg_lens[depth] = kv->key_len;
	depth++;
	if (depth == 1 && seg_eq(kv->key, kv->key_len, "list", 4))
		return; /* [list] is loaded by the lists module */
	for (size_t k = 0; k < CFG_KEY_COUNT; k++) {
		if (!key_matches_path(l, k, depth))
			continue;
		if (key_segs[k].n == depth)
			exact = k;
		else
			prefix = true;
	}
	if (exact < CFG_KEY_COUNT) {
		add_assignment(l, (enum cfg_key)exact, sec, kv->value, path_name(l, depth));
		return;
	}
	if (!prefix || depth >= CFG_MAX_SEGS) {
		unknown_key(l, depth, kv->key_pos);
		return;
	}
	if (kv->value->type != TOML_TABLE) {
		diag_error(l->diags, kv->value->pos, path_name(l, depth),
			   "expected a table of settings, got %s", toml_type_name(kv->value->type));
		return;
	}
	/* Entering an id segment ("remote.<id>") creates that section. */
	if (sec == NULL) {
		for (size_t k = 0; k < CFG_KEY_COUNT; k++) {
			if (key_matches_path(l, k, depth) &&
			    seg_eq(key_segs[k].seg[depth - 1], key_segs[k].len[depth - 1], "*", 1)) {
				sec = section_get(l, cfg_key_group((enum cfg_key)k), kv->key,
						  kv->key_len, kv->value->pos);
				if (sec == NULL) {
					diag_error(l->diags, kv->value->pos, "", "out of memory");
					return;
				}
				break;
			}
		}
	}
	walk_table(l, kv->value, depth, sec);
}

static void walk_table(struct cfg_loader *l, const struct toml_value *t, size_t depth,
		       struct cfg_section *sec)
{
	for (size_t i = 0; i < t->u.table.len; i++)
		walk_key(l, &t->u.table.items[i], depth, sec);
}

static const struct rule *compile(struct cfg_loader *l, enum cfg_key key, const char *name,
				  const struct toml_value *v)
{
	const struct cfg_key_def *def = &cfg_key_defs[key];
	struct cfg_value_ctx ctx = { def, name, l->cfg };

	return rule_compile(&l->cfg->arena, name, v, def->vars, (def->flags & K_RULE) != 0,
			    (def->flags & K_LIST) ? RULE_LIST_VALUED : 0, l->cfg->lists,
			    &l->cfg->regexes, cfg_value_parse, &ctx, l->diags);
}

/* The default's TOML text: the table's, or one computed for $-words. */
static char *default_text(struct cfg_loader *l, enum cfg_key key, const struct cfg_section *sec)
{
	const char *def = cfg_key_defs[key].def;
	struct strbuf sb;
	char *text;

	strbuf_init(&sb);
	strbuf_puts(&sb, "v = ");
	if (strcmp(def, "$hostname") == 0) {
		strbuf_put_quoted(&sb, l->cfg->hostname, strlen(l->cfg->hostname));
	} else if (strcmp(def, "$mailer-daemon") == 0) {
		strbuf_puts(&sb, "\"MAILER-DAEMON@");
		strbuf_puts(&sb, l->cfg->hostname);
		strbuf_putc(&sb, '"');
	} else if (strcmp(def, "$spool") == 0) {
		strbuf_puts(&sb, "\"var/spool\"");
	} else if (strcmp(def, "$implicit") == 0) {
		const struct cfg_value *port = sec != NULL ? cfg_section_get(sec, CFG_REMOTE_PORT) : NULL;
		strbuf_puts(&sb, port != NULL && port->num == 465 ? "true" : "false");
	} else {
		strbuf_puts(&sb, def);
	}
	text = strbuf_failed(&sb) ? NULL : arena_strndup(&l->cfg->arena, sb.data, sb.len);
	strbuf_free(&sb);
	return text;
}

static const struct rule *compile_default(struct cfg_loader *l, enum cfg_key key,
					  const struct cfg_section *sec, const char *name)
{
	const char *text = default_text(l, key, sec);
	struct toml_error err;
	struct toml_doc *doc;
	const struct rule *r;

	if (text == NULL)
		return NULL;
	doc = toml_parse(text, strlen(text), &err);
	if (doc == NULL) {
		/* The table itself is wrong: a bug, reported rather than hidden. */
		diag_error(l->diags, no_pos, name, "bad built-in default %s: %s",
			   text, err.message);
		return NULL;
	}
	/* Compiled values borrow the document's strings: the config keeps it. */
	if (!config_keep_doc(l->cfg, doc)) {
		toml_doc_free(doc);
		return NULL;
	}
	r = compile(l, key, name, toml_table_get(doc->root, "v"));
	return r;
}

bool config_keep_doc(struct config *cfg, struct toml_doc *doc)
{
	if (cfg->n_docs == cfg->cap_docs) {
		size_t cap = cfg->cap_docs ? cfg->cap_docs * 2 : 16;
		struct toml_doc **docs = realloc(cfg->docs, cap * sizeof(*docs));

		if (docs == NULL)
			return false;
		cfg->docs = docs;
		cfg->cap_docs = cap;
	}
	cfg->docs[cfg->n_docs++] = doc;
	return true;
}

static const char *system_hostname(struct config *cfg)
{
	char name[HOST_NAME_MAX + 1];

	if (gethostname(name, sizeof(name)) != 0 || name[0] == '\0')
		return "localhost";
	name[sizeof(name) - 1] = '\0';
	return arena_strdup(&cfg->arena, name);
}

/* server.hostname first: other defaults are made from it. */
static void compile_hostname(struct cfg_loader *l)
{
	for (size_t i = 0; i < l->n_assign; i++) {
		struct cfg_assignment *a = &l->assign[i];

		if (a->key != CFG_SERVER_HOSTNAME)
			continue;
		l->cfg->global[a->key] = compile(l, a->key, a->name, a->value);
		const struct cfg_value *v = config_get(l->cfg, CFG_SERVER_HOSTNAME);
		if (v != NULL && v->len > 0)
			l->cfg->hostname = v->str;
		a->value = NULL;
	}
}

static void check_section(struct cfg_loader *l, struct cfg_section *sec)
{
	struct strbuf name;

	strbuf_init(&name);
	for (size_t k = 0; k < CFG_KEY_COUNT; k++) {
		const struct cfg_key_def *def = &cfg_key_defs[k];

		if (cfg_key_group((enum cfg_key)k) != sec->group || sec->written[k])
			continue;
		/* Name the key as the user would write it. */
		strbuf_reset(&name);
		for (size_t i = 0; i < key_segs[k].n; i++) {
			if (i > 0)
				strbuf_putc(&name, '.');
			if (seg_eq(key_segs[k].seg[i], key_segs[k].len[i], "*", 1))
				cfg_put_key_segment(&name, sec->id, strlen(sec->id));
			else
				strbuf_append(&name, key_segs[k].seg[i], key_segs[k].len[i]);
		}
		if (def->flags & K_REQ) {
			diag_error(l->diags, sec->pos, strbuf_str(&name), "required key is missing");
			continue;
		}
		if (def->def != NULL)
			sec->rules[k] = compile_default(l, (enum cfg_key)k, sec, strbuf_str(&name));
	}
	if (sec->group == CFG_GROUP_REMOTE) {
		const struct cfg_value *user = cfg_section_get(sec, CFG_REMOTE_AUTH_USERNAME);
		const struct cfg_value *secret = cfg_section_get(sec, CFG_REMOTE_AUTH_SECRET);
		bool has_user = user != NULL && !user->none, has_secret = secret != NULL && !secret->none;

		if (has_user != has_secret) {
			strbuf_reset(&name);
			strbuf_puts(&name, "remote.");
			cfg_put_key_segment(&name, sec->id, strlen(sec->id));
			strbuf_puts(&name, has_user ? ".auth.username" : ".auth.secret");
			diag_error(l->diags, has_user ? user->pos : secret->pos, strbuf_str(&name),
				   "auth.username and auth.secret go together; the other is missing");
		}
	}
	strbuf_free(&name);
}

static struct config *load_doc(struct toml_doc *doc, const char *dir, unsigned flags,
			       struct diags *diags)
{
	struct cfg_loader l = { 0 };
	struct config *cfg = calloc(1, sizeof(*cfg));
	size_t errors_before = diags->errors;

	if (cfg == NULL) {
		toml_doc_free(doc);
		diag_error(diags, no_pos, "", "out of memory");
		return NULL;
	}
	arena_init(&cfg->arena);
	if (!config_keep_doc(cfg, doc)) {
		toml_doc_free(doc);
		config_free(cfg);
		diag_error(diags, no_pos, "", "out of memory");
		return NULL;
	}
	split_key_names();
	cfg->dir = arena_strdup(&cfg->arena, dir != NULL ? dir : ".");
	cfg->hostname = system_hostname(cfg);
	l.cfg = cfg;
	l.diags = diags;
	l.flags = flags;

	cfg->lists = cfg_lists_load(&cfg->arena, toml_table_get(doc->root, "list"), diags);
	walk_table(&l, doc->root, 0, NULL);
	compile_hostname(&l);
	for (size_t i = 0; i < l.n_assign; i++) {
		struct cfg_assignment *a = &l.assign[i];
		const struct rule *r;

		if (a->value == NULL)
			continue;
		r = compile(&l, a->key, a->name, a->value);
		if (a->section != NULL) {
			a->section->rules[a->key] = r;
			a->section->written[a->key] = true;
		} else
			cfg->global[a->key] = r;
	}
	free(l.assign);

	/* Sections: required keys, then defaults (which may depend on them). */
	for (size_t g = 0; g < CFG_GROUP_COUNT; g++)
		for (size_t i = 0; i < cfg->sections[g].len; i++)
			check_section(&l, cfg->sections[g].items[i]);
	for (size_t k = 0; k < CFG_KEY_COUNT; k++) {
		if (cfg_key_group((enum cfg_key)k) != CFG_GROUP_GLOBAL || cfg->global[k] != NULL ||
		    cfg_key_defs[k].def == NULL)
			continue;
		cfg->global[k] = compile_default(&l, (enum cfg_key)k, NULL, cfg_key_defs[k].name);
	}
	if (diags->errors != errors_before) {
		config_free(cfg);
		return NULL;
	}
	return cfg;
}

struct config *config_load_buffer(const char *buf, size_t len, const char *dir, unsigned flags,
				  struct diags *diags)
{
	struct toml_error err;
	struct toml_doc *doc = toml_parse(buf, len, &err);

	if (doc == NULL) {
		diag_error(diags, err.pos, "", "%s", err.message);
		return NULL;
	}
	return load_doc(doc, dir, flags, diags);
}

struct config *config_load_file(const char *path, unsigned flags, struct diags *diags)
{
	struct config *cfg;
	char *buf, *dir, *slash;
	size_t len;
	int err = file_read_all(path, CFG_FILE_MAX, &buf, &len);

	if (err != 0) {
		diag_error(diags, no_pos, "", "cannot read: %s",
			   err == EFBIG ? "larger than 64 MiB" : strerror(err));
		return NULL;
	}
	/* Relative paths in the file are relative to its folder. */
	dir = realpath(path, NULL);
	if (dir != NULL && (slash = strrchr(dir, '/')) != NULL)
		*(slash == dir ? slash + 1 : slash) = '\0';
	cfg = config_load_buffer(buf, len, dir != NULL ? dir : ".", flags, diags);
	free(dir);
	free(buf);
	return cfg;
}

void config_free(struct config *cfg)
{
	if (cfg == NULL)
		return;
	rule_regexes_free(cfg->regexes);
	for (size_t i = 0; i < cfg->n_docs; i++)
		toml_doc_free(cfg->docs[i]);
	free(cfg->docs);
	arena_free(&cfg->arena);
	free(cfg);
}

const struct rule *config_rule(const struct config *cfg, enum cfg_key key)
{
	return cfg->global[key];
}

static const struct cfg_value *rule_else_value(const struct rule *r)
{
	return r != NULL && r->n_entries > 0 ? &r->entries[r->n_entries - 1].value : NULL;
}

const struct cfg_value *config_get(const struct config *cfg, enum cfg_key key)
{
	return rule_else_value(cfg->global[key]);
}

const struct cfg_value *config_eval(const struct config *cfg, enum cfg_key key,
				    const struct rule_ctx *ctx)
{
	return cfg->global[key] != NULL ? rule_eval(cfg->global[key], ctx) : NULL;
}

size_t config_section_count(const struct config *cfg, enum cfg_group group)
{
	return cfg->sections[group].len;
}

const struct cfg_section *config_section_at(const struct config *cfg, enum cfg_group group, size_t i)
{
	return i < cfg->sections[group].len ? cfg->sections[group].items[i] : NULL;
}

const struct cfg_value *cfg_section_get(const struct cfg_section *sec, enum cfg_key key)
{
	return rule_else_value(sec->rules[key]);
}

const struct cfg_lists *config_lists(const struct config *cfg)
{
	return cfg->lists;
}
