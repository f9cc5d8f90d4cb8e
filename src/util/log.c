/*
 * log.c - see log.h.
 */
#include "util/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static enum log_level log_min = LOG_INFO;
static const char *const level_names[] = { "debug", "info", "warn", "error" };

void log_set_level(enum log_level min)
{
	log_min = min;
}

void log_msg(enum log_level level, const char *fmt, ...)
{
	char line[LOG_LINE_MAX + 64];
	struct timeval tv;
	struct tm tm;
	size_t n;
	int m;
	va_list ap;

	if (level < log_min)
		return;
	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
	n += (size_t)snprintf(line + n, sizeof(line) - n, ".%03ldZ %s ", (long)(tv.tv_usec / 1000),
			      level_names[level]);
	va_start(ap, fmt);
	m = vsnprintf(line + n, LOG_LINE_MAX, fmt, ap);
	va_end(ap);
	if (m < 0)
		m = 0;
	n += (size_t)m < LOG_LINE_MAX ? (size_t)m : LOG_LINE_MAX - 1;
	line[n++] = '\n';
	/* One write per line; a short write to stderr is not worth retrying. */
	if (write(STDERR_FILENO, line, n) < 0)
		return;
}

char *log_escape(const char *s, size_t len, char *out, size_t outlen)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;

	if (outlen == 0)
		return out;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
			if (o + 1 >= outlen)
				break;
			out[o++] = (char)c;
		} else {
			if (o + 4 >= outlen)
				break;
			out[o++] = '\\';
			out[o++] = 'x';
			out[o++] = hex[c >> 4];
			out[o++] = hex[c & 15];
		}
	}
	out[o] = '\0';
	return out;
}
