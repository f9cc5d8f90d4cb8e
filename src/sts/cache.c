/*
 * cache.c - MTA-STS policies known, in memory and on disk; see internal.h.
 *
 * In memory: a hash table by domain, at most CACHE_MAX entries (when full,
 * the entry that expires first makes room). On disk: one file per domain
 * in the cache directory (<queue.path>/mta-sts/ for the server), named
 * after the domain, holding
 *
 *     tern-mta-sts 1
 *     domain: example.org
 *     id: 20240101T000000
 *     fetched: 1704067200
 *
 *     <the policy file as served>
 *
 * so the policy is parsed by the same code whether it came from the
 * network or the disk. A file is written whole to a temporary name, made
 * durable with fsync, renamed over the old one, and the directory synced:
 * a crash leaves the old file or the new, never half of one. The writes
 * happen in a thread of the cache's own, started with the first write
 * (disk syncs never run on the event loop), which takes jobs from a
 * queue; sts_cache_free waits for it to finish them. Every file is read
 * back at start (start-up, before the loop runs); one that does not
 * parse is ignored with a warning. Expired entries are kept: they say
 * which id was seen last, and cost nothing.
 */
#include "sts/internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/fileio.h"
#include "util/log.h"
#include "util/text.h"

#define CACHE_BUCKETS 256
#define CACHE_MAX 10000
#define CACHE_FILE_MAX (STS_BODY_MAX + 1024)
#define CACHE_MAGIC "tern-mta-sts 1\n"

struct node {
	struct sts_cache_entry e;
	struct node *next;
};

struct write_job {
	struct write_job *next;
	char domain[STS_DOMAIN_MAX];
	char *data;
	size_t len;
};

struct sts_cache {
	char *dir;                        /* NULL: memory only */
	bool read_only;
	struct node *buckets[CACHE_BUCKETS];
	size_t n;
	/* the writer thread and its queue */
	pthread_mutex_t mu;
	pthread_cond_t cv, idle_cv;
	struct write_job *head, *tail;
	bool writing, stop, started;
	pthread_t thread;
};

/* A domain that can name a file: letters, digits, '-', '_', '.', no
 * leading dot (so never "." or ".."). */
static bool domain_file_ok(const char *d)
{
	size_t len = strlen(d);

	if (len == 0 || len >= STS_DOMAIN_MAX || d[0] == '.')
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = d[i];

		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
		      c == '.'))
			return false;
	}
	return true;
}

static struct node **bucket(struct sts_cache *c, const char *domain)
{
	return &c->buckets[text_hash(domain, strlen(domain)) % CACHE_BUCKETS];
}

const struct sts_cache_entry *sts_cache_get(const struct sts_cache *c, const char *domain)
{
	const struct node *n = c->buckets[text_hash(domain, strlen(domain)) % CACHE_BUCKETS];

	for (; n != NULL; n = n->next)
		if (strcmp(n->e.domain, domain) == 0)
			return &n->e;
	return NULL;
}

/* Make room: drop the entry that expires first. */
static void evict_one(struct sts_cache *c)
{
	struct node **victim = NULL;

	for (size_t b = 0; b < CACHE_BUCKETS; b++)
		for (struct node **pp = &c->buckets[b]; *pp != NULL; pp = &(*pp)->next)
			if (victim == NULL || (*pp)->e.expires < (*victim)->e.expires)
				victim = pp;
	if (victim != NULL) {
		struct node *n = *victim;

		*victim = n->next;
		free(n);
		c->n--;
	}
}

static void remember(struct sts_cache *c, const struct sts_cache_entry *e)
{
	struct node **b = bucket(c, e->domain);
	struct node *n;

	for (n = *b; n != NULL; n = n->next) {
		if (strcmp(n->e.domain, e->domain) == 0) {
			n->e = *e;
			return;
		}
	}
	if (c->n >= CACHE_MAX)
		evict_one(c);
	if ((n = malloc(sizeof(*n))) == NULL)
		return; /* a policy not remembered is fetched again */
	n->e = *e;
	n->next = *b;
	*b = n;
	c->n++;
}

/* ---- the file format ---- */

/* The value of header line "name: value" at *pos, into out; false when
 * the line is not that. */
static bool header_line(const char *text, size_t len, size_t *pos, const char *name, char *out,
			size_t outlen)
{
	size_t nlen = strlen(name), i = *pos, end = i, vlen;

	while (end < len && text[end] != '\n')
		end++;
	if (end == len || end - i < nlen + 2 || memcmp(text + i, name, nlen) != 0 ||
	    text[i + nlen] != ':' || text[i + nlen + 1] != ' ')
		return false;
	vlen = end - (i + nlen + 2);
	/* A NUL would cut the C string short of what was checked. */
	if (vlen == 0 || vlen >= outlen || memchr(text + i + nlen + 2, '\0', vlen) != NULL)
		return false;
	memcpy(out, text + i + nlen + 2, vlen);
	out[vlen] = '\0';
	*pos = end + 1;
	return true;
}

bool sts_cache_file_parse(const char *text, size_t len, struct sts_cache_entry *out, char *why,
			  size_t whylen)
{
	size_t pos = strlen(CACHE_MAGIC);
	char fetched[24], policy_why[200];
	char *end;

	memset(out, 0, sizeof(*out));
	if (len < pos || memcmp(text, CACHE_MAGIC, pos) != 0) {
		snprintf(why, whylen, "not a tern MTA-STS cache file");
		return false;
	}
	if (!header_line(text, len, &pos, "domain", out->domain, sizeof(out->domain)) ||
	    !domain_file_ok(out->domain) ||
	    !header_line(text, len, &pos, "id", out->id, sizeof(out->id)) ||
	    !header_line(text, len, &pos, "fetched", fetched, sizeof(fetched)) ||
	    pos >= len || text[pos] != '\n') {
		snprintf(why, whylen, "a header line is missing or malformed");
		return false;
	}
	pos++;
	for (const char *p = out->id; *p != '\0'; p++) {
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9'))) {
			snprintf(why, whylen, "the id is not letters and digits");
			return false;
		}
	}
	errno = 0;
	out->fetched = strtoll(fetched, &end, 10);
	if (errno != 0 || *end != '\0' || fetched[0] == '-' || out->fetched > INT64_MAX / 2) {
		snprintf(why, whylen, "the fetch time is not a number");
		return false;
	}
	if (!sts_policy_parse(text + pos, len - pos, &out->policy, policy_why, sizeof(policy_why))) {
		snprintf(why, whylen, "the policy is invalid: %s", policy_why);
		return false;
	}
	out->expires = out->fetched + out->policy.max_age;
	return true;
}

/* ---- the writer thread ---- */

static void write_file(const char *dir, const struct write_job *job)
{
	char path[4096], tmp[4096];
	size_t off = 0;
	int fd, dfd;

	snprintf(path, sizeof(path), "%s/%s", dir, job->domain);
	snprintf(tmp, sizeof(tmp), "%s/.tmp-%s", dir, job->domain);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		log_warn("MTA-STS cache: cannot write %s: %s", tmp, strerror(errno));
		return;
	}
	while (off < job->len) {
		ssize_t w = write(fd, job->data + off, job->len - off);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			log_warn("MTA-STS cache: cannot write %s: %s", tmp, strerror(errno));
			close(fd);
			unlink(tmp);
			return;
		}
		off += (size_t)w;
	}
	if (fsync(fd) != 0 || close(fd) != 0) {
		log_warn("MTA-STS cache: cannot sync %s: %s", tmp, strerror(errno));
		unlink(tmp);
		return;
	}
	if (rename(tmp, path) != 0) {
		log_warn("MTA-STS cache: cannot rename %s to %s: %s", tmp, path, strerror(errno));
		unlink(tmp);
		return;
	}
	if ((dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) >= 0) {
		if (fsync(dfd) != 0)
			log_warn("MTA-STS cache: cannot sync %s: %s", dir, strerror(errno));
		close(dfd);
	}
}

static void *writer_main(void *arg)
{
	struct sts_cache *c = arg;

	pthread_mutex_lock(&c->mu);
	for (;;) {
		struct write_job *job;

		while (c->head == NULL && !c->stop)
			pthread_cond_wait(&c->cv, &c->mu);
		if (c->head == NULL)
			break;
		job = c->head;
		c->head = job->next;
		if (c->head == NULL)
			c->tail = NULL;
		c->writing = true;
		pthread_mutex_unlock(&c->mu);
		write_file(c->dir, job);
		free(job->data);
		free(job);
		pthread_mutex_lock(&c->mu);
		c->writing = false;
		pthread_cond_broadcast(&c->idle_cv);
	}
	pthread_mutex_unlock(&c->mu);
	return NULL;
}

static void queue_write(struct sts_cache *c, struct write_job *job)
{
	pthread_mutex_lock(&c->mu);
	if (!c->started) {
		if (pthread_create(&c->thread, NULL, writer_main, c) != 0) {
			pthread_mutex_unlock(&c->mu);
			log_warn("MTA-STS cache: cannot start the writer thread; %s is cached in memory only",
				 job->domain);
			free(job->data);
			free(job);
			return;
		}
		c->started = true;
	}
	if (c->tail != NULL)
		c->tail->next = job;
	else
		c->head = job;
	c->tail = job;
	pthread_cond_signal(&c->cv);
	pthread_mutex_unlock(&c->mu);
}

void sts_cache_put(struct sts_cache *c, const char *domain, const char *id,
		   const struct sts_policy *p, const char *body, size_t len, int64_t now)
{
	struct sts_cache_entry e;
	struct write_job *job;
	int head;

	memset(&e, 0, sizeof(e));
	if (!domain_file_ok(domain))
		return;
	snprintf(e.domain, sizeof(e.domain), "%s", domain);
	snprintf(e.id, sizeof(e.id), "%s", id);
	e.policy = *p;
	e.fetched = now;
	e.expires = now + p->max_age;
	remember(c, &e);
	if (c->dir == NULL || c->read_only)
		return;
	job = calloc(1, sizeof(*job));
	if (job == NULL || (job->data = malloc(len + 512)) == NULL) {
		free(job);
		return;
	}
	snprintf(job->domain, sizeof(job->domain), "%s", domain);
	head = snprintf(job->data, 512, "%sdomain: %s\nid: %s\nfetched: %" PRId64 "\n\n", CACHE_MAGIC,
			domain, id, now);
	memcpy(job->data + head, body, len);
	job->len = (size_t)head + len;
	queue_write(c, job);
}

void sts_cache_flush(struct sts_cache *c)
{
	pthread_mutex_lock(&c->mu);
	while (c->started && (c->head != NULL || c->writing))
		pthread_cond_wait(&c->idle_cv, &c->mu);
	pthread_mutex_unlock(&c->mu);
}

/* ---- start and end ---- */

static void load_dir(struct sts_cache *c)
{
	DIR *d = opendir(c->dir);
	struct dirent *de;

	if (d == NULL) {
		if (errno != ENOENT)
			log_warn("MTA-STS cache: cannot read %s: %s", c->dir, strerror(errno));
		return;
	}
	while ((de = readdir(d)) != NULL) {
		char path[4096], why[256];
		struct sts_cache_entry e;
		char *data;
		size_t len;
		int rc;

		if (de->d_name[0] == '.')
			continue; /* ".", "..", and a write a crash cut short */
		snprintf(path, sizeof(path), "%s/%s", c->dir, de->d_name);
		if ((rc = file_read_all(path, CACHE_FILE_MAX, &data, &len)) != 0) {
			log_warn("MTA-STS cache: %s ignored: %s", path, strerror(rc));
			continue;
		}
		if (!sts_cache_file_parse(data, len, &e, why, sizeof(why)))
			log_warn("MTA-STS cache: %s ignored: %s", path, why);
		else if (strcmp(e.domain, de->d_name) != 0)
			log_warn("MTA-STS cache: %s ignored: it holds the policy of %s", path, e.domain);
		else
			remember(c, &e);
		free(data);
	}
	closedir(d);
}

struct sts_cache *sts_cache_new(const char *dir, bool read_only)
{
	struct sts_cache *c = calloc(1, sizeof(*c));

	if (c == NULL)
		return NULL;
	c->read_only = read_only;
	pthread_mutex_init(&c->mu, NULL);
	pthread_cond_init(&c->cv, NULL);
	pthread_cond_init(&c->idle_cv, NULL);
	if (dir == NULL)
		return c;
	if ((c->dir = strdup(dir)) == NULL) {
		sts_cache_free(c);
		return NULL;
	}
	if (!read_only && mkdir(dir, 0700) != 0 && errno != EEXIST)
		log_warn("MTA-STS cache: cannot create %s: %s; policies are kept in memory only", dir,
			 strerror(errno));
	load_dir(c);
	return c;
}

void sts_cache_free(struct sts_cache *c)
{
	if (c == NULL)
		return;
	pthread_mutex_lock(&c->mu);
	c->stop = true;
	pthread_cond_signal(&c->cv);
	pthread_mutex_unlock(&c->mu);
	if (c->started)
		pthread_join(c->thread, NULL);
	for (size_t b = 0; b < CACHE_BUCKETS; b++) {
		while (c->buckets[b] != NULL) {
			struct node *n = c->buckets[b];

			c->buckets[b] = n->next;
			free(n);
		}
	}
	pthread_mutex_destroy(&c->mu);
	pthread_cond_destroy(&c->cv);
	pthread_cond_destroy(&c->idle_cv);
	free(c->dir);
	free(c);
}
