/*
 * spool-bench.c - how fast the spool makes mail durable.
 *
 * First it measures what one fdatasync costs on the disk under the spool
 * (append 4 KiB, fdatasync; repeated), since that bounds everything else.
 * Then, for each body size, one event loop submits N messages keeping K
 * outstanding, as a busy server would (a new submit as each one is
 * acknowledged), and prints messages/s, MB/s, group commits and messages
 * per commit, and the CPU time used. Last, the same load the way Postfix
 * stores mail, for comparison: K threads each writing one file per message
 * and fsyncing it.
 *
 * Build by hand:
 *   cc -std=c11 -D_GNU_SOURCE -O2 -Isrc -o build/spool-bench bench/spool-bench.c \
 *      src/spool/[a-z]*.c src/queue/message.c src/util/[a-z]*.c -levent -lpthread
 * Run: build/spool-bench [-d parent-dir] [-n messages] [-k outstanding] [-r rounds]
 *
 * On a shared VM the cost of a flush swings widely from second to second:
 * -r repeats everything, the spool and the baseline taking turns, so that
 * they see the same weather.
 *
 * It writes only below a fresh directory (mkdtemp in parent-dir, /tmp by
 * default), and removes it.
 */
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "spool/spool.h"
#include "util/log.h"

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu_s(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
	       (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* ---- what one fdatasync costs ---- */

static void measure_fdatasync(const char *dir)
{
	enum { ROUNDS = 200 };
	static double lat[ROUNDS];
	char path[1024], buf[4096];
	double sum = 0;
	int fd;

	snprintf(path, sizeof(path), "%s/fdatasync-probe", dir);
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		perror(path);
		exit(1);
	}
	memset(buf, 'x', sizeof(buf));
	for (int i = 0; i < ROUNDS; i++) {
		double t = now_s();

		if (write(fd, buf, sizeof(buf)) != (ssize_t)sizeof(buf) || fdatasync(fd) != 0) {
			perror("fdatasync probe");
			exit(1);
		}
		lat[i] = now_s() - t;
		sum += lat[i];
	}
	close(fd);
	unlink(path);
	qsort(lat, ROUNDS, sizeof(lat[0]), cmp_double);
	printf("fdatasync (4 KiB append): mean %.2f ms, median %.2f ms, p99 %.2f ms "
	       "=> at most %.0f syncs/s\n",
	       sum / ROUNDS * 1e3, lat[ROUNDS / 2] * 1e3, lat[ROUNDS * 99 / 100] * 1e3,
	       ROUNDS / sum);
}

/* ---- the spool under load ---- */

struct run {
	struct spool *s;
	struct event_base *base;
	char *body;
	size_t size;
	int n, k;
	int submitted, acked, outstanding;
	struct message **msgs;
	double t_end;
};

static void submit_more(struct run *r);

static void acked(void *arg, int err)
{
	struct run *r = arg;

	if (err != 0) {
		fprintf(stderr, "spool: %s\n", strerror(err));
		exit(1);
	}
	r->acked++;
	r->outstanding--;
	if (r->acked == r->n) {
		r->t_end = now_s();
		event_base_loopbreak(r->base);
		return;
	}
	submit_more(r);
}

static void submit_more(struct run *r)
{
	while (r->outstanding < r->k && r->submitted < r->n) {
		struct message *m = message_new("sender@example.org", 18);
		struct iovec iov = { r->body, r->size };
		int err;

		if (m == NULL || message_add_rcpt(m, "alice@example.net", 17) == NULL ||
		    message_add_rcpt(m, "bob@example.com", 15) == NULL) {
			fprintf(stderr, "out of memory\n");
			exit(1);
		}
		m->arrival_ms = 1;
		r->msgs[r->submitted] = m;
		err = spool_submit(r->s, m, &iov, 1, acked, r);
		if (err != 0) {
			fprintf(stderr, "spool_submit: %s\n", strerror(err));
			exit(1);
		}
		r->submitted++;
		r->outstanding++;
	}
}

static void bench_spool(const char *parent, size_t size, int n, int k)
{
	struct run r = { .size = size, .n = n, .k = k };
	struct spool_stats st;
	char dir[1024], err[256];
	double t0, c0, secs, cpu;

	snprintf(dir, sizeof(dir), "%s/spool-%zu", parent, size);
	r.base = event_base_new();
	r.s = spool_open(r.base, dir, err, sizeof(err));
	r.body = malloc(size);
	r.msgs = calloc((size_t)n, sizeof(*r.msgs));
	if (r.base == NULL || r.s == NULL || r.body == NULL || r.msgs == NULL) {
		fprintf(stderr, "setup: %s\n", r.s == NULL ? err : "out of memory");
		exit(1);
	}
	for (size_t i = 0; i < size; i++)
		r.body[i] = (i % 78 == 76) ? '\r' : (i % 78 == 77) ? '\n' : (char)('a' + i % 26);
	t0 = now_s();
	c0 = cpu_s();
	submit_more(&r);
	event_base_dispatch(r.base);
	secs = r.t_end - t0;
	cpu = cpu_s() - c0;
	spool_get_stats(r.s, &st);
	printf("spool %6zu B x %d, %d outstanding: %8.0f msgs/s %7.1f MB/s | %" PRIu64
	       " syncs, %.0f syncs/s, %.1f msgs/sync | %.2f s wall, %.2f s CPU\n",
	       size, n, k, n / secs, (double)n * (double)size / secs / 1e6, st.syncs,
	       (double)st.syncs / secs, (double)n / (double)(st.syncs ? st.syncs : 1), secs, cpu);
	for (int i = 0; i < n; i++) {
		spool_release(r.s, r.msgs[i]);
		message_free(r.msgs[i]);
	}
	spool_close(r.s);
	event_base_free(r.base);
	free(r.msgs);
	free(r.body);
}

/* ---- the same load, one fsynced file per message ---- */

struct file_job {
	const char *dir;
	const char *body;
	size_t size;
	int first, count;
};

static void *file_worker(void *arg)
{
	struct file_job *j = arg;
	char path[1100];

	for (int i = j->first; i < j->first + j->count; i++) {
		int fd;

		snprintf(path, sizeof(path), "%s/%08d", j->dir, i);
		fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (fd < 0 || write(fd, j->body, j->size) != (ssize_t)j->size || fsync(fd) != 0) {
			perror(path);
			exit(1);
		}
		close(fd);
	}
	return NULL;
}

static void bench_files(const char *parent, size_t size, int n, int k)
{
	pthread_t *th = calloc((size_t)k, sizeof(*th));
	struct file_job *jobs = calloc((size_t)k, sizeof(*jobs));
	char dir[1024], *body = malloc(size);
	double t0, secs;

	snprintf(dir, sizeof(dir), "%s/files-%zu", parent, size);
	if (th == NULL || jobs == NULL || body == NULL || mkdir(dir, 0700) != 0) {
		perror("file baseline setup");
		exit(1);
	}
	memset(body, 'x', size);
	t0 = now_s();
	for (int i = 0; i < k; i++) {
		jobs[i] = (struct file_job){ dir, body, size, i * (n / k), n / k };
		pthread_create(&th[i], NULL, file_worker, &jobs[i]);
	}
	for (int i = 0; i < k; i++)
		pthread_join(th[i], NULL);
	secs = now_s() - t0;
	printf("files %6zu B x %d, %d threads:     %8.0f msgs/s %7.1f MB/s "
	       "(one file + fsync per message)\n",
	       size, (n / k) * k, k, (n / k) * k / secs,
	       (double)((n / k) * k) * (double)size / secs / 1e6);
	free(th);
	free(jobs);
	free(body);
}

int main(int argc, char **argv)
{
	const char *parent = "/tmp";
	char tmp[512];
	int n = 0, k = 64, rounds = 1, opt;

	while ((opt = getopt(argc, argv, "d:n:k:r:")) != -1) {
		switch (opt) {
		case 'd':
			parent = optarg;
			break;
		case 'n':
			n = atoi(optarg);
			break;
		case 'k':
			k = atoi(optarg);
			break;
		case 'r':
			rounds = atoi(optarg);
			break;
		default:
			fprintf(stderr, "usage: %s [-d parent-dir] [-n messages] [-k outstanding] [-r rounds]\n",
				argv[0]);
			return 2;
		}
	}
	if (k < 1 || n < 0 || rounds < 1) {
		fprintf(stderr, "-k and -r must be positive, -n not negative\n");
		return 2;
	}
	log_set_level(LOG_WARN);
	snprintf(tmp, sizeof(tmp), "%s/tern-spool-bench-XXXXXX", parent);
	if (mkdtemp(tmp) == NULL) {
		perror(tmp);
		return 1;
	}
	for (int i = 0; i < rounds; i++) {
		char sub[600];

		snprintf(sub, sizeof(sub), "%s/%d", tmp, i);
		if (mkdir(sub, 0700) != 0) {
			perror(sub);
			return 1;
		}
		measure_fdatasync(sub);
		bench_spool(sub, 2048, n != 0 ? n : 40000, k);
		bench_files(sub, 2048, n != 0 ? n : 8000, k);
		bench_spool(sub, 65536, n != 0 ? n : 8000, k);
		bench_files(sub, 65536, n != 0 ? n : 4000, k);
		nftw(sub, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	}
	nftw(tmp, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	return 0;
}
