/*
 * queue_cli.c - `tern queue`: list, show, retry, hold, release and cancel
 * queued mail through the running server's management API.
 *
 * It is a client of the HTTP API (http_api.c), nothing more: it never
 * reads the spool, so what it shows and does is what the server holds.
 * The API is found in the configuration (the first listener with
 * protocol "http", its first bind address, a wildcard address meaning
 * this machine) with the credentials of the first entry of
 * management.auth.lookup: the same machine, the same administrator.
 * --url and TERN_API_USER / TERN_API_PASSWORD override them, and when
 * all three are given the configuration is not read at all.
 *
 * One request per command (repeated while the server answers 409, a
 * delivery of the message being in flight), each on a private event base
 * run to completion, with a timeout and a bound on the answer's size.
 * Output is a table or a block for people, or with --json the server's
 * JSON as it came. Text from the server is printed with control
 * characters replaced, so a hostile sender address cannot drive the
 * terminal.
 *
 * Exit codes: 0 done (an action changed at least one recipient, a list
 * has at least one message), 1 no such message or nothing matched or
 * changed, 2 usage (the server's 400 included), 3 the server could not be
 * reached, refused the credentials or failed.
 */
#include "admin/admin.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>

#include "config/settings.h"
#include "util/base64.h"
#include "util/strbuf.h"

#define CLI_TIMEOUT_S 30
#define CLI_MAX_RESPONSE (256 << 20)
#define CLI_BUSY_RETRIES 20
#define CLI_BUSY_WAIT_MS 250
#define CLI_CELL_MAX 1024

enum { EXIT_DONE, EXIT_NOTHING, EXIT_USAGE, EXIT_SERVER };

/* Where the API is and who we are to it. */
struct api {
	char host[300];        /* for connecting: an address or name, no brackets */
	int port;
	char host_header[310]; /* "host:port", an IPv6 address in brackets */
	char *authorization;   /* "Basic ..." or NULL when no credentials */
};

/* The list filters, by their option names. */
static const char *const filter_names[] = { "sender", "rcpt", "before", "after", "status", "limit" };
#define N_FILTERS (sizeof(filter_names) / sizeof(filter_names[0]))

struct cli {
	const char *config_path;
	const char *url;
	bool json;
	const char *filters[N_FILTERS];
	struct api api;
};

struct response {
	struct event_base *base;
	int status;                     /* 0: no answer */
	enum evhttp_request_error error; /* why, when no answer */
	struct strbuf body;
};

static int usage(const char *fmt, const char *arg)
{
	fputs("tern queue: ", stderr);
	fprintf(stderr, fmt, arg);
	fputs("\nTry 'tern queue --help'.\n", stderr);
	return EXIT_USAGE;
}

static const char help_text[] =
	"usage: tern queue [-c FILE] [--json] [--url http://HOST:PORT] COMMAND\n"
	"\n"
	"Commands (through the running server's management API):\n"
	"  list [--sender S] [--rcpt R] [--before T] [--after T] [--status S] [--limit N]\n"
	"                     queued messages, oldest first; T is RFC 3339 or seconds\n"
	"                     since the epoch, S one of queued, deferred, held, in-flight\n"
	"  show ID            a message and each recipient's state and last error\n"
	"  retry ID [RCPT]    attempt the pending recipients (or RCPT) now\n"
	"  hold ID [RCPT]     do not attempt them until released\n"
	"  release ID [RCPT]  attempt held recipients now\n"
	"  cancel ID [RCPT]   fail them now (the sender gets a failure notice)\n"
	"\n"
	"The API and its credentials come from the configuration: the first\n"
	"listener with protocol \"http\" and the first entry of management.auth.lookup.\n"
	"--url, TERN_API_USER and TERN_API_PASSWORD override them.\n"
	"--json prints the server's JSON as it is.\n"
	"\n"
	"Exit: 0 done, 1 no such message or nothing matched, 2 usage, 3 the server\n"
	"could not be reached, refused the credentials or failed.\n";

/* ---- finding the API ---- */

static int api_from_url(const char *url, struct api *api)
{
	struct evhttp_uri *uri = evhttp_uri_parse(url);
	const char *host = uri != NULL ? evhttp_uri_get_host(uri) : NULL;
	const char *path = uri != NULL ? evhttp_uri_get_path(uri) : NULL;
	size_t host_len = host != NULL ? strlen(host) : 0;

	if (uri == NULL || evhttp_uri_get_scheme(uri) == NULL ||
	    strcasecmp(evhttp_uri_get_scheme(uri), "http") != 0 || host_len == 0 ||
	    host_len >= sizeof(api->host) || evhttp_uri_get_userinfo(uri) != NULL ||
	    evhttp_uri_get_query(uri) != NULL || evhttp_uri_get_fragment(uri) != NULL ||
	    (path != NULL && path[0] != '\0' && strcmp(path, "/") != 0)) {
		evhttp_uri_free(uri);
		return usage("--url takes http://HOST:PORT, not '%s'", url);
	}
	api->port = evhttp_uri_get_port(uri) > 0 ? evhttp_uri_get_port(uri) : 80;
	snprintf(api->host_header, sizeof(api->host_header), "%s:%d", host, api->port);
	/* "[::1]" is how a URL writes it, "::1" what connecting takes. */
	if (host[0] == '[' && host[host_len - 1] == ']')
		snprintf(api->host, sizeof(api->host), "%.*s", (int)(host_len - 2), host + 1);
	else
		snprintf(api->host, sizeof(api->host), "%s", host);
	evhttp_uri_free(uri);
	return -1;
}

static int api_from_config(const struct config *cfg, const char *path, struct api *api)
{
	for (size_t i = 0; i < config_section_count(cfg, CFG_GROUP_LISTENER); i++) {
		const struct cfg_section *l = config_section_at(cfg, CFG_GROUP_LISTENER, i);
		const struct cfg_value *bind = cfg_section_get(l, CFG_LISTENER_BIND);
		struct ipaddr addr;
		bool v6;

		if (cfg_section_get(l, CFG_LISTENER_PROTOCOL)->num != CFG_PROTO_HTTP ||
		    bind == NULL || bind->n_items == 0)
			continue;
		addr = bind->items[0].addr;
		v6 = addr.family == AF_INET6;
		/* A wildcard address: the server is on this machine. */
		if (memcmp(addr.bytes, (const uint8_t[16]){ 0 }, v6 ? 16 : 4) == 0) {
			if (v6)
				addr.bytes[15] = 1;
			else
				memcpy(addr.bytes, (const uint8_t[]){ 127, 0, 0, 1 }, 4);
		}
		ipaddr_format(&addr, api->host, sizeof(api->host));
		api->port = (int)bind->items[0].num;
		snprintf(api->host_header, sizeof(api->host_header), v6 ? "[%s]:%d" : "%s:%d",
			 api->host, api->port);
		return -1;
	}
	fprintf(stderr, "tern queue: %s has no listener with protocol \"http\"; "
		"give the API's address with --url\n", path);
	return EXIT_USAGE;
}

/* "Basic base64(user:password)"; false when out of memory. */
static bool set_authorization(struct api *api, const char *user, size_t user_len,
			      const char *password)
{
	struct strbuf cred;
	bool ok;

	strbuf_init(&cred);
	strbuf_append(&cred, user, user_len);
	strbuf_putc(&cred, ':');
	strbuf_puts(&cred, password);
	api->authorization = strbuf_failed(&cred) ? NULL
						  : malloc(6 + BASE64_ENCODED_LEN(cred.len) + 1);
	ok = api->authorization != NULL;
	if (ok) {
		memcpy(api->authorization, "Basic ", 6);
		base64_encode(cred.data, cred.len, api->authorization + 6);
	}
	explicit_bzero(cred.data, cred.len);
	strbuf_free(&cred);
	return ok;
}

/*
 * Fill cli->api: the address from --url or the configuration, the
 * credentials from the environment or the lookup list's first entry.
 * Returns -1 when done, else the exit code.
 */
static int find_api(struct cli *cli)
{
	const char *user = getenv("TERN_API_USER"), *password = getenv("TERN_API_PASSWORD");
	size_t user_len = user != NULL ? strlen(user) : 0;
	struct config *cfg = NULL;
	int rc;

	if (cli->url == NULL || user == NULL || password == NULL) {
		struct diags diags;
		const struct cfg_value *lookup;
		const char *entry, *colon;

		diags_init(&diags, cli->config_path);
		cfg = config_load_file(cli->config_path, 0, &diags);
		diags_print(&diags, stderr);
		diags_free(&diags);
		if (cfg == NULL)
			return EXIT_USAGE;
		lookup = config_get(cfg, CFG_MANAGEMENT_AUTH_LOOKUP);
		entry = lookup != NULL && !lookup->none ? cfg_list_entry(lookup->list, 0) : NULL;
		colon = entry != NULL ? strchr(entry, ':') : NULL;
		if (colon != NULL && user == NULL) {
			user = entry;
			user_len = (size_t)(colon - entry);
		}
		if (colon != NULL && password == NULL)
			password = colon + 1;
	}
	if (cli->url != NULL)
		rc = api_from_url(cli->url, &cli->api);
	else
		rc = api_from_config(cfg, cli->config_path, &cli->api);
	/* Without credentials the server answers 401, which says it best. */
	if (rc < 0 && user != NULL && password != NULL &&
	    !set_authorization(&cli->api, user, user_len, password)) {
		fprintf(stderr, "tern queue: out of memory\n");
		rc = EXIT_SERVER;
	}
	config_free(cfg);
	return rc;
}

/* ---- one request ---- */

static void response_cb(struct evhttp_request *req, void *arg)
{
	struct response *res = arg;

	if (req != NULL && evhttp_request_get_response_code(req) != 0) {
		struct evbuffer *in = evhttp_request_get_input_buffer(req);
		size_t n = evbuffer_get_length(in);

		res->status = evhttp_request_get_response_code(req);
		if (n > 0)
			strbuf_append(&res->body, (const char *)evbuffer_pullup(in, -1), n);
	}
	event_base_loopbreak(res->base);
}

static void error_cb(enum evhttp_request_error error, void *arg)
{
	struct response *res = arg;

	res->error = error;
}

static const char *request_error_text(enum evhttp_request_error e)
{
	switch (e) {
	case EVREQ_HTTP_TIMEOUT:
		return "no answer in time";
	case EVREQ_HTTP_EOF:
		return "the connection was closed";
	case EVREQ_HTTP_INVALID_HEADER:
		return "the answer is not HTTP";
	case EVREQ_HTTP_DATA_TOO_LONG:
		return "the answer is too large";
	default:
		return "cannot connect";
	}
}

/* Send method path_query; res gets the status (0 on failure, with
 * res->error) and the body. False only when out of memory. */
static bool http_exchange(const struct api *api, enum evhttp_cmd_type method,
			  const char *path_query, struct response *res)
{
	struct evhttp_connection *conn = NULL;
	struct evhttp_request *req = NULL;
	struct evkeyvalq *headers;
	bool ok = false;

	res->status = 0;
	res->error = EVREQ_HTTP_BUFFER_ERROR;
	strbuf_reset(&res->body);
	res->base = event_base_new();
	if (res->base != NULL)
		conn = evhttp_connection_base_new(res->base, NULL, api->host, (ev_uint16_t)api->port);
	if (conn == NULL || (req = evhttp_request_new(response_cb, res)) == NULL)
		goto out;
	evhttp_connection_set_timeout(conn, CLI_TIMEOUT_S);
	evhttp_connection_set_max_body_size(conn, CLI_MAX_RESPONSE);
	evhttp_request_set_error_cb(req, error_cb);
	headers = evhttp_request_get_output_headers(req);
	if (evhttp_add_header(headers, "Host", api->host_header) != 0 ||
	    evhttp_add_header(headers, "Connection", "close") != 0 ||
	    evhttp_add_header(headers, "Accept", "application/json") != 0 ||
	    (api->authorization != NULL &&
	     evhttp_add_header(headers, "Authorization", api->authorization) != 0))
		goto out;
	/* evhttp_make_request owns req from here, even when it fails. */
	ok = true;
	if (evhttp_make_request(conn, req, method, path_query) == 0)
		event_base_dispatch(res->base);
	req = NULL;
out:
	if (req != NULL)
		evhttp_request_free(req);
	if (conn != NULL)
		evhttp_connection_free(conn);
	if (res->base != NULL)
		event_base_free(res->base);
	return ok && !strbuf_failed(&res->body);
}

/* The request, again while the server answers 409 (a delivery of the
 * message is in flight); -1 when answered, else the exit code. */
static int api_call(const struct cli *cli, enum evhttp_cmd_type method, const char *path_query,
		    struct response *res)
{
	for (int tries = 0;; tries++) {
		if (!http_exchange(&cli->api, method, path_query, res)) {
			fprintf(stderr, "tern queue: out of memory\n");
			return EXIT_SERVER;
		}
		if (res->status != 409 || tries == CLI_BUSY_RETRIES)
			break;
		nanosleep(&(struct timespec){ 0, CLI_BUSY_WAIT_MS * 1000000L }, NULL);
	}
	if (res->status == 0) {
		fprintf(stderr, "tern queue: cannot reach the management API at http://%s/ "
			"(is `tern serve` running?): %s\n", cli->api.host_header,
			request_error_text(res->error));
		return EXIT_SERVER;
	}
	return -1;
}

/* ---- output ---- */

/* s with control characters as '?', into buf (size CLI_CELL_MAX, cut). */
static const char *clean(const char *s, char *buf)
{
	size_t i = 0;

	for (; s[i] != '\0' && i + 1 < CLI_CELL_MAX; i++)
		buf[i] = ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) ? '?' : s[i];
	buf[i] = '\0';
	return buf;
}

static const char *str_field(const json_t *obj, const char *key, const char *absent)
{
	const char *s = json_string_value(json_object_get(obj, key));

	return s != NULL ? s : absent;
}

static json_int_t int_field(const json_t *obj, const char *key)
{
	return json_integer_value(json_object_get(obj, key));
}

/* The server's "error" text, or its status. */
static void print_server_error(const struct response *res, const json_t *body)
{
	char buf[CLI_CELL_MAX];
	const char *msg = str_field(body, "error", NULL);

	if (msg != NULL)
		fprintf(stderr, "tern queue: %s\n", clean(msg, buf));
	else
		fprintf(stderr, "tern queue: the server answered HTTP %d\n", res->status);
}

/* Exit code for a status other than 200, after saying why. */
static int exit_for_failure(const struct response *res, const json_t *body)
{
	switch (res->status) {
	case 400:
		print_server_error(res, body);
		return EXIT_USAGE;
	case 404:
		print_server_error(res, body);
		return EXIT_NOTHING;
	case 401:
		fprintf(stderr, "tern queue: the server refused the credentials (the first entry of "
			"management.auth.lookup, or TERN_API_USER and TERN_API_PASSWORD)\n");
		return EXIT_SERVER;
	default:
		print_server_error(res, body);
		return EXIT_SERVER;
	}
}

/* Columns of the list: ID ARRIVAL SIZE STATUS SENDER, then RECIPIENTS;
 * SIZE is aligned to the right. */
#define LIST_COLUMNS 5
#define SIZE_COLUMN 2

static void list_cells(const json_t *m, const char *cells[LIST_COLUMNS], char size[32])
{
	const char *sender = str_field(m, "sender", "?");

	snprintf(size, 32, "%lld", (long long)int_field(m, "size"));
	cells[0] = str_field(m, "id", "?");
	cells[1] = str_field(m, "arrival", "?");
	cells[SIZE_COLUMN] = size;
	cells[3] = str_field(m, "status", "?");
	cells[4] = sender[0] != '\0' ? sender : "<>";
}

static void print_list(const json_t *messages)
{
	static const char *const titles[LIST_COLUMNS] = { "ID", "ARRIVAL", "SIZE", "STATUS",
							  "SENDER" };
	size_t width[LIST_COLUMNS], i;
	const json_t *m;
	char buf[CLI_CELL_MAX], size[32];
	const char *cells[LIST_COLUMNS];

	for (int c = 0; c < LIST_COLUMNS; c++)
		width[c] = strlen(titles[c]);
	json_array_foreach(messages, i, m) {
		list_cells(m, cells, size);
		for (int c = 0; c < LIST_COLUMNS; c++)
			if (strlen(clean(cells[c], buf)) > width[c])
				width[c] = strlen(buf);
	}
	for (int c = 0; c < LIST_COLUMNS; c++)
		printf("%-*s  ", (int)width[c], titles[c]);
	printf("RECIPIENTS\n");
	json_array_foreach(messages, i, m) {
		const json_t *rcpts = json_object_get(m, "recipients"), *r;
		size_t k;

		list_cells(m, cells, size);
		for (int c = 0; c < LIST_COLUMNS; c++)
			printf("%*s  ", c == SIZE_COLUMN ? (int)width[c] : -(int)width[c],
			       clean(cells[c], buf));
		json_array_foreach(rcpts, k, r) {
			const char *addr = json_string_value(r);

			printf("%s%s", k > 0 ? ", " : "", clean(addr != NULL ? addr : "?", buf));
		}
		printf("\n");
	}
}

static void print_last_error(const json_t *e)
{
	char buf[CLI_CELL_MAX];
	const json_t *code = json_object_get(e, "code");

	printf("    last error:    ");
	if (json_is_integer(code))
		printf("%lld ", (long long)json_integer_value(code));
	printf("%s", clean(str_field(e, "dsn", "-"), buf));
	printf(" at %s", clean(str_field(e, "stage", "?"), buf));
	printf(", relay %s", clean(str_field(e, "relay", "?"), buf));
	printf(", %s\n", clean(str_field(e, "at", "?"), buf));
	/* As in the log line: the remote's reply, or tern's reason. */
	printf("                   %s: %s\n",
	       json_is_true(json_object_get(e, "remote")) ? "reply" : "reason",
	       clean(str_field(e, "text", ""), buf));
}

static void print_message(const json_t *m)
{
	const json_t *rcpts = json_object_get(m, "recipients"), *r;
	char buf[CLI_CELL_MAX];
	const char *sender = str_field(m, "sender", "?");
	size_t i;

	printf("id:          %s\n", clean(str_field(m, "id", "?"), buf));
	printf("sender:      %s\n", clean(sender[0] != '\0' ? sender : "<>", buf));
	printf("arrival:     %s\n", clean(str_field(m, "arrival", "?"), buf));
	printf("size:        %lld bytes\n", (long long)int_field(m, "size"));
	printf("status:      %s\n", clean(str_field(m, "status", "?"), buf));
	if (json_is_string(json_object_get(m, "envid")))
		printf("envid:       %s\n", clean(str_field(m, "envid", ""), buf));
	json_array_foreach(rcpts, i, r) {
		const json_t *last = json_object_get(r, "last_error");

		printf("\n%s\n", clean(str_field(r, "address", "?"), buf));
		printf("    state:         %s\n", clean(str_field(r, "state", "?"), buf));
		printf("    attempts:      %lld\n", (long long)int_field(r, "attempts"));
		if (json_is_string(json_object_get(r, "next_attempt")))
			printf("    next attempt:  %s\n", clean(str_field(r, "next_attempt", ""), buf));
		printf("    expires:       %s\n", clean(str_field(r, "expires", "?"), buf));
		if (json_is_object(last))
			print_last_error(last);
	}
}

/* ---- commands ---- */

static bool is_queue_id(const char *s)
{
	return strlen(s) == 16 && strspn(s, "0123456789abcdefABCDEF") == 16;
}

/* What a command does with the server's 200: print it (unless --json
 * did) and choose the exit code. */
typedef int (*show_fn)(const struct cli *cli, const json_t *body);

/* Ask, print the JSON as it came with --json, then let show have a 200
 * or say what went wrong. Returns the exit code. */
static int run_request(const struct cli *cli, enum evhttp_cmd_type method, const char *path_query,
		       show_fn show)
{
	struct response res = { 0 };
	json_t *body = NULL;
	int rc;

	strbuf_init(&res.body);
	rc = api_call(cli, method, path_query, &res);
	if (rc < 0) {
		body = json_loadb(res.body.data != NULL ? res.body.data : "", res.body.len, 0, NULL);
		if (cli->json && body != NULL)
			fwrite(res.body.data, 1, res.body.len, stdout);
		if (res.status != 200) {
			rc = exit_for_failure(&res, body);
		} else if (body == NULL) {
			fprintf(stderr, "tern queue: the server's answer is not JSON\n");
			rc = EXIT_SERVER;
		} else {
			rc = show(cli, body);
		}
	}
	json_decref(body);
	strbuf_free(&res.body);
	return rc;
}

static int show_list(const struct cli *cli, const json_t *body)
{
	const json_t *messages = json_object_get(body, "messages");

	if (json_array_size(messages) == 0) {
		fprintf(stderr, "tern queue: no message matches\n");
		return EXIT_NOTHING;
	}
	if (!cli->json)
		print_list(messages);
	return EXIT_DONE;
}

static int show_message(const struct cli *cli, const json_t *body)
{
	if (!cli->json)
		print_message(body);
	return EXIT_DONE;
}

static int show_changed(const struct cli *cli, const json_t *body)
{
	json_int_t n = int_field(body, "changed");

	if (n == 0) {
		fprintf(stderr, "tern queue: nothing to change\n");
		return EXIT_NOTHING;
	}
	if (!cli->json)
		printf("%lld recipient%s changed\n", (long long)n, n == 1 ? "" : "s");
	return EXIT_DONE;
}

/* "?name=value" or "&name=value", the value percent-encoded; false when
 * out of memory. */
static bool put_query_param(struct strbuf *path, const char *name, const char *value)
{
	char *enc = evhttp_uriencode(value, -1, 0);

	if (enc == NULL)
		return false;
	strbuf_printf(path, "%c%s=%s", strchr(strbuf_str(path), '?') != NULL ? '&' : '?', name, enc);
	free(enc);
	return !strbuf_failed(path);
}

/*
 * The request of a command: list (filters as query parameters), show
 * (GET of the message), an action (POST .../<action>, ?rcpt= when given).
 * False when out of memory.
 */
static bool command_path(const struct cli *cli, const char *name, char **args, int n_args,
			 struct strbuf *path)
{
	bool ok = true;

	strbuf_puts(path, "/api/queue/messages");
	if (strcmp(name, "list") == 0) {
		for (size_t i = 0; ok && i < N_FILTERS; i++)
			if (cli->filters[i] != NULL)
				ok = put_query_param(path, filter_names[i], cli->filters[i]);
		return ok && !strbuf_failed(path);
	}
	strbuf_printf(path, "/%s", args[0]);
	if (strcmp(name, "show") != 0)
		strbuf_printf(path, "/%s", name);
	if (n_args > 1)
		ok = put_query_param(path, "rcpt", args[1]);
	return ok && !strbuf_failed(path);
}

static const struct {
	const char *name;
	int min_args, max_args; /* after the command's name; the first is a queue id */
	enum evhttp_cmd_type method;
	show_fn show;
} commands[] = {
	{ "list", 0, 0, EVHTTP_REQ_GET, show_list },
	{ "show", 1, 1, EVHTTP_REQ_GET, show_message },
	{ "retry", 1, 2, EVHTTP_REQ_POST, show_changed },
	{ "hold", 1, 2, EVHTTP_REQ_POST, show_changed },
	{ "release", 1, 2, EVHTTP_REQ_POST, show_changed },
	{ "cancel", 1, 2, EVHTTP_REQ_POST, show_changed },
};

int admin_queue_main(int argc, char **argv, const char *default_config)
{
	enum { OPT_JSON = 256, OPT_URL, OPT_FILTER };
	static const struct option longopts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "json", no_argument, NULL, OPT_JSON },
		{ "url", required_argument, NULL, OPT_URL },
		{ "sender", required_argument, NULL, OPT_FILTER + 0 },
		{ "rcpt", required_argument, NULL, OPT_FILTER + 1 },
		{ "before", required_argument, NULL, OPT_FILTER + 2 },
		{ "after", required_argument, NULL, OPT_FILTER + 3 },
		{ "status", required_argument, NULL, OPT_FILTER + 4 },
		{ "limit", required_argument, NULL, OPT_FILTER + 5 },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct cli cli = { .config_path = default_config };
	struct strbuf path;
	bool filtered = false;
	int ch, rc;

	optind = 1;
	opterr = 0;
	while ((ch = getopt_long(argc, argv, "c:h", longopts, NULL)) != -1) {
		if (ch == 'c') {
			cli.config_path = optarg;
		} else if (ch == OPT_JSON) {
			cli.json = true;
		} else if (ch == OPT_URL) {
			cli.url = optarg;
		} else if (ch >= OPT_FILTER && ch < OPT_FILTER + (int)N_FILTERS) {
			cli.filters[ch - OPT_FILTER] = optarg;
			filtered = true;
		} else if (ch == 'h') {
			fputs(help_text, stdout);
			return EXIT_DONE;
		} else {
			return usage("unknown or incomplete option '%s'", argv[optind - 1]);
		}
	}
	if (optind >= argc)
		return usage("a command is needed: %s", "list, show, retry, hold, release or cancel");
	const char *name = argv[optind];
	char **args = argv + optind + 1;
	int n_args = argc - optind - 1;
	size_t c = 0;

	while (c < sizeof(commands) / sizeof(commands[0]) && strcmp(commands[c].name, name) != 0)
		c++;
	if (c == sizeof(commands) / sizeof(commands[0]))
		return usage("unknown command '%s'", name);
	if (n_args < commands[c].min_args)
		return usage("%s needs a queue id", name);
	if (n_args > commands[c].max_args)
		return usage("unexpected argument '%s'", args[commands[c].max_args]);
	if (filtered && strcmp(name, "list") != 0)
		return usage("the filters (--sender, --rcpt, ...) are for list, not %s", name);
	if (n_args > 0 && !is_queue_id(args[0]))
		return usage("not a queue id (16 hexadecimal digits): '%s'", args[0]);
	rc = find_api(&cli);
	if (rc >= 0)
		return rc;
	strbuf_init(&path);
	if (command_path(&cli, name, args, n_args, &path)) {
		rc = run_request(&cli, commands[c].method, strbuf_str(&path), commands[c].show);
	} else {
		fprintf(stderr, "tern queue: out of memory\n");
		rc = EXIT_SERVER;
	}
	strbuf_free(&path);
	free(cli.api.authorization);
	return rc;
}
