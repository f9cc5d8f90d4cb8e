/*
 * metrics.c - the /metrics page: the queue's, the connector's and the
 * spool's numbers in the Prometheus text exposition format 0.0.4.
 *
 * Every family has its # HELP and # TYPE lines, even when it has no
 * sample. Counters count since the server started (Prometheus handles the
 * reset at a restart). The per-destination gauges come from
 * connector_visit; the connector may hold two pools for one relay for a
 * while after a reload, so samples are merged by (kind, destination):
 * one series never appears twice. Label values are escaped as the format
 * asks (backslash, double quote, newline) and, not being UTF-8 when a
 * recipient domain holds stray 8-bit bytes, have those bytes replaced by
 * '?' so the page always parses.
 *
 * It reads and renders only; the page is built whole in memory, bounded
 * by the number of destinations with a connection or a waiting delivery.
 */
#include "admin/internal.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "outbound/connector.h"
#include "queue/queue.h"
#include "server/server.h"
#include "spool/spool.h"
#include "util/text.h"

struct destination {
	const char *kind; /* "remote" or "domain" */
	const char *name;
	size_t connections, waiting;
};

struct destinations {
	struct destination *items;
	size_t n, cap;
	bool failed;
};

static void collect_destination(void *arg, const char *kind, const char *name, size_t connections,
				size_t waiting)
{
	struct destinations *ds = arg;

	if (ds->failed)
		return;
	if (ds->n == ds->cap) {
		size_t cap = ds->cap ? ds->cap * 2 : 64;
		struct destination *items = realloc(ds->items, cap * sizeof(*items));

		if (items == NULL) {
			ds->failed = true;
			return;
		}
		ds->items = items;
		ds->cap = cap;
	}
	ds->items[ds->n++] = (struct destination){ kind, name, connections, waiting };
}

static int destination_cmp(const void *a, const void *b)
{
	const struct destination *x = a, *y = b;
	int c = strcmp(x->kind, y->kind);

	return c != 0 ? c : strcmp(x->name, y->name);
}

/* Sort, then fold the samples of one (kind, name) into its first. */
static void merge_destinations(struct destinations *ds)
{
	size_t out = 0;

	if (ds->n == 0)
		return;
	qsort(ds->items, ds->n, sizeof(*ds->items), destination_cmp);
	for (size_t i = 1; i < ds->n; i++) {
		if (destination_cmp(&ds->items[out], &ds->items[i]) == 0) {
			ds->items[out].connections += ds->items[i].connections;
			ds->items[out].waiting += ds->items[i].waiting;
		} else {
			ds->items[++out] = ds->items[i];
		}
	}
	ds->n = out + 1;
}

static int put_family(struct evbuffer *out, const char *name, const char *type, const char *help)
{
	return evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static int put_single(struct evbuffer *out, const char *name, const char *type, const char *help,
		      uint64_t value)
{
	if (put_family(out, name, type, help) < 0)
		return -1;
	return evbuffer_add_printf(out, "%s %" PRIu64 "\n", name, value);
}

/* A label value between its quotes. */
static int put_label_value(struct evbuffer *out, const char *s)
{
	size_t len = strlen(s);
	bool utf8 = text_utf8_valid(s, len);

	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		int rc;

		if (c == '\\' || c == '"')
			rc = evbuffer_add_printf(out, "\\%c", c);
		else if (c == '\n')
			rc = evbuffer_add(out, "\\n", 2);
		else if (c >= 0x80 && !utf8)
			rc = evbuffer_add(out, "?", 1);
		else
			rc = evbuffer_add(out, &s[i], 1);
		if (rc < 0)
			return -1;
	}
	return 0;
}

static int put_per_destination(struct evbuffer *out, const struct destinations *ds,
			       const char *name, const char *help, bool waiting)
{
	if (put_family(out, name, "gauge", help) < 0)
		return -1;
	for (size_t i = 0; i < ds->n; i++) {
		const struct destination *d = &ds->items[i];

		if (evbuffer_add_printf(out, "%s{kind=\"", name) < 0 ||
		    put_label_value(out, d->kind) < 0 ||
		    evbuffer_add_printf(out, "\",destination=\"") < 0 ||
		    put_label_value(out, d->name) < 0 ||
		    evbuffer_add_printf(out, "\"} %zu\n", waiting ? d->waiting : d->connections) < 0)
			return -1;
	}
	return 0;
}

bool admin_metrics_render(struct server *srv, struct evbuffer *out)
{
	struct queue_stats qs;
	struct spool_stats ss;
	struct destinations ds = { 0 };
	bool ok;

	queue_get_stats(srv->queue, &qs);
	spool_get_stats(srv->spool, &ss);
	connector_visit(srv->connector, collect_destination, &ds);
	merge_destinations(&ds);
	ok = !ds.failed &&
	     put_single(out, "tern_queue_messages", "gauge",
			"Messages in the queue (a recipient still pending).", qs.messages) >= 0 &&
	     put_single(out, "tern_queue_in_flight_messages", "gauge",
			"Queued messages with a delivery out right now.", qs.in_flight) >= 0 &&
	     put_single(out, "tern_queue_held_recipients", "gauge",
			"Pending recipients on hold.", qs.held_rcpts) >= 0 &&
	     put_single(out, "tern_recipients_delivered_total", "counter",
			"Recipients delivered since the server started.", qs.delivered) >= 0 &&
	     put_single(out, "tern_recipients_deferred_total", "counter",
			"Delivery attempts of a recipient that failed temporarily since the "
			"server started.", qs.deferred) >= 0 &&
	     put_single(out, "tern_recipients_bounced_total", "counter",
			"Recipients failed (permanently, by expiry or cancelled) since the "
			"server started.", qs.bounced) >= 0 &&
	     put_single(out, "tern_dsn_sent_total", "counter",
			"Delivery status notifications queued since the server started.",
			qs.dsn_sent) >= 0 &&
	     put_per_destination(out, &ds, "tern_connections",
				 "Open outbound connections per destination.", false) >= 0 &&
	     put_per_destination(out, &ds, "tern_deliveries_waiting",
				 "Deliveries waiting for a connection per destination.", true) >= 0 &&
	     put_single(out, "tern_spool_bytes", "gauge", "Bytes of the spool's journal on disk.",
			ss.bytes) >= 0;
	free(ds.items);
	return ok;
}
