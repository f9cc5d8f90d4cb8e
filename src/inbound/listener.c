/*
 * listener.c - the SMTP and LMTP listening sockets and accepting on them;
 * inbound_start, inbound_stop and inbound_free (see inbound.h).
 *
 * Every bind address of every [server.listener."<id>"] with protocol smtp
 * or lmtp gets its own socket (SO_REUSEADDR; IPv6 sockets are IPv6-only,
 * so "[::]:25" and "0.0.0.0:25" can both be listed), with a long backlog
 * so bursts of connections wait in the kernel rather than being refused.
 * Accepted sockets are nonblocking, close-on-exec, with TCP_NODELAY (our
 * replies are already batched per read; Nagle would only delay them).
 * Beyond server.max-connections a client gets 421 and is closed without
 * a session. http listeners belong to the management API, not here.
 *
 * TLS: a listener's certificate is its own tls.certificate, else
 * server.tls.certificate (a listener that sets its own to "no value" has
 * none). Each certificate used is loaded once, at start, into a server
 * context every listener using it shares; one that does not load stops
 * the start, as does an implicit TLS listener without a certificate.
 */
#include "inbound/inbound.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/listener.h>

#include "config/settings.h"
#include "inbound/session.h"
#include "server/server.h"
#include "tls/server.h"
#include "util/log.h"

/* listen(2) backlog; the kernel caps it at net.core.somaxconn. */
#define LISTEN_BACKLOG 4096
/* After accept fails for want of descriptors, pause accepting this long. */
#define ACCEPT_RETRY_MS 1000

struct inbound_listener {
	struct inbound *in;
	struct listener_info info;
	struct evconnlistener *lev;
	char name[IPADDR_STRLEN + 10]; /* "[addr]:port", for logs */
};

static void accept_cb(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *peer,
		      int peerlen, void *arg)
{
	static const char busy[] = "421 4.3.2 Too many connections\r\n";
	struct inbound_listener *l = arg;
	struct inbound *in = l->in;
	struct sockaddr_storage local;
	socklen_t local_len = sizeof(local);
	int one = 1;

	(void)lev;
	(void)peerlen;
	if (in->stopping || in->n_sessions >= in->max_sessions) {
		/* Best effort: the socket buffer is empty, so this fits. */
		if (send(fd, busy, sizeof(busy) - 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
			log_debug("inbound: refusing a connection: %s", strerror(errno));
		close(fd);
		return;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (getsockname(fd, (struct sockaddr *)&local, &local_len) != 0)
		local.ss_family = AF_UNSPEC;
	if (session_start(in, &l->info, fd, peer, (struct sockaddr *)&local) != 0)
		log_error("inbound %s: out of memory for a new session", l->name);
}

static void accept_retry_cb(evutil_socket_t fd, short what, void *arg)
{
	struct inbound *in = arg;

	(void)fd;
	(void)what;
	for (size_t i = 0; i < in->n_listeners; i++)
		if (in->listeners[i].lev != NULL)
			evconnlistener_enable(in->listeners[i].lev);
}

/* accept failed (EMFILE, ENFILE, ENOBUFS...): the socket stays readable,
 * so stop accepting for a moment instead of spinning on it. */
static void accept_error_cb(struct evconnlistener *lev, void *arg)
{
	struct inbound_listener *l = arg;
	struct timeval tv = { ACCEPT_RETRY_MS / 1000, (ACCEPT_RETRY_MS % 1000) * 1000 };

	log_error("inbound %s: accept: %s; pausing for %d ms", l->name,
		  evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()), ACCEPT_RETRY_MS);
	for (size_t i = 0; i < l->in->n_listeners; i++)
		if (l->in->listeners[i].lev != NULL)
			evconnlistener_disable(l->in->listeners[i].lev);
	(void)lev;
	evtimer_add(l->in->accept_retry, &tv);
}

/* A bound, listening, nonblocking socket, or -1 with err. */
static int open_socket(const struct cfg_value *addr, const char *name, char *err, size_t errlen)
{
	struct sockaddr_storage ss;
	socklen_t len;
	int fd, one = 1;

	memset(&ss, 0, sizeof(ss));
	if (addr->addr.family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&ss;

		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)addr->num);
		memcpy(&sin->sin_addr, addr->addr.bytes, 4);
		len = sizeof(*sin);
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;

		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)addr->num);
		memcpy(&sin6->sin6_addr, addr->addr.bytes, 16);
		len = sizeof(*sin6);
	}
	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(err, errlen, "cannot listen on %s: socket: %s", name, strerror(errno));
		return -1;
	}
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
	    (ss.ss_family == AF_INET6 &&
	     setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) != 0) ||
	    bind(fd, (struct sockaddr *)&ss, len) != 0 || listen(fd, LISTEN_BACKLOG) != 0) {
		snprintf(err, errlen, "cannot listen on %s: %s", name, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

static bool is_mail_listener(const struct cfg_section *sec)
{
	const struct cfg_value *proto = cfg_section_get(sec, CFG_LISTENER_PROTOCOL);

	return proto == NULL || proto->num != CFG_PROTO_HTTP;
}

/* The listener's certificate id, NULL for none. false with err when it
 * has implicit TLS and no certificate. */
static bool listener_cert_id(const struct config *cfg, const struct cfg_section *sec,
			     const char **id, char *err, size_t errlen)
{
	const struct cfg_value *own = cfg_section_get(sec, CFG_LISTENER_TLS_CERTIFICATE);
	const struct cfg_value *global = config_get(cfg, CFG_SERVER_TLS_CERTIFICATE);
	const struct cfg_value *implicit = cfg_section_get(sec, CFG_LISTENER_TLS_IMPLICIT);
	const struct cfg_value *v = own != NULL ? own : global;

	*id = v != NULL && !v->none ? v->str : NULL;
	if (*id == NULL && implicit != NULL && implicit->num != 0) {
		snprintf(err, errlen,
			 "listener \"%s\": tls.implicit is set but the listener has no certificate "
			 "(server.listener.\"%s\".tls.certificate or server.tls.certificate)",
			 sec->id, sec->id);
		return false;
	}
	return true;
}

/* The shared context of certificate id, loaded on first use. */
static struct tls_server *cert_context(struct inbound *in, const struct config *cfg,
				       const char *id, char *err, size_t errlen)
{
	struct tls_server *ts;

	for (size_t i = 0; i < in->n_certs; i++)
		if (strcmp(tls_server_id(in->certs[i]), id) == 0)
			return in->certs[i];
	ts = tls_server_new(cfg, id, err, errlen);
	if (ts != NULL)
		in->certs[in->n_certs++] = ts;
	return ts;
}

bool inbound_check(const struct config *cfg, char *err, size_t errlen)
{
	for (size_t i = 0; i < config_section_count(cfg, CFG_GROUP_CERTIFICATE); i++) {
		const struct cfg_section *sec = config_section_at(cfg, CFG_GROUP_CERTIFICATE, i);
		struct tls_server *ts = tls_server_new(cfg, sec->id, err, errlen);

		if (ts == NULL)
			return false;
		tls_server_free(ts);
	}
	for (size_t i = 0; i < config_section_count(cfg, CFG_GROUP_LISTENER); i++) {
		const struct cfg_section *sec = config_section_at(cfg, CFG_GROUP_LISTENER, i);
		const char *id;

		if (is_mail_listener(sec) && !listener_cert_id(cfg, sec, &id, err, errlen))
			return false;
	}
	return true;
}

struct inbound *inbound_start(struct server *srv, char *err, size_t errlen)
{
	const struct config *cfg = srv->cfg;
	const struct cfg_value *greeting = config_get(cfg, CFG_SERVER_GREETING);
	size_t n_sections = config_section_count(cfg, CFG_GROUP_LISTENER), n = 0;
	struct inbound *in = calloc(1, sizeof(*in));

	if (in == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	in->srv = srv;
	in->submit = queue_submit;
	in->forget = queue_forget_submitter;
	in->max_sessions = (size_t)config_get(cfg, CFG_SERVER_MAX_CONNECTIONS)->num;
	/* Session ids: unique across restarts too, for following a message
	 * from a client's log into ours. */
	in->next_session_id = (uint64_t)time(NULL) << 16;
	in->accept_retry = evtimer_new(srv->base, accept_retry_cb, in);
	for (size_t i = 0; i < n_sections; i++) {
		const struct cfg_section *sec = config_section_at(cfg, CFG_GROUP_LISTENER, i);
		const struct cfg_value *bind = cfg_section_get(sec, CFG_LISTENER_BIND);

		if (is_mail_listener(sec) && bind != NULL)
			n += bind->n_items;
	}
	in->listeners = calloc(n ? n : 1, sizeof(*in->listeners));
	in->certs = calloc(config_section_count(cfg, CFG_GROUP_CERTIFICATE) + 1, sizeof(*in->certs));
	if (in->accept_retry == NULL || in->listeners == NULL || in->certs == NULL) {
		snprintf(err, errlen, "out of memory");
		inbound_free(in);
		return NULL;
	}
	for (size_t i = 0; i < n_sections; i++) {
		const struct cfg_section *sec = config_section_at(cfg, CFG_GROUP_LISTENER, i);
		const struct cfg_value *bind = cfg_section_get(sec, CFG_LISTENER_BIND);
		const struct cfg_value *g = cfg_section_get(sec, CFG_LISTENER_GREETING);
		const struct cfg_value *proto = cfg_section_get(sec, CFG_LISTENER_PROTOCOL);
		const struct cfg_value *implicit = cfg_section_get(sec, CFG_LISTENER_TLS_IMPLICIT);
		struct tls_server *tls = NULL;
		const char *cert_id;

		if (!is_mail_listener(sec) || bind == NULL)
			continue;
		if (!listener_cert_id(cfg, sec, &cert_id, err, errlen) ||
		    (cert_id != NULL && (tls = cert_context(in, cfg, cert_id, err, errlen)) == NULL)) {
			inbound_free(in);
			return NULL;
		}
		for (size_t k = 0; k < bind->n_items; k++) {
			struct inbound_listener *l = &in->listeners[in->n_listeners];
			const struct cfg_value *b = &bind->items[k];
			char ip[IPADDR_STRLEN];
			int fd;

			l->in = in;
			l->info.id = sec->id;
			l->info.lmtp = proto != NULL && proto->num == CFG_PROTO_LMTP;
			l->info.greeting = g != NULL && !g->none ? g->str : greeting->str;
			l->info.tls = tls;
			l->info.implicit_tls = tls != NULL && implicit != NULL && implicit->num != 0;
			ipaddr_format(&b->addr, ip, sizeof(ip));
			snprintf(l->name, sizeof(l->name), b->addr.family == AF_INET6 ? "[%s]:%d" : "%s:%d",
				 ip, (int)b->num);
			fd = open_socket(b, l->name, err, errlen);
			if (fd < 0) {
				inbound_free(in);
				return NULL;
			}
			l->lev = evconnlistener_new(srv->base, accept_cb, l,
						    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 0, fd);
			if (l->lev == NULL) {
				close(fd);
				snprintf(err, errlen, "cannot listen on %s: out of memory", l->name);
				inbound_free(in);
				return NULL;
			}
			evconnlistener_set_error_cb(l->lev, accept_error_cb);
			in->n_listeners++;
			log_info("inbound: listening on %s (%s%s, listener %s%s%s)", l->name,
				 l->info.lmtp ? "lmtp" : "smtp", l->info.implicit_tls ? " over TLS" : "",
				 sec->id, tls != NULL ? ", certificate " : "",
				 tls != NULL ? cert_id : "");
		}
	}
	return in;
}

void inbound_stop(struct inbound *in)
{
	struct session *s, *next;

	if (in->stopping)
		return;
	in->stopping = true;
	for (size_t i = 0; i < in->n_listeners; i++) {
		if (in->listeners[i].lev != NULL) {
			evconnlistener_free(in->listeners[i].lev);
			in->listeners[i].lev = NULL;
		}
	}
	if (in->accept_retry != NULL)
		evtimer_del(in->accept_retry);
	for (s = in->sessions; s != NULL; s = next) {
		next = session_next(s);
		session_stop(s);
	}
}

void inbound_free(struct inbound *in)
{
	if (in == NULL)
		return;
	inbound_stop(in);
	while (in->sessions != NULL)
		session_free(in->sessions);
	if (in->accept_retry != NULL)
		event_free(in->accept_retry);
	free(in->listeners);
	for (size_t i = 0; i < in->n_certs; i++)
		tls_server_free(in->certs[i]);
	free(in->certs);
	free(in);
}
