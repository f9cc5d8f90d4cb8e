/*
 * main.c - tern's command line.
 *
 * Subcommands are dispatched from a table; each parses its own options.
 * Exit codes: 0 success, 1 the thing checked is wrong (e.g. an invalid
 * configuration), 2 usage errors; `tern queue` adds 3, the server could
 * not be reached or failed (admin.h).
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin/admin.h"
#include "config/settings.h"
#include "inbound/inbound.h"
#include "route/explain.h"
#include "server/server.h"
#include "submit/send.h"
#include "util/strbuf.h"

#ifndef TERN_VERSION
#define TERN_VERSION "0.1.0"
#endif
#ifndef TERN_DEFAULT_CONFIG
#define TERN_DEFAULT_CONFIG "/etc/tern/tern.toml"
#endif

static const char usage_text[] =
	"usage: tern COMMAND [OPTIONS]\n"
	"\n"
	"tern is a mail transfer agent for outbound transport and routing.\n"
	"\n"
	"Commands:\n"
	"  serve [-c FILE]    run the server in the foreground; logs go to stderr.\n"
	"                     SIGTERM or SIGINT stop it gracefully; SIGHUP reloads\n"
	"                     the configuration (a file with errors is refused).\n"
	"  send [-c FILE] [-f SENDER] RCPT...\n"
	"                     queue the message on standard input through the running\n"
	"                     server; prints its queue id. SENDER defaults to\n"
	"                     USER@server.hostname.\n"
	"  route [-c FILE] [-f SENDER] RCPT...\n"
	"                     print what delivery would do for each recipient, without\n"
	"                     sending: next hop, MX hosts in order, their addresses in\n"
	"                     the order tried, source addresses, EHLO name, TLS policy\n"
	"                     with the domain's MTA-STS policy and each MX host's DANE\n"
	"                     records.\n"
	"                     Asks the configured resolver. SENDER defaults to <>.\n"
	"                     Exit 0 when every recipient has an address to try, else 1.\n"
	"  queue [-c FILE] [--json] [--url URL] list|show|retry|hold|release|cancel ...\n"
	"                     list and manage queued mail through the running server's\n"
	"                     management API (a listener with protocol \"http\"); see\n"
	"                     'tern queue --help'. Exit 0 done, 1 no such message or\n"
	"                     nothing matched, 2 usage, 3 server unreachable or failed.\n"
	"  config check [-c FILE] [--strict]\n"
	"                     validate the configuration; every problem is printed as\n"
	"                     FILE:LINE:COL: key: message. Exit 0 when valid, else 1.\n"
	"                     --strict makes unknown keys errors instead of warnings.\n"
	"  config dump [-c FILE]\n"
	"                     print the effective settings, defaults included, as TOML\n"
	"  config keys        list every configuration key with its type, default,\n"
	"                     the rule variables it accepts and what it does\n"
	"\n"
	"Options:\n"
	"  -c, --config FILE  configuration file (default " TERN_DEFAULT_CONFIG ")\n"
	"  -h, --help         this text\n"
	"  -V, --version      print the version\n";

static int usage_error(const char *fmt, const char *arg)
{
	fprintf(stderr, "tern: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "\nTry 'tern --help'.\n");
	return 2;
}

struct config_opts {
	const char *path;
	unsigned flags;
	const char *sender; /* send -f */
};

#define OPT_STRICT 0x1u /* the subcommand takes --strict */
#define OPT_FROM   0x2u /* the subcommand takes -f SENDER */
#define OPT_ARGS   0x4u /* the subcommand takes arguments after its options */

/* Options shared by the subcommands; returns -1 when fine, else the exit
 * code. With OPT_ARGS, the arguments start at optind. */
static int parse_opts(int argc, char **argv, unsigned allowed, struct config_opts *o)
{
	static const struct option longopts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "strict", no_argument, NULL, 's' },
		{ "from", required_argument, NULL, 'f' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int ch;

	o->path = TERN_DEFAULT_CONFIG;
	o->flags = 0;
	o->sender = NULL;
	optind = 1;
	opterr = 0;
	while ((ch = getopt_long(argc, argv, "+c:f:h", longopts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			o->path = optarg;
			break;
		case 's':
			if (!(allowed & OPT_STRICT))
				return usage_error("%s does not take --strict", argv[0]);
			o->flags |= CONFIG_STRICT;
			break;
		case 'f':
			if (!(allowed & OPT_FROM))
				return usage_error("%s does not take -f", argv[0]);
			o->sender = optarg;
			break;
		case 'h':
			fputs(usage_text, stdout);
			return 0;
		default:
			return usage_error("unknown or incomplete option '%s'", argv[optind - 1]);
		}
	}
	if (optind < argc && !(allowed & OPT_ARGS))
		return usage_error("unexpected argument '%s'", argv[optind]);
	return -1;
}

static struct config *load_reporting(const struct config_opts *o)
{
	struct diags diags;
	struct config *cfg;

	diags_init(&diags, o->path);
	cfg = config_load_file(o->path, o->flags, &diags);
	diags_print(&diags, stderr);
	diags_free(&diags);
	return cfg;
}

static int cmd_config_check(int argc, char **argv)
{
	struct config_opts o;
	struct config *cfg;
	char err[512];
	int rc = parse_opts(argc, argv, OPT_STRICT, &o);

	if (rc >= 0)
		return rc;
	cfg = load_reporting(&o);
	if (cfg == NULL)
		return 1;
	/* What only loading it shows: certificates, and listeners using them. */
	if (!inbound_check(cfg, err, sizeof(err))) {
		fprintf(stderr, "%s: %s\n", o.path, err);
		config_free(cfg);
		return 1;
	}
	printf("%s: configuration is valid\n", o.path);
	config_free(cfg);
	return 0;
}

static int cmd_config_dump(int argc, char **argv)
{
	struct config_opts o;
	struct config *cfg;
	struct strbuf out;
	int rc = parse_opts(argc, argv, 0, &o);

	if (rc >= 0)
		return rc;
	cfg = load_reporting(&o);
	if (cfg == NULL)
		return 1;
	strbuf_init(&out);
	config_dump(cfg, &out);
	config_free(cfg);
	if (strbuf_failed(&out)) {
		strbuf_free(&out);
		fprintf(stderr, "tern: out of memory\n");
		return 1;
	}
	fwrite(out.data, 1, out.len, stdout);
	strbuf_free(&out);
	return 0;
}

static int cmd_config_keys(int argc, char **argv)
{
	struct strbuf out;

	if (argc > 1)
		return usage_error("unexpected argument '%s'", argv[1]);
	strbuf_init(&out);
	config_describe_keys(&out);
	fputs(strbuf_str(&out), stdout);
	strbuf_free(&out);
	return 0;
}

static int cmd_serve(int argc, char **argv)
{
	struct config_opts o;
	int rc = parse_opts(argc, argv, 0, &o);

	if (rc >= 0)
		return rc;
	return server_run(o.path);
}

static int cmd_send(int argc, char **argv)
{
	struct config_opts o;
	int rc = parse_opts(argc, argv, OPT_FROM | OPT_ARGS, &o);

	if (rc >= 0)
		return rc;
	if (optind >= argc)
		return usage_error("%s needs at least one recipient", "send");
	return send_main(o.path, o.sender, argc - optind, argv + optind);
}

static int cmd_route(int argc, char **argv)
{
	struct config_opts o;
	struct config *cfg;
	int rc = parse_opts(argc, argv, OPT_FROM | OPT_ARGS, &o);

	if (rc >= 0)
		return rc;
	if (optind >= argc)
		return usage_error("%s needs at least one recipient", "route");
	cfg = load_reporting(&o);
	if (cfg == NULL)
		return 1;
	rc = route_explain(cfg, o.sender != NULL ? o.sender : "", argc - optind, argv + optind, stdout);
	config_free(cfg);
	return rc;
}

static const struct {
	const char *name;
	int (*run)(int argc, char **argv);
} config_cmds[] = {
	{ "check", cmd_config_check },
	{ "dump", cmd_config_dump },
	{ "keys", cmd_config_keys },
};

static int cmd_config(int argc, char **argv)
{
	if (argc < 2)
		return usage_error("%s needs a subcommand: check, dump or keys", "config");
	for (size_t i = 0; i < sizeof(config_cmds) / sizeof(config_cmds[0]); i++)
		if (strcmp(argv[1], config_cmds[i].name) == 0)
			return config_cmds[i].run(argc - 1, argv + 1);
	return usage_error("unknown config subcommand '%s'", argv[1]);
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fputs(usage_text, stderr);
		return 2;
	}
	if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 ||
	    strcmp(argv[1], "help") == 0) {
		fputs(usage_text, stdout);
		return 0;
	}
	if (strcmp(argv[1], "-V") == 0 || strcmp(argv[1], "--version") == 0) {
		printf("tern %s\n", TERN_VERSION);
		return 0;
	}
	if (strcmp(argv[1], "config") == 0)
		return cmd_config(argc - 1, argv + 1);
	if (strcmp(argv[1], "serve") == 0)
		return cmd_serve(argc - 1, argv + 1);
	if (strcmp(argv[1], "send") == 0)
		return cmd_send(argc - 1, argv + 1);
	if (strcmp(argv[1], "route") == 0)
		return cmd_route(argc - 1, argv + 1);
	if (strcmp(argv[1], "queue") == 0)
		return admin_queue_main(argc - 1, argv + 1, TERN_DEFAULT_CONFIG);
	return usage_error("unknown command '%s'", argv[1]);
}
