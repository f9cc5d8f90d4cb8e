/*
 * dump.c - print a loaded configuration as TOML (`tern config dump`) and
 * the key table as text (`tern config keys`).
 *
 * The dump is itself a valid configuration that loads to the same
 * settings: every key of the table appears, set or defaulted, grouped under
 * one header per table; an optional key with no value and no default is
 * shown as a comment. Rules are printed as rule arrays, values in their
 * canonical spelling ("3m", "require").
 */
#include <inttypes.h>
#include <string.h>

#include "config/internal.h"
#include "config/values.h"

static const char *type_name(enum cfg_type type)
{
	switch (type) {
	case CFG_STRING: return "string";
	case CFG_SECRET: return "secret";
	case CFG_INT: return "integer";
	case CFG_BOOL: return "boolean";
	case CFG_DURATION: return "duration";
	case CFG_SIZE: return "size";
	case CFG_WORD: return "word";
	case CFG_POLICY: return "policy";
	case CFG_IPADDR: return "IP address";
	case CFG_BIND: return "address:port";
	case CFG_REMOTE: return "remote id";
	case CFG_LISTREF: return "list/<id>";
	case CFG_CERTREF: return "certificate id";
	case CFG_NSADDR: return "name server";
	case CFG_PATH: return "path";
	}
	return "value";
}

/* Length of the header part of a key name: up to the last '.' for global
 * keys, up to and including the '*' segment for section keys. */
static size_t header_len(const char *name)
{
	const char *star = strstr(name, ".*");
	const char *dot;

	if (star != NULL)
		return (size_t)(star - name) + 2;
	dot = strrchr(name, '.');
	return dot != NULL ? (size_t)(dot - name) : 0;
}

static void dump_key(const struct cfg_key_def *def, const char *short_name, const struct rule *r,
		     struct strbuf *out)
{
	struct cfg_value_ctx ctx = { def, def->name, NULL };

	if (r == NULL) {
		strbuf_printf(out, "# %s: not set\n", short_name);
		return;
	}
	strbuf_printf(out, "%s = ", short_name);
	rule_dump(r, out, cfg_value_dump, &ctx);
	strbuf_putc(out, '\n');
}

static void dump_global(const struct config *cfg, struct strbuf *out)
{
	bool done[CFG_KEY_COUNT] = { false };

	for (size_t k = 0; k < CFG_KEY_COUNT; k++) {
		const char *name = cfg_key_defs[k].name;
		size_t hlen = header_len(name);

		if (done[k] || cfg_key_group((enum cfg_key)k) != CFG_GROUP_GLOBAL)
			continue;
		strbuf_printf(out, "\n[%.*s]\n", (int)hlen, name);
		/* Every key under this same header, in table order. */
		for (size_t j = k; j < CFG_KEY_COUNT; j++) {
			const char *other = cfg_key_defs[j].name;

			if (done[j] || cfg_key_group((enum cfg_key)j) != CFG_GROUP_GLOBAL ||
			    header_len(other) != hlen || strncmp(other, name, hlen) != 0)
				continue;
			done[j] = true;
			dump_key(&cfg_key_defs[j], other + hlen + 1, cfg->global[j], out);
		}
	}
}

static void dump_lists(const struct config *cfg, struct strbuf *out)
{
	size_t n = cfg_lists_count(cfg->lists);

	if (n == 0)
		return;
	strbuf_puts(out, "\n[list]\n");
	for (size_t i = 0; i < n; i++) {
		const struct cfg_list *list = cfg_lists_at(cfg->lists, i);
		const char *id = cfg_list_id(list);

		cfg_put_key_segment(out, id, strlen(id));
		strbuf_puts(out, " = [");
		for (size_t e = 0; e < cfg_list_count(list); e++) {
			const char *entry = cfg_list_entry(list, e);

			if (e > 0)
				strbuf_puts(out, ", ");
			strbuf_put_quoted(out, entry, strlen(entry));
		}
		strbuf_puts(out, "]\n");
	}
}

static void dump_sections(const struct config *cfg, enum cfg_group group, const char *prefix,
			  struct strbuf *out)
{
	for (size_t i = 0; i < cfg->sections[group].len; i++) {
		const struct cfg_section *sec = cfg->sections[group].items[i];

		strbuf_printf(out, "\n[%s.", prefix);
		cfg_put_key_segment(out, sec->id, strlen(sec->id));
		strbuf_puts(out, "]\n");
		for (size_t k = 0; k < CFG_KEY_COUNT; k++) {
			const char *name = cfg_key_defs[k].name;

			if (cfg_key_group((enum cfg_key)k) != group)
				continue;
			dump_key(&cfg_key_defs[k], name + header_len(name) + 1, sec->rules[k], out);
		}
	}
}

void config_dump(const struct config *cfg, struct strbuf *out)
{
	strbuf_puts(out, "# tern: effective configuration, defaults included\n");
	dump_global(cfg, out);
	dump_lists(cfg, out);
	dump_sections(cfg, CFG_GROUP_LISTENER, "server.listener", out);
	dump_sections(cfg, CFG_GROUP_CERTIFICATE, "certificate", out);
	dump_sections(cfg, CFG_GROUP_REMOTE, "remote", out);
}

void config_describe_keys(struct strbuf *out)
{
	for (size_t k = 0; k < CFG_KEY_COUNT; k++) {
		const struct cfg_key_def *def = &cfg_key_defs[k];

		strbuf_printf(out, "%s\n    %s%s", def->name, (def->flags & K_LIST) ? "list of " : "",
			      type_name(def->type));
		if (def->words != NULL) {
			strbuf_puts(out, " (");
			for (size_t i = 0; def->words[i] != NULL; i++)
				strbuf_printf(out, "%s%s", i ? ", " : "", def->words[i]);
			strbuf_putc(out, ')');
		}
		if (def->flags & K_OPT)
			strbuf_puts(out, ", optional");
		if (def->flags & K_REQ)
			strbuf_puts(out, ", required");
		if (def->def == NULL)
			strbuf_puts(out, "; no default");
		else if (strcmp(def->def, "$hostname") == 0)
			strbuf_puts(out, k == CFG_SERVER_HOSTNAME ? "; default: the system's host name"
								 : "; default: server.hostname");
		else if (strcmp(def->def, "$spool") == 0)
			strbuf_puts(out, "; default: \"var/spool\" beside the config file");
		else if (strcmp(def->def, "$mailer-daemon") == 0)
			strbuf_puts(out, "; default: \"MAILER-DAEMON@<server.hostname>\"");
		else if (strcmp(def->def, "$implicit") == 0)
			strbuf_puts(out, "; default: true when port is 465, else false");
		else
			strbuf_printf(out, "; default: %s", def->def);
		if (def->flags & K_RULE) {
			strbuf_puts(out, "\n    rule variables:");
			for (int v = 0; v < RULE_VAR_COUNT; v++)
				if (def->vars & RULE_VAR_BIT(v))
					strbuf_printf(out, " %s", rule_var_name((enum rule_var)v));
		}
		strbuf_printf(out, "\n    %s\n", def->help);
	}
}
