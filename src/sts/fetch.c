/*
 * fetch.c - the HTTPS GET of an MTA-STS policy file (RFC 8461 §3.3), with
 * libcurl's multi interface driven by tern's one event loop.
 *
 * A fetch first resolves mta-sts.<domain> (A and AAAA at once) through
 * tern's resolver, then hands curl those addresses with CURLOPT_RESOLVE,
 * so curl never resolves anything itself while the URL, SNI and the
 * certificate check keep the real name. curl's sockets and timer are
 * libevent events (CURLMOPT_SOCKETFUNCTION, CURLMOPT_TIMERFUNCTION): no
 * thread, nothing blocks the loop.
 *
 * What a fetch insists on: HTTPS only, no redirect followed (a 3xx is a
 * failure), status 200, a Content-Type of text/plain (parameters such as
 * charset allowed), at most STS_BODY_MAX bytes, a certificate that chains
 * to a trusted root and carries the name, and the whole fetch (both
 * address lookups included) within the caller's timeout. Trust follows
 * OpenSSL's convention as the SMTP side does (tls/tls.h): libcurl does
 * not read SSL_CERT_FILE or SSL_CERT_DIR itself, so they are passed on as
 * CURLOPT_CAINFO and CURLOPT_CAPATH when set; that is how the tests make
 * tern trust their CA. Proxies from the environment are not used, and a
 * connection is never kept for reuse (fetches are rare; no idle sockets).
 */
#include "sts/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>
#include <event2/event.h>

#include "dns/rdata.h"
#include "dns/resolver.h"
#include "util/ipaddr.h"

#define FETCH_MAX_ADDRS 8   /* per family, handed to curl */

struct sts_fetcher {
	struct event_base *base;
	struct resolver *res;
	CURLM *multi;
	struct event *timer;          /* curl's one timeout */
	struct sts_fetch *fetches;    /* open ones, to cancel at the end */
};

struct addr_lookup {
	struct sts_fetch *fe;
	struct dns_query *q;
	enum dns_status status;
	char why[160];
};

struct sts_fetch {
	struct sts_fetcher *f;
	struct sts_fetch *next, **prevp;
	char host[STS_DOMAIN_MAX + 8];   /* mta-sts.<domain> */
	struct addr_lookup lookups[2];   /* A, AAAA */
	size_t open_lookups;
	char addrs[512];                 /* for CURLOPT_RESOLVE: "a,b,[c]" */
	CURL *easy;
	struct curl_slist *resolve;
	char *body;
	size_t len, cap;
	bool too_big;
	int64_t timeout_ms;
	struct event *deadline;
	char curl_err[CURL_ERROR_SIZE];
	sts_fetch_cb cb;
	void *arg;
};

static void fetch_free(struct sts_fetch *fe)
{
	for (int k = 0; k < 2; k++)
		resolver_cancel(fe->lookups[k].q);
	if (fe->easy != NULL) {
		curl_multi_remove_handle(fe->f->multi, fe->easy);
		curl_easy_cleanup(fe->easy);
	}
	curl_slist_free_all(fe->resolve);
	if (fe->deadline != NULL)
		event_free(fe->deadline);
	if (fe->prevp != NULL) {
		*fe->prevp = fe->next;
		if (fe->next != NULL)
			fe->next->prevp = fe->prevp;
	}
	free(fe->body);
	free(fe);
}

void sts_fetch_cancel(struct sts_fetch *fe)
{
	if (fe != NULL)
		fetch_free(fe);
}

static void fetch_done(struct sts_fetch *fe, bool ok, const char *why)
{
	sts_fetch_cb cb = fe->cb;
	void *arg = fe->arg;
	char text[STS_WHY_MAX];

	snprintf(text, sizeof(text), "%s", why);
	if (ok) {
		/* The body goes to the callback, then with the fetch. */
		cb(arg, true, fe->body != NULL ? fe->body : "", fe->len, "");
		fetch_free(fe);
		return;
	}
	fetch_free(fe);
	cb(arg, false, NULL, 0, text);
}

/* ---- curl on the loop ---- */

static void check_done(struct sts_fetcher *f);

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
	struct sts_fetcher *f = arg;
	int running;

	(void)fd;
	(void)what;
	curl_multi_socket_action(f->multi, CURL_SOCKET_TIMEOUT, 0, &running);
	check_done(f);
}

static void on_socket(evutil_socket_t fd, short what, void *arg)
{
	struct sts_fetcher *f = arg;
	int flags = ((what & EV_READ) ? CURL_CSELECT_IN : 0) | ((what & EV_WRITE) ? CURL_CSELECT_OUT : 0);
	int running;

	curl_multi_socket_action(f->multi, fd, flags, &running);
	check_done(f);
}

static int socket_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
	struct sts_fetcher *f = userp;
	struct event *ev = socketp;
	short kind = EV_PERSIST | ((what & CURL_POLL_IN) ? EV_READ : 0) |
		     ((what & CURL_POLL_OUT) ? EV_WRITE : 0);

	(void)easy;
	if (what == CURL_POLL_REMOVE) {
		if (ev != NULL) {
			event_free(ev);
			curl_multi_assign(f->multi, s, NULL);
		}
		return 0;
	}
	if (ev != NULL) {
		event_del(ev);
		event_assign(ev, f->base, s, kind, on_socket, f);
	} else {
		ev = event_new(f->base, s, kind, on_socket, f);
		if (ev == NULL)
			return -1; /* curl fails the transfer */
		curl_multi_assign(f->multi, s, ev);
	}
	event_add(ev, NULL);
	return 0;
}

static int timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
	struct sts_fetcher *f = userp;
	struct timeval tv = { timeout_ms / 1000, (timeout_ms % 1000) * 1000 };

	(void)multi;
	if (timeout_ms < 0)
		evtimer_del(f->timer);
	else
		evtimer_add(f->timer, &tv); /* 0: at once, from the loop (never inside curl) */
	return 0;
}

/* Is the Content-Type's media type text/plain (RFC 8461 §3.3)? */
static bool content_type_ok(const char *ct)
{
	size_t n = strlen("text/plain");

	if (ct == NULL || strncasecmp(ct, "text/plain", n) != 0)
		return false;
	return ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ' || ct[n] == '\t';
}

static void transfer_done(struct sts_fetch *fe, CURLcode rc)
{
	char why[STS_WHY_MAX];
	long status = 0;
	char *ct = NULL;

	if (rc != CURLE_OK) {
		if (fe->too_big)
			snprintf(why, sizeof(why), "https://%s/.well-known/mta-sts.txt: the policy is "
				 "larger than %d bytes", fe->host, STS_BODY_MAX);
		else
			snprintf(why, sizeof(why), "https://%s/.well-known/mta-sts.txt: %s", fe->host,
				 fe->curl_err[0] != '\0' ? fe->curl_err : curl_easy_strerror(rc));
		fetch_done(fe, false, why);
		return;
	}
	curl_easy_getinfo(fe->easy, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_getinfo(fe->easy, CURLINFO_CONTENT_TYPE, &ct);
	if (status >= 300 && status < 400) {
		snprintf(why, sizeof(why), "https://%s/.well-known/mta-sts.txt: HTTP %ld, a redirect "
			 "(not followed: RFC 8461 §3.3)", fe->host, status);
		fetch_done(fe, false, why);
	} else if (status != 200) {
		snprintf(why, sizeof(why), "https://%s/.well-known/mta-sts.txt: HTTP %ld", fe->host,
			 status);
		fetch_done(fe, false, why);
	} else if (!content_type_ok(ct)) {
		snprintf(why, sizeof(why), "https://%s/.well-known/mta-sts.txt: Content-Type %.80s, "
			 "not text/plain", fe->host, ct != NULL ? ct : "missing");
		fetch_done(fe, false, why);
	} else {
		fetch_done(fe, true, "");
	}
}

/* Every transfer curl has finished: its fetch ends. */
static void check_done(struct sts_fetcher *f)
{
	CURLMsg *msg;
	int left;

	while ((msg = curl_multi_info_read(f->multi, &left)) != NULL) {
		struct sts_fetch *fe = NULL;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&fe);
		if (fe != NULL)
			transfer_done(fe, msg->data.result);
	}
}

static size_t write_cb(char *data, size_t size, size_t nmemb, void *arg)
{
	struct sts_fetch *fe = arg;
	size_t n = size * nmemb;

	if (n > STS_BODY_MAX - fe->len) {
		fe->too_big = true;
		return 0; /* curl stops: CURLE_WRITE_ERROR */
	}
	if (fe->len + n + 1 > fe->cap) {
		size_t cap = fe->cap ? fe->cap : 1024;
		char *b;

		while (cap < fe->len + n + 1)
			cap *= 2;
		if (cap > STS_BODY_MAX + 1)
			cap = STS_BODY_MAX + 1;
		if ((b = realloc(fe->body, cap)) == NULL)
			return 0;
		fe->body = b;
		fe->cap = cap;
	}
	memcpy(fe->body + fe->len, data, n);
	fe->len += n;
	fe->body[fe->len] = '\0';
	return n;
}

/* The addresses are known: start the GET. */
static void start_transfer(struct sts_fetch *fe)
{
	char url[STS_DOMAIN_MAX + 64], entry[sizeof(fe->host) + sizeof(fe->addrs) + 8];
	const char *cafile = getenv("SSL_CERT_FILE"), *cadir = getenv("SSL_CERT_DIR");
	bool ok;

	snprintf(url, sizeof(url), "https://%s/.well-known/mta-sts.txt", fe->host);
	snprintf(entry, sizeof(entry), "%s:443:%s", fe->host, fe->addrs);
	fe->resolve = curl_slist_append(NULL, entry);
	fe->easy = curl_easy_init();
	if (fe->resolve == NULL || fe->easy == NULL) {
		fetch_done(fe, false, "out of memory");
		return;
	}
	ok = curl_easy_setopt(fe->easy, CURLOPT_URL, url) == CURLE_OK &&
	     curl_easy_setopt(fe->easy, CURLOPT_PROTOCOLS_STR, "https") == CURLE_OK &&
	     curl_easy_setopt(fe->easy, CURLOPT_FOLLOWLOCATION, 0L) == CURLE_OK &&
	     curl_easy_setopt(fe->easy, CURLOPT_RESOLVE, fe->resolve) == CURLE_OK &&
	     curl_easy_setopt(fe->easy, CURLOPT_PROXY, "") == CURLE_OK &&
	     curl_easy_setopt(fe->easy, CURLOPT_SSL_VERIFYPEER, 1L) == CURLE_OK &&
	     curl_easy_setopt(fe->easy, CURLOPT_SSL_VERIFYHOST, 2L) == CURLE_OK &&
	     curl_easy_setopt(fe->easy, CURLOPT_FORBID_REUSE, 1L) == CURLE_OK &&
	     curl_easy_setopt(fe->easy, CURLOPT_NOSIGNAL, 1L) == CURLE_OK &&
	     curl_easy_setopt(fe->easy, CURLOPT_USERAGENT, "tern (MTA-STS)") == CURLE_OK &&
	     curl_easy_setopt(fe->easy, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)STS_BODY_MAX) == CURLE_OK &&
	     curl_easy_setopt(fe->easy, CURLOPT_WRITEFUNCTION, write_cb) == CURLE_OK &&
	     curl_easy_setopt(fe->easy, CURLOPT_WRITEDATA, fe) == CURLE_OK &&
	     curl_easy_setopt(fe->easy, CURLOPT_ERRORBUFFER, fe->curl_err) == CURLE_OK &&
	     curl_easy_setopt(fe->easy, CURLOPT_PRIVATE, fe) == CURLE_OK &&
	     (cafile == NULL || cafile[0] == '\0' ||
	      curl_easy_setopt(fe->easy, CURLOPT_CAINFO, cafile) == CURLE_OK) &&
	     (cadir == NULL || cadir[0] == '\0' ||
	      curl_easy_setopt(fe->easy, CURLOPT_CAPATH, cadir) == CURLE_OK);
	if (!ok) {
		fetch_done(fe, false, "libcurl refused an option");
		return;
	}
	if (curl_multi_add_handle(fe->f->multi, fe->easy) != CURLM_OK) {
		curl_easy_cleanup(fe->easy);
		fe->easy = NULL;
		fetch_done(fe, false, "libcurl cannot start the transfer");
	}
}

static void address_cb(void *arg, const struct dns_answer *ans)
{
	struct addr_lookup *l = arg;
	struct sts_fetch *fe = l->fe;
	size_t used = strlen(fe->addrs);

	l->q = NULL;
	l->status = ans->status;
	snprintf(l->why, sizeof(l->why), "%s", ans->why);
	for (size_t i = 0; ans->status == DNS_OK && i < ans->n && i < FETCH_MAX_ADDRS; i++) {
		struct ipaddr ip;
		char text[IPADDR_STRLEN];
		int n;

		if (!dns_rdata_addr(ans->rdata[i], (size_t)ans->rdlen[i], ans->qtype, &ip))
			continue;
		ipaddr_format(&ip, text, sizeof(text));
		n = snprintf(fe->addrs + used, sizeof(fe->addrs) - used,
			     ip.family == AF_INET6 ? "%s[%s]" : "%s%s", used > 0 ? "," : "", text);
		if (n < 0 || (size_t)n >= sizeof(fe->addrs) - used) {
			fe->addrs[used] = '\0';
			break;
		}
		used += (size_t)n;
	}
	if (--fe->open_lookups > 0)
		return;
	if (fe->addrs[0] == '\0') {
		const struct addr_lookup *bad = fe->lookups[0].status == DNS_TEMPFAIL ? &fe->lookups[0]
									       : &fe->lookups[1];
		char why[STS_WHY_MAX];

		if (bad->status == DNS_TEMPFAIL)
			snprintf(why, sizeof(why), "address lookup for %s failed: %s", fe->host, bad->why);
		else
			snprintf(why, sizeof(why), "%s has no A or AAAA record", fe->host);
		fetch_done(fe, false, why);
		return;
	}
	start_transfer(fe);
}

static void deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	struct sts_fetch *fe = arg;
	char why[STS_WHY_MAX];

	(void)fd;
	(void)what;
	snprintf(why, sizeof(why), "fetching https://%s/.well-known/mta-sts.txt timed out after "
		 "%lld ms (queue.outbound.timeouts.mta-sts)", fe->host, (long long)fe->timeout_ms);
	fetch_done(fe, false, why);
}

struct sts_fetch *sts_fetch_start(struct sts_fetcher *f, const char *domain, int64_t timeout_ms,
				  sts_fetch_cb cb, void *arg)
{
	struct sts_fetch *fe = calloc(1, sizeof(*fe));
	struct timeval tv = { (time_t)(timeout_ms / 1000), (suseconds_t)((timeout_ms % 1000) * 1000) };

	if (fe == NULL)
		return NULL;
	fe->f = f;
	fe->cb = cb;
	fe->arg = arg;
	fe->timeout_ms = timeout_ms;
	snprintf(fe->host, sizeof(fe->host), "mta-sts.%s", domain);
	fe->next = f->fetches;
	if (f->fetches != NULL)
		f->fetches->prevp = &fe->next;
	fe->prevp = &f->fetches;
	f->fetches = fe;
	fe->deadline = evtimer_new(f->base, deadline_cb, fe);
	if (fe->deadline == NULL || evtimer_add(fe->deadline, &tv) != 0) {
		fetch_free(fe);
		return NULL;
	}
	for (int k = 0; k < 2; k++) {
		fe->lookups[k].fe = fe;
		fe->lookups[k].status = DNS_NODATA;
		fe->lookups[k].q = resolver_query(f->res, fe->host, k == 0 ? DNS_TYPE_A : DNS_TYPE_AAAA,
						  address_cb, &fe->lookups[k]);
		if (fe->lookups[k].q == NULL) {
			fetch_free(fe);
			return NULL;
		}
		fe->open_lookups++;
	}
	return fe;
}

struct sts_fetcher *sts_fetcher_new(struct event_base *base, struct resolver *res, char *err,
				    size_t errlen)
{
	struct sts_fetcher *f = calloc(1, sizeof(*f));

	if (f == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		snprintf(err, errlen, "MTA-STS: libcurl cannot start");
		free(f);
		return NULL;
	}
	f->base = base;
	f->res = res;
	f->multi = curl_multi_init();
	f->timer = evtimer_new(base, on_timer, f);
	if (f->multi == NULL || f->timer == NULL ||
	    curl_multi_setopt(f->multi, CURLMOPT_SOCKETFUNCTION, socket_cb) != CURLM_OK ||
	    curl_multi_setopt(f->multi, CURLMOPT_SOCKETDATA, f) != CURLM_OK ||
	    curl_multi_setopt(f->multi, CURLMOPT_TIMERFUNCTION, timer_cb) != CURLM_OK ||
	    curl_multi_setopt(f->multi, CURLMOPT_TIMERDATA, f) != CURLM_OK) {
		snprintf(err, errlen, "MTA-STS: libcurl cannot start (out of memory)");
		sts_fetcher_free(f);
		return NULL;
	}
	return f;
}

void sts_fetcher_free(struct sts_fetcher *f)
{
	if (f == NULL)
		return;
	while (f->fetches != NULL)
		fetch_free(f->fetches);
	if (f->multi != NULL)
		curl_multi_cleanup(f->multi);
	if (f->timer != NULL)
		event_free(f->timer);
	free(f);
	curl_global_cleanup();
}
