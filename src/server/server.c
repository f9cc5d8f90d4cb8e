/*
 * server.c - `tern serve`: load the configuration, open the spool, recover
 * what it holds, open the listeners and run the one event loop.
 *
 * Start-up order matters: the spool is recovered into the queue before
 * any listener opens, so a restarted server knows every message it owes
 * before it accepts new ones. Shutdown (SIGTERM, SIGINT) is the reverse:
 * listeners close first, deliveries in flight get a grace period to finish
 * (their outcomes are recorded), the rest stay queued in the spool for the
 * next start, and the spool is synced and closed last.
 */
#include "server/server.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "admin/admin.h"
#include "config/settings.h"
#include "dns/resolver.h"
#include "inbound/inbound.h"
#include "outbound/connector.h"
#include "queue/queue.h"
#include "spool/spool.h"
#include "sts/sts.h"
#include "util/log.h"

/* How long in-flight deliveries may take to finish after SIGTERM. */
#define SHUTDOWN_GRACE_MS 10000
#define SHUTDOWN_POLL_MS 50

struct server_run {
	struct server srv;
	struct admin *admin; /* the management API (http listeners) */
	struct event *sig_term, *sig_int, *sig_hup, *stop_poll;
	int64_t stop_deadline_polls;
};

static void stop_poll_cb(evutil_socket_t fd, short what, void *arg)
{
	struct server_run *run = arg;
	struct timeval tv = { 0, SHUTDOWN_POLL_MS * 1000 };

	(void)fd;
	(void)what;
	if (connector_busy(run->srv.connector) == 0 || --run->stop_deadline_polls <= 0) {
		if (connector_busy(run->srv.connector) != 0)
			log_warn("shutdown: %zu deliveries still in flight after %d s; they stay queued",
				 connector_busy(run->srv.connector), SHUTDOWN_GRACE_MS / 1000);
		event_base_loopexit(run->srv.base, NULL);
		return;
	}
	evtimer_add(run->stop_poll, &tv);
}

static void signal_cb(evutil_socket_t sig, short what, void *arg)
{
	struct server_run *run = arg;
	struct timeval now = { 0, 0 };

	(void)what;
	if (run->srv.stopping) {
		log_warn("second %s: stopping now", sig == SIGINT ? "SIGINT" : "SIGTERM");
		event_base_loopexit(run->srv.base, NULL);
		return;
	}
	log_info("%s: stopping: no new connections, finishing deliveries in flight",
		 sig == SIGINT ? "SIGINT" : "SIGTERM");
	run->srv.stopping = true;
	if (run->srv.inbound != NULL)
		inbound_stop(run->srv.inbound);
	queue_stop(run->srv.queue);
	run->stop_deadline_polls = SHUTDOWN_GRACE_MS / SHUTDOWN_POLL_MS;
	evtimer_add(run->stop_poll, &now);
}

static void sighup_cb(evutil_socket_t sig, short what, void *arg)
{
	struct server_run *run = arg;

	(void)sig;
	(void)what;
	if (!run->srv.stopping)
		server_reload(&run->srv);
}

static void adopt_cb(void *arg, struct message *msg)
{
	struct server *srv = arg;

	queue_adopt(srv->queue, msg);
}

/* MTA-STS with its cache in <queue.path>/mta-sts/: the spool is the one
 * directory tern is sure to own and keep across restarts. */
static struct sts *server_sts_new(struct server *srv, const char *spool_path, char *err,
				  size_t errlen)
{
	char dir[4096];

	if ((size_t)snprintf(dir, sizeof(dir), "%s/mta-sts", spool_path) >= sizeof(dir)) {
		snprintf(err, errlen, "queue.path is too long");
		return NULL;
	}
	return sts_new(srv->base, srv->resolver, dir, false, err, errlen);
}

static int server_start(struct server_run *run, const char *config_path)
{
	struct server *srv = &run->srv;
	struct diags diags;
	char err[512];
	const struct cfg_value *path;

	diags_init(&diags, config_path);
	srv->cfg = config_load_file(config_path, 0, &diags);
	diags_print(&diags, stderr);
	diags_free(&diags);
	if (srv->cfg == NULL)
		return -1;
	srv->config_path = config_path;
	srv->boot_cfg = srv->cfg;
	srv->hostname = config_get(srv->cfg, CFG_SERVER_HOSTNAME)->str;
	if (config_section_count(srv->cfg, CFG_GROUP_LISTENER) == 0) {
		log_error("%s: no [server.listener.\"<id>\"] is configured: nothing to serve",
			  config_path);
		return -1;
	}
	if (evthread_use_pthreads() != 0 || (srv->base = event_base_new()) == NULL) {
		log_error("cannot create the event loop");
		return -1;
	}
	path = config_get(srv->cfg, CFG_QUEUE_PATH);
	srv->spool = spool_open(srv->base, path->str, err, sizeof(err));
	if (srv->spool == NULL) {
		log_error("spool %s: %s", path->str, err);
		return -1;
	}
	srv->resolver = resolver_new(srv->base, srv->cfg, err, sizeof(err));
	if (srv->resolver == NULL) {
		log_error("%s", err);
		return -1;
	}
	if ((srv->sts = server_sts_new(srv, path->str, err, sizeof(err))) == NULL) {
		log_error("%s", err);
		return -1;
	}
	srv->queue = queue_new(srv);
	srv->connector = connector_new(srv);
	if (srv->queue == NULL || srv->connector == NULL) {
		log_error("out of memory");
		return -1;
	}
	if (spool_recover(srv->spool, adopt_cb, srv, err, sizeof(err)) != 0) {
		log_error("spool %s: recovery failed: %s", path->str, err);
		return -1;
	}
	srv->inbound = inbound_start(srv, err, sizeof(err));
	if (srv->inbound == NULL) {
		log_error("%s", err);
		return -1;
	}
	run->admin = admin_start(srv, err, sizeof(err));
	if (run->admin == NULL) {
		log_error("%s", err);
		return -1;
	}
	run->sig_term = evsignal_new(srv->base, SIGTERM, signal_cb, run);
	run->sig_int = evsignal_new(srv->base, SIGINT, signal_cb, run);
	run->sig_hup = evsignal_new(srv->base, SIGHUP, sighup_cb, run);
	run->stop_poll = evtimer_new(srv->base, stop_poll_cb, run);
	if (run->sig_term == NULL || run->sig_int == NULL || run->sig_hup == NULL ||
	    run->stop_poll == NULL || evsignal_add(run->sig_term, NULL) != 0 ||
	    evsignal_add(run->sig_int, NULL) != 0 || evsignal_add(run->sig_hup, NULL) != 0) {
		log_error("cannot install signal handlers");
		return -1;
	}
	queue_start(srv->queue);
	log_info("tern serving as %s, spool %s", srv->hostname, path->str);
	return 0;
}

static void server_teardown(struct server_run *run)
{
	struct server *srv = &run->srv;

	if (run->sig_term != NULL)
		event_free(run->sig_term);
	if (run->sig_int != NULL)
		event_free(run->sig_int);
	if (run->sig_hup != NULL)
		event_free(run->sig_hup);
	if (run->stop_poll != NULL)
		event_free(run->stop_poll);
	admin_free(run->admin);
	/* Sessions first (they forget their pending submits), then connections;
	 * closing the spool may still complete submits, so the queue goes after. */
	if (srv->inbound != NULL)
		inbound_free(srv->inbound);
	if (srv->connector != NULL)
		connector_stop(srv->connector);
	if (srv->spool != NULL)
		spool_close(srv->spool);
	if (srv->queue != NULL)
		queue_free(srv->queue);
	if (srv->connector != NULL)
		connector_free(srv->connector);
	sts_free(srv->sts); /* after the connector: its planners held lookups */
	resolver_free(srv->resolver);
	server_reload_free(srv);
	if (srv->cfg != srv->boot_cfg)
		config_free((struct config *)srv->cfg);
	if (srv->base != NULL)
		event_base_free(srv->base);
	config_free((struct config *)srv->boot_cfg);
}

int server_run(const char *config_path)
{
	struct server_run run;
	int rc = 1;

	memset(&run, 0, sizeof(run));
	signal(SIGPIPE, SIG_IGN);
	if (server_start(&run, config_path) == 0) {
		event_base_dispatch(run.srv.base);
		log_info("stopped");
		rc = 0;
	}
	server_teardown(&run);
	return rc;
}
