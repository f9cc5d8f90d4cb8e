/*
 * reload.c - SIGHUP: load the configuration file again and switch to it.
 *
 * A file with errors is refused: every error is logged and the running
 * configuration stays. A good file becomes srv->cfg at once, so every rule
 * evaluated from then on (relaying, next hops, schedules, limits, source
 * addresses, timeouts, notices, the management API's credentials) uses it.
 *
 * What needs a restart: the listeners (they are open sockets made from the
 * configuration tern started with, which therefore lives until exit) and
 * their certificates (loaded at start; [certificate] changes need one too),
 * queue.path (the open spool) and resolver.* (the running resolver).
 * A reload that changes them says so in the log and leaves them.
 *
 * The configuration being replaced may still be in use: a relay's pool of
 * connections holds its [remote] section while deliveries drain from it.
 * It is kept on the retired list and freed once the connector no longer
 * uses it (checked every RETIRED_CHECK_MS while the list is not empty).
 */
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "config/settings.h"
#include "outbound/connector.h"
#include "server/server.h"
#include "util/log.h"

#define RETIRED_CHECK_MS 5000

struct retired_cfg {
	struct config *cfg;
	struct retired_cfg *next;
};

static bool same_value(const struct cfg_value *a, const struct cfg_value *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	if (a->none != b->none || a->num != b->num || a->n_items != b->n_items ||
	    (a->str == NULL) != (b->str == NULL) || (a->str != NULL && strcmp(a->str, b->str) != 0) ||
	    memcmp(&a->addr, &b->addr, sizeof(a->addr)) != 0)
		return false;
	for (size_t i = 0; i < a->n_items; i++)
		if (!same_value(&a->items[i], &b->items[i]))
			return false;
	return true;
}

static bool same_listeners(const struct config *a, const struct config *b)
{
	static const enum cfg_key keys[] = { CFG_LISTENER_BIND, CFG_LISTENER_PROTOCOL,
					     CFG_LISTENER_GREETING, CFG_LISTENER_TLS_IMPLICIT,
					     CFG_LISTENER_TLS_CERTIFICATE };
	size_t n = config_section_count(a, CFG_GROUP_LISTENER);

	if (n != config_section_count(b, CFG_GROUP_LISTENER))
		return false;
	for (size_t i = 0; i < n; i++) {
		const struct cfg_section *sa = config_section_at(a, CFG_GROUP_LISTENER, i);
		const struct cfg_section *sb = config_section_find(b, CFG_GROUP_LISTENER, sa->id,
								   strlen(sa->id));

		if (sb == NULL)
			return false;
		for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++)
			if (!same_value(cfg_section_get(sa, keys[k]), cfg_section_get(sb, keys[k])))
				return false;
	}
	return true;
}

/* The settings a reload cannot apply: name each one that changed. */
static void note_restart_only(const struct config *running, const struct config *next)
{
	static const enum cfg_key keys[] = { CFG_QUEUE_PATH, CFG_RESOLVER_TYPE, CFG_RESOLVER_CUSTOM,
					     CFG_RESOLVER_TIMEOUT, CFG_RESOLVER_ATTEMPTS,
					     CFG_SERVER_GREETING, CFG_SERVER_MAX_CONNECTIONS,
					     CFG_SERVER_TLS_CERTIFICATE };

	if (!same_listeners(running, next))
		log_warn("reload: the listeners changed; that takes effect at the next restart");
	for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++)
		if (!same_value(config_get(running, keys[k]), config_get(next, keys[k])))
			log_warn("reload: %s changed; that takes effect at the next restart",
				 cfg_key_defs[keys[k]].name);
}

/* Free the retired configurations nothing uses any more. */
static void retired_check_cb(evutil_socket_t fd, short what, void *arg)
{
	struct server *srv = arg;
	struct timeval tv = { RETIRED_CHECK_MS / 1000, 0 };

	(void)fd;
	(void)what;
	for (struct retired_cfg **pp = &srv->retired; *pp != NULL;) {
		struct retired_cfg *r = *pp;

		if (connector_uses_config(srv->connector, r->cfg)) {
			pp = &r->next;
			continue;
		}
		*pp = r->next;
		config_free(r->cfg);
		free(r);
		log_info("reload: a replaced configuration is no longer in use; freed");
	}
	if (srv->retired != NULL)
		evtimer_add(srv->retired_timer, &tv);
}

void server_reload(struct server *srv)
{
	struct diags diags;
	struct config *next;
	struct config *old = (struct config *)srv->cfg;
	struct timeval tv = { RETIRED_CHECK_MS / 1000, 0 };

	log_info("SIGHUP: reloading %s", srv->config_path);
	diags_init(&diags, srv->config_path);
	next = config_load_file(srv->config_path, 0, &diags);
	diags_print(&diags, stderr);
	diags_free(&diags);
	if (next == NULL) {
		log_error("reload: %s has errors (above); the running configuration stays",
			  srv->config_path);
		return;
	}
	if (config_section_count(next, CFG_GROUP_LISTENER) == 0) {
		log_error("reload: %s has no listener; the running configuration stays",
			  srv->config_path);
		config_free(next);
		return;
	}
	if (srv->retired_timer == NULL &&
	    (srv->retired_timer = evtimer_new(srv->base, retired_check_cb, srv)) == NULL) {
		log_error("reload: out of memory; the running configuration stays");
		config_free(next);
		return;
	}
	note_restart_only(old, next);
	srv->cfg = next;
	srv->hostname = config_get(next, CFG_SERVER_HOSTNAME)->str;
	/* The configuration tern started with stays: the listeners use it. */
	if (old != srv->boot_cfg) {
		struct retired_cfg *r = malloc(sizeof(*r));

		if (r == NULL) {
			/* Kept until exit rather than freed under a user. */
			log_warn("reload: out of memory; the previous configuration is kept");
		} else {
			r->cfg = old;
			r->next = srv->retired;
			srv->retired = r;
			evtimer_add(srv->retired_timer, &tv);
		}
	}
	log_info("reload: %s is the running configuration", srv->config_path);
}

void server_reload_free(struct server *srv)
{
	while (srv->retired != NULL) {
		struct retired_cfg *r = srv->retired;

		srv->retired = r->next;
		config_free(r->cfg);
		free(r);
	}
	if (srv->retired_timer != NULL)
		event_free(srv->retired_timer);
	srv->retired_timer = NULL;
}
