/*
 * http_api.c - the management API: evhttp on the server's event loop,
 * HTTP Basic authentication, the queue endpoints; see admin.h and
 * docs/management.md.
 *
 * Every request goes through request_cb: it authenticates against
 * management.auth.lookup of the running configuration (a SIGHUP changes
 * the credentials at once; no lookup refuses everything), refuses a
 * request body, then finds its route in the table `routes`: a path of the
 * table asked with another method gets 405 and Allow, any other path 404.
 * Query parameters are checked against the route's list: unknown,
 * repeated or malformed ones get 400 naming the parameter. Every answer
 * is JSON (jansson) but /metrics (metrics.c).
 *
 * Text that comes from senders or peers (addresses, the remote's reply)
 * may not be UTF-8, which JSON requires: such a string has its 8-bit
 * bytes replaced by '?'. Handlers run to completion on the loop and keep
 * nothing between requests: a message pointer is used only within the
 * callback that found it.
 *
 * Bounds: request headers at most ADMIN_MAX_HEADERS_SIZE, no body,
 * ADMIN_TIMEOUT_S of idleness per connection, at most `limit` messages
 * per list. Not done here: TLS (keep the listener on loopback or behind a
 * proxy), a cap on concurrent connections (evhttp 2.1 has none; the
 * timeout bounds each), throttling failed logins (they are logged).
 */
#include "admin/admin.h"
#include "admin/internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <event2/util.h>
#include <jansson.h>

#include "config/settings.h"
#include "queue/queue.h"
#include "server/server.h"
#include "util/base64.h"
#include "util/log.h"
#include "util/text.h"
#include "util/timefmt.h"

#define ADMIN_MAX_HEADERS_SIZE 8192
#define ADMIN_TIMEOUT_S 30
#define ADMIN_BACKLOG 128
/* The decoded "user:secret" of an Authorization header. */
#define CREDENTIALS_MAX 1024
#define USER_LOG_MAX 128
#define LIST_LIMIT_DEFAULT 1000
#define LIST_LIMIT_MAX 100000
/* Query parameters one route takes, at most. */
#define PARAMS_MAX 6
#define QUEUE_ID_DIGITS 16

struct admin {
	struct server *srv;
	struct evhttp *http; /* NULL when no listener has protocol "http" */
};

struct route;

/* One request as the handlers see it. */
struct request {
	struct admin *ad;
	struct evhttp_request *req;
	const struct route *route;
	uint64_t id;                     /* the path's queue id, for routes with one */
	char id_text[QUEUE_ID_DIGITS + 1];
	const char *params[PARAMS_MAX];  /* by index in route->params; NULL = absent */
	char user[USER_LOG_MAX];         /* who asked, escaped for the log */
};

typedef int (*queue_action_fn)(struct queue *q, uint64_t id, const char *rcpt);

struct route {
	const char *pattern;         /* a '*' segment is a queue id */
	int methods;                 /* EVHTTP_REQ_* bits */
	const char *allow;           /* the Allow header of a 405 */
	void (*handle)(struct request *r);
	const char *params[PARAMS_MAX]; /* query parameters taken */
	queue_action_fn act;         /* POST .../<action>: what it does */
	const char *action;
};

/* ---- replies ---- */

static int append_to_evbuffer(const char *buf, size_t size, void *data)
{
	return evbuffer_add(data, buf, size);
}

/* Answer body as JSON and release it; a NULL body (out of memory while
 * building it) answers 500. */
static void reply_json(struct evhttp_request *req, int code, json_t *body)
{
	struct evbuffer *out = evhttp_request_get_output_buffer(req);

	if (body == NULL || json_dump_callback(body, append_to_evbuffer, out, JSON_COMPACT) != 0 ||
	    evbuffer_add(out, "\n", 1) != 0) {
		json_decref(body);
		evbuffer_drain(out, evbuffer_get_length(out));
		evhttp_send_error(req, 500, NULL);
		return;
	}
	json_decref(body);
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
	evhttp_send_reply(req, code, NULL, NULL);
}

/* s as a JSON string; not UTF-8, its 8-bit bytes become '?'. NULL when
 * out of memory. */
static json_t *json_text_n(const char *s, size_t len)
{
	char *copy;
	json_t *j;

	if (text_utf8_valid(s, len))
		return json_stringn_nocheck(s, len);
	if ((copy = malloc(len + 1)) == NULL)
		return NULL;
	for (size_t i = 0; i < len; i++)
		copy[i] = (unsigned char)s[i] >= 0x80 ? '?' : s[i];
	j = json_stringn_nocheck(copy, len);
	free(copy);
	return j;
}

static json_t *json_text(const char *s)
{
	return json_text_n(s, strlen(s));
}

static json_t *json_time(int64_t ms)
{
	char buf[TIMEFMT_RFC3339_SIZE];

	return json_string(timefmt_rfc3339(ms, buf));
}

static void reply_error(struct evhttp_request *req, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void reply_error(struct evhttp_request *req, int code, const char *fmt, ...)
{
	char text[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	reply_json(req, code, json_pack("{s:o}", "error", json_text(text)));
}

/* ---- authentication ---- */

enum auth_result { AUTH_OK, AUTH_DISABLED, AUTH_REFUSED };

/* The "user:secret" list of management.auth.lookup; NULL when not set. */
static const struct cfg_list *auth_list(const struct config *cfg)
{
	const struct cfg_value *lookup = config_get(cfg, CFG_MANAGEMENT_AUTH_LOOKUP);

	return lookup != NULL && !lookup->none ? lookup->list : NULL;
}

/*
 * The request's Basic credentials against every "user:secret" entry of
 * the lookup list. Every entry is compared, whichever matches, so the
 * time taken does not tell which one came close. The user name, escaped,
 * goes to user for the log.
 */
static enum auth_result authenticate(const struct config *cfg, struct evhttp_request *req,
				     char *user, size_t userlen)
{
	const struct cfg_list *list = auth_list(cfg);
	const char *hdr = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
	char cred[CREDENTIALS_MAX];
	const char *colon = NULL;
	size_t len = 0;
	bool match = false;

	snprintf(user, userlen, "-");
	if (list == NULL)
		return AUTH_DISABLED;
	if (hdr == NULL || strncasecmp(hdr, "Basic ", 6) != 0)
		return AUTH_REFUSED;
	for (hdr += 6; *hdr == ' '; hdr++)
		;
	if (base64_decode(hdr, strlen(hdr), cred, sizeof(cred), &len) &&
	    memchr(cred, '\0', len) == NULL && (colon = memchr(cred, ':', len)) != NULL) {
		log_escape(cred, (size_t)(colon - cred), user, userlen);
		for (size_t i = 0; i < cfg_list_count(list); i++) {
			const char *entry = cfg_list_entry(list, i);

			match |= text_equal_secret(cred, len, entry, strlen(entry));
		}
	}
	explicit_bzero(cred, sizeof(cred));
	return match ? AUTH_OK : AUTH_REFUSED;
}

/* ---- the queue as JSON ---- */

enum msg_status { MSG_QUEUED, MSG_DEFERRED, MSG_HELD, MSG_IN_FLIGHT, MSG_STATUS_COUNT };
static const char *const msg_status_names[MSG_STATUS_COUNT] = { "queued", "deferred", "held",
								 "in-flight" };

/* in-flight: a delivery is out; held: every pending recipient is on hold;
 * deferred: a pending recipient has been attempted; queued: none has. */
static enum msg_status message_status(const struct message *msg)
{
	bool all_held = true, attempted = false;

	if (queue_in_flight(msg))
		return MSG_IN_FLIGHT;
	for (size_t i = 0; i < msg->n_rcpts; i++) {
		const struct rcpt *r = &msg->rcpts[i];

		if (r->state != RCPT_PENDING)
			continue;
		all_held &= (r->flags & RCPT_F_HELD) != 0;
		attempted |= r->attempts > 0;
	}
	if (all_held && message_pending(msg) > 0)
		return MSG_HELD;
	return attempted ? MSG_DEFERRED : MSG_QUEUED;
}

static const char *rcpt_state_name(const struct rcpt *r)
{
	switch (r->state) {
	case RCPT_DELIVERED:
		return "delivered";
	case RCPT_FAILED:
		return "failed";
	default:
		return (r->flags & RCPT_F_HELD) ? "held" : "pending";
	}
}

/* The last outcome when it was not a success; null otherwise. */
static json_t *last_error_json(const struct queue_rcpt_info *info)
{
	const struct delivery_status *ds = info->last;

	if (ds == NULL || ds->cls == DS_OK)
		return json_null();
	return json_pack("{s:o, s:o, s:s, s:o, s:b, s:o, s:o, s:o}",
			 "code", ds->code != 0 ? json_integer(ds->code) : json_null(),
			 "dsn", ds->enhanced[0] != '\0' ? json_text(ds->enhanced) : json_null(),
			 "stage", ds_stage_name(ds->stage),
			 "text", json_text(ds->text),
			 "remote", ds->remote != 0,
			 "relay", json_text(info->last_relay != NULL ? info->last_relay : "none"),
			 "tls", info->last_tls != NULL && info->last_tls[0] != '\0'
				? json_text(info->last_tls) : json_null(),
			 "at", json_time(info->last_ms));
}

static json_t *rcpt_json(struct queue *q, const struct message *msg, size_t i)
{
	const struct rcpt *r = &msg->rcpts[i];
	struct queue_rcpt_info info;
	bool waiting;

	queue_rcpt_info(q, msg, i, &info);
	waiting = r->state == RCPT_PENDING && !info.held;
	return json_pack("{s:o, s:o, s:s, s:i, s:o, s:o, s:o}",
			 "address", json_text_n(r->addr, r->addr_len),
			 "domain", json_text_n(r->domain, r->domain_len),
			 "state", rcpt_state_name(r),
			 "attempts", (int)r->attempts,
			 "next_attempt", waiting ? json_time(r->next_try_ms) : json_null(),
			 "expires", json_time(info.expire_ms),
			 "last_error", last_error_json(&info));
}

/* A message: with every recipient in full (detail), or as the summary of
 * a list, its recipients' addresses only. */
static json_t *message_json(struct queue *q, const struct message *msg, bool detail)
{
	json_t *rcpts = json_array();
	char id[QUEUE_ID_DIGITS + 1];

	if (rcpts == NULL)
		return NULL;
	for (size_t i = 0; i < msg->n_rcpts; i++) {
		json_t *r = detail ? rcpt_json(q, msg, i)
				   : json_text_n(msg->rcpts[i].addr, msg->rcpts[i].addr_len);

		if (json_array_append_new(rcpts, r) != 0) {
			json_decref(rcpts);
			return NULL;
		}
	}
	snprintf(id, sizeof(id), "%016" PRIx64, msg->id);
	return json_pack("{s:s, s:o, s:o, s:I, s:s, s:b, s:o, s:I, s:o}",
			 "id", id,
			 "sender", json_text(msg->sender),
			 "arrival", json_time(msg->arrival_ms),
			 "size", (json_int_t)msg->size,
			 "status", msg_status_names[message_status(msg)],
			 "in_flight", queue_in_flight(msg),
			 "envid", msg->envid != NULL ? json_text(msg->envid) : json_null(),
			 "pending", (json_int_t)message_pending(msg),
			 "recipients", rcpts);
}

/* ---- parameters ---- */

/* The value of query parameter name (one the route takes), or NULL. */
static const char *param(const struct request *r, const char *name)
{
	for (size_t i = 0; i < PARAMS_MAX && r->route->params[i] != NULL; i++)
		if (strcmp(r->route->params[i], name) == 0)
			return r->params[i];
	return NULL;
}

/* Fill r->params from the query string; false after answering 400. The
 * values live in query until the caller clears it. */
static bool parse_query(struct request *r, const char *query_text, struct evkeyvalq *query)
{
	const struct evkeyval *kv;

	if (query_text == NULL)
		return true;
	if (evhttp_parse_query_str(query_text, query) != 0) {
		reply_error(r->req, 400, "malformed query string");
		return false;
	}
	TAILQ_FOREACH(kv, query, next) {
		size_t i = 0;

		while (i < PARAMS_MAX && r->route->params[i] != NULL &&
		       strcmp(r->route->params[i], kv->key) != 0)
			i++;
		if (i == PARAMS_MAX || r->route->params[i] == NULL) {
			reply_error(r->req, 400, "%s: unknown parameter", kv->key);
			return false;
		}
		if (r->params[i] != NULL) {
			reply_error(r->req, 400, "%s: given more than once", kv->key);
			return false;
		}
		r->params[i] = kv->value;
	}
	return true;
}

/* The 16 hexadecimal digits of a queue id. */
static bool parse_queue_id(const char *s, size_t len, uint64_t *id)
{
	uint64_t v = 0;

	if (len != QUEUE_ID_DIGITS)
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];
		unsigned d;

		if (c >= '0' && c <= '9')
			d = (unsigned)(c - '0');
		else if (c >= 'a' && c <= 'f')
			d = (unsigned)(c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			d = (unsigned)(c - 'A' + 10);
		else
			return false;
		v = v << 4 | d;
	}
	*id = v;
	return true;
}

/* ---- GET /api/queue/messages ---- */

struct list_query {
	const char *sender, *rcpt; /* exact, ASCII case-insensitive; NULL: any */
	int64_t before_ms, after_ms; /* arrival strictly between */
	int status;                  /* enum msg_status, or -1: any */
	size_t limit;
	const struct message **found;
	size_t n_found, cap_found;
	bool failed;                 /* out of memory */
};

static bool list_matches(const struct list_query *lq, const struct message *msg)
{
	bool rcpt_found = lq->rcpt == NULL;

	if (lq->sender != NULL && strcasecmp(msg->sender, lq->sender) != 0)
		return false;
	if (msg->arrival_ms >= lq->before_ms || msg->arrival_ms <= lq->after_ms)
		return false;
	if (lq->status >= 0 && (int)message_status(msg) != lq->status)
		return false;
	for (size_t i = 0; !rcpt_found && i < msg->n_rcpts; i++)
		rcpt_found = strcasecmp(msg->rcpts[i].addr, lq->rcpt) == 0;
	return rcpt_found;
}

static bool list_collect(void *arg, const struct message *msg)
{
	struct list_query *lq = arg;

	if (!list_matches(lq, msg))
		return true;
	if (lq->n_found == lq->cap_found) {
		size_t cap = lq->cap_found ? lq->cap_found * 2 : 256;
		const struct message **found = realloc(lq->found, cap * sizeof(*found));

		if (found == NULL) {
			lq->failed = true;
			return false;
		}
		lq->found = found;
		lq->cap_found = cap;
	}
	lq->found[lq->n_found++] = msg;
	return true;
}

static int by_arrival_then_id(const void *a, const void *b)
{
	const struct message *x = *(const struct message *const *)a;
	const struct message *y = *(const struct message *const *)b;

	if (x->arrival_ms != y->arrival_ms)
		return x->arrival_ms < y->arrival_ms ? -1 : 1;
	return x->id < y->id ? -1 : x->id > y->id;
}

/* The list's filters from the query; false after answering 400. */
static bool list_query_parse(struct request *r, struct list_query *lq)
{
	const char *before = param(r, "before"), *after = param(r, "after");
	const char *status = param(r, "status"), *limit = param(r, "limit");

	lq->sender = param(r, "sender");
	lq->rcpt = param(r, "rcpt");
	lq->before_ms = INT64_MAX;
	lq->after_ms = INT64_MIN;
	lq->status = -1;
	lq->limit = LIST_LIMIT_DEFAULT;
	if (before != NULL && !timefmt_parse(before, &lq->before_ms)) {
		reply_error(r->req, 400,
			    "before: expected an RFC 3339 time or seconds since the epoch");
		return false;
	}
	if (after != NULL && !timefmt_parse(after, &lq->after_ms)) {
		reply_error(r->req, 400,
			    "after: expected an RFC 3339 time or seconds since the epoch");
		return false;
	}
	if (status != NULL) {
		for (int s = 0; s < MSG_STATUS_COUNT; s++)
			if (strcmp(status, msg_status_names[s]) == 0)
				lq->status = s;
		if (lq->status < 0) {
			reply_error(r->req, 400,
				    "status: expected queued, deferred, held or in-flight");
			return false;
		}
	}
	if (limit != NULL) {
		char *end;
		unsigned long long n;

		errno = 0;
		n = strtoull(limit, &end, 10);
		if (limit[0] < '0' || limit[0] > '9' || *end != '\0' || errno != 0 || n < 1 ||
		    n > LIST_LIMIT_MAX) {
			reply_error(r->req, 400, "limit: expected a number from 1 to %d",
				    LIST_LIMIT_MAX);
			return false;
		}
		lq->limit = (size_t)n;
	}
	return true;
}

static void handle_list(struct request *r)
{
	struct queue *q = r->ad->srv->queue;
	struct list_query lq = { 0 };
	json_t *messages;
	size_t n;

	if (!list_query_parse(r, &lq))
		return;
	queue_visit(q, list_collect, &lq);
	if (lq.failed) {
		free(lq.found);
		reply_error(r->req, 500, "out of memory");
		return;
	}
	if (lq.n_found > 0)
		qsort(lq.found, lq.n_found, sizeof(*lq.found), by_arrival_then_id);
	n = lq.n_found < lq.limit ? lq.n_found : lq.limit;
	messages = json_array();
	for (size_t i = 0; messages != NULL && i < n; i++) {
		if (json_array_append_new(messages, message_json(q, lq.found[i], false)) != 0) {
			json_decref(messages);
			messages = NULL;
		}
	}
	free(lq.found);
	reply_json(r->req, 200, json_pack("{s:o, s:I}", "messages", messages, "count",
					       (json_int_t)n));
}

/* ---- GET /api/queue/messages/<id> ---- */

static void handle_show(struct request *r)
{
	struct queue *q = r->ad->srv->queue;
	const struct message *msg = queue_find(q, r->id);

	if (msg == NULL) {
		reply_error(r->req, 404, "no message %s in the queue", r->id_text);
		return;
	}
	reply_json(r->req, 200, message_json(q, msg, true));
}

/* ---- POST /api/queue/messages/<id>/<action> ---- */

static bool has_pending_rcpt(const struct message *msg, const char *addr)
{
	for (size_t i = 0; msg != NULL && i < msg->n_rcpts; i++)
		if (msg->rcpts[i].state == RCPT_PENDING && strcasecmp(msg->rcpts[i].addr, addr) == 0)
			return true;
	return false;
}

static void handle_action(struct request *r)
{
	struct queue *q = r->ad->srv->queue;
	const char *rcpt = param(r, "rcpt");
	char rcpt_log[600];
	int changed = r->route->act(q, r->id, rcpt);

	if (changed == -ENOENT) {
		reply_error(r->req, 404, "no message %s in the queue", r->id_text);
		return;
	}
	if (changed == -EBUSY) {
		reply_error(r->req, 409, "a delivery of message %s is in flight; try again in a moment",
			    r->id_text);
		return;
	}
	if (changed < 0) {
		reply_error(r->req, 500, "%s", strerror(-changed));
		return;
	}
	/* Nothing changed is fine (release with nothing held), unless the
	 * recipient named is not there to change at all. */
	if (changed == 0 && rcpt != NULL && !has_pending_rcpt(queue_find(q, r->id), rcpt)) {
		reply_error(r->req, 404, "message %s has no pending recipient %s",
			    r->id_text, rcpt);
		return;
	}
	if (rcpt != NULL)
		log_escape(rcpt, strlen(rcpt), rcpt_log, sizeof(rcpt_log));
	log_info("admin: %s: %s %s%s%s%s: %d recipient%s changed", r->user, r->route->action,
		 r->id_text, rcpt != NULL ? " rcpt=<" : "", rcpt != NULL ? rcpt_log : "",
		 rcpt != NULL ? ">" : "", changed, changed == 1 ? "" : "s");
	reply_json(r->req, 200, json_pack("{s:i}", "changed", changed));
}

/* ---- GET /metrics ---- */

static void handle_metrics(struct request *r)
{
	struct evbuffer *out = evhttp_request_get_output_buffer(r->req);

	if (!admin_metrics_render(r->ad->srv, out)) {
		evbuffer_drain(out, evbuffer_get_length(out));
		reply_error(r->req, 500, "out of memory");
		return;
	}
	evhttp_add_header(evhttp_request_get_output_headers(r->req), "Content-Type",
			  "text/plain; version=0.0.4; charset=utf-8");
	evhttp_send_reply(r->req, 200, NULL, NULL);
}

/* ---- routing ---- */

#define GET_OR_HEAD (EVHTTP_REQ_GET | EVHTTP_REQ_HEAD)
#define ACTION_ROUTE(name, fn) \
	{ "/api/queue/messages/*/" name, EVHTTP_REQ_POST, "POST", handle_action, { "rcpt" }, fn, name }

static const struct route routes[] = {
	{ "/api/queue/messages", GET_OR_HEAD, "GET, HEAD", handle_list,
	  { "sender", "rcpt", "before", "after", "status", "limit" }, NULL, NULL },
	{ "/api/queue/messages/*", GET_OR_HEAD, "GET, HEAD", handle_show, { NULL }, NULL, NULL },
	ACTION_ROUTE("retry", queue_retry_now),
	ACTION_ROUTE("hold", queue_hold),
	ACTION_ROUTE("release", queue_release),
	ACTION_ROUTE("cancel", queue_cancel),
	{ "/metrics", GET_OR_HEAD, "GET, HEAD", handle_metrics, { NULL }, NULL, NULL },
};

/* Does path match pattern? A '*' segment matches any one segment, which
 * goes to *seg (the handler's to validate). */
static bool path_matches(const char *pattern, const char *path, const char **seg, size_t *seg_len)
{
	while (*pattern != '\0' && *path != '\0') {
		if (*pattern == '*') {
			size_t n = strcspn(path, "/");

			if (n == 0)
				return false;
			*seg = path;
			*seg_len = n;
			path += n;
			pattern++;
		} else if (*pattern++ != *path++) {
			return false;
		}
	}
	return *pattern == '\0' && *path == '\0';
}

static void refuse_credentials(struct evhttp_request *req, const char *user)
{
	char *peer = NULL;
	ev_uint16_t port = 0;

	evhttp_connection_get_peer(evhttp_request_get_connection(req), &peer, &port);
	log_info("admin: %s: authentication failed (user %s)", peer != NULL ? peer : "?", user);
	evhttp_add_header(evhttp_request_get_output_headers(req), "WWW-Authenticate",
			  "Basic realm=\"tern\"");
	reply_error(req, 401, "authentication required");
}

static void request_cb(struct evhttp_request *req, void *arg)
{
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *path = uri != NULL ? evhttp_uri_get_path(uri) : NULL;
	int method = (int)evhttp_request_get_command(req);
	const struct route *wrong_method = NULL;
	struct request r = { .ad = arg, .req = req };
	struct evkeyvalq query;
	const char *id = NULL;
	size_t id_len = 0;

	switch (authenticate(r.ad->srv->cfg, req, r.user, sizeof(r.user))) {
	case AUTH_DISABLED:
		reply_error(req, 403, "the management API is off: management.auth.lookup is not set");
		return;
	case AUTH_REFUSED:
		refuse_credentials(req, r.user);
		return;
	case AUTH_OK:
		break;
	}
	if (evbuffer_get_length(evhttp_request_get_input_buffer(req)) > 0) {
		reply_error(req, 413, "requests take no body");
		return;
	}
	for (size_t i = 0; path != NULL && i < sizeof(routes) / sizeof(routes[0]); i++) {
		const char *seg = NULL;
		size_t seg_len = 0;

		if (!path_matches(routes[i].pattern, path, &seg, &seg_len))
			continue;
		id = seg;
		id_len = seg_len;
		if (routes[i].methods & method)
			r.route = &routes[i];
		else
			wrong_method = &routes[i];
	}
	if (r.route == NULL && wrong_method != NULL) {
		evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", wrong_method->allow);
		reply_error(req, 405, "this path takes %s", wrong_method->allow);
		return;
	}
	if (r.route == NULL) {
		reply_error(req, 404, "no such endpoint");
		return;
	}
	if (id != NULL) {
		if (!parse_queue_id(id, id_len, &r.id)) {
			reply_error(req, 400, "id: expected %d hexadecimal digits", QUEUE_ID_DIGITS);
			return;
		}
		snprintf(r.id_text, sizeof(r.id_text), "%016" PRIx64, r.id);
	}
	TAILQ_INIT(&query);
	if (parse_query(&r, evhttp_uri_get_query(uri), &query))
		r.route->handle(&r);
	evhttp_clear_headers(&query);
}

/* ---- listeners ---- */

static bool is_http_listener(const struct cfg_section *sec)
{
	const struct cfg_value *proto = cfg_section_get(sec, CFG_LISTENER_PROTOCOL);

	return proto != NULL && proto->num == CFG_PROTO_HTTP;
}

static int bind_address(struct admin *ad, const char *listener_id, const struct cfg_value *b,
			char *err, size_t errlen)
{
	char ip[IPADDR_STRLEN], name[IPADDR_STRLEN + 10];
	struct sockaddr_storage ss;
	int ss_len = (int)sizeof(ss);
	unsigned flags = LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC;
	struct evconnlistener *lev;

	ipaddr_format(&b->addr, ip, sizeof(ip));
	snprintf(name, sizeof(name), b->addr.family == AF_INET6 ? "[%s]:%d" : "%s:%d", ip,
		 (int)b->num);
	if (evutil_parse_sockaddr_port(name, (struct sockaddr *)&ss, &ss_len) != 0) {
		snprintf(err, errlen, "cannot listen on %s: not an address", name);
		return -1;
	}
	/* As for SMTP: "[::]:8080" and "0.0.0.0:8080" can both be listed. */
	if (b->addr.family == AF_INET6)
		flags |= LEV_OPT_BIND_IPV6ONLY;
	lev = evconnlistener_new_bind(ad->srv->base, NULL, NULL, flags, ADMIN_BACKLOG,
				      (struct sockaddr *)&ss, ss_len);
	if (lev == NULL) {
		snprintf(err, errlen, "cannot listen on %s: %s", name,
			 evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
		return -1;
	}
	if (evhttp_bind_listener(ad->http, lev) == NULL) {
		evconnlistener_free(lev);
		snprintf(err, errlen, "cannot listen on %s: out of memory", name);
		return -1;
	}
	log_info("management API listening on %s (listener \"%s\")", name, listener_id);
	return 0;
}

static struct evhttp *http_new(struct admin *ad)
{
	struct evhttp *http = evhttp_new(ad->srv->base);

	if (http == NULL)
		return NULL;
	evhttp_set_timeout(http, ADMIN_TIMEOUT_S);
	evhttp_set_max_headers_size(http, ADMIN_MAX_HEADERS_SIZE);
	evhttp_set_max_body_size(http, 0);
	/* Every method reaches request_cb, which answers 405 with Allow. */
	evhttp_set_allowed_methods(http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
				   EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS |
				   EVHTTP_REQ_TRACE | EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH);
	evhttp_set_gencb(http, request_cb, ad);
	return http;
}

struct admin *admin_start(struct server *srv, char *err, size_t errlen)
{
	const struct config *cfg = srv->cfg;
	size_t n_sections = config_section_count(cfg, CFG_GROUP_LISTENER);
	struct admin *ad = calloc(1, sizeof(*ad));

	if (ad == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	ad->srv = srv;
	for (size_t i = 0; i < n_sections; i++) {
		const struct cfg_section *sec = config_section_at(cfg, CFG_GROUP_LISTENER, i);
		const struct cfg_value *bind = cfg_section_get(sec, CFG_LISTENER_BIND);

		if (!is_http_listener(sec) || bind == NULL)
			continue;
		if (ad->http == NULL && (ad->http = http_new(ad)) == NULL) {
			snprintf(err, errlen, "out of memory");
			admin_free(ad);
			return NULL;
		}
		for (size_t k = 0; k < bind->n_items; k++) {
			if (bind_address(ad, sec->id, &bind->items[k], err, errlen) != 0) {
				admin_free(ad);
				return NULL;
			}
		}
	}
	if (ad->http != NULL && auth_list(cfg) == NULL)
		log_warn("management API: management.auth.lookup is not set: every request is refused");
	return ad;
}

void admin_free(struct admin *ad)
{
	if (ad == NULL)
		return;
	if (ad->http != NULL)
		evhttp_free(ad->http);
	free(ad);
}
