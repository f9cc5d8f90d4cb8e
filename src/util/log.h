/*
 * log.h - one line per event on stderr: "2026-11-26T10:00:00.123Z LEVEL message".
 *
 * Lines are written with a single write(2), so concurrent writers (the
 * spool's sync thread) never interleave within a line. Messages longer
 * than LOG_LINE_MAX are cut. Callers must escape peer-supplied text
 * (log_escape) before logging it.
 */
#ifndef TERN_UTIL_LOG_H
#define TERN_UTIL_LOG_H

#include <stddef.h>

#define LOG_LINE_MAX 4096

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

void log_set_level(enum log_level min);
void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)

/* Copy at most len bytes of s into out (size outlen, NUL-terminated),
 * replacing control characters, quotes and backslashes and bytes >= 0x7f
 * with \xHH escapes, so peer text cannot forge log lines. Returns out. */
char *log_escape(const char *s, size_t len, char *out, size_t outlen);

#endif
