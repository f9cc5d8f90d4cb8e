/*
 * strbuf.h - growable byte buffer with an explicit length.
 *
 * Always NUL-terminated for convenience, but the length is the truth: the
 * contents may hold NUL bytes. An allocation failure sets a sticky flag
 * (strbuf_failed) and further appends do nothing, so call sites stay flat
 * and check once at the end.
 */
#ifndef TERN_UTIL_STRBUF_H
#define TERN_UTIL_STRBUF_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

struct strbuf {
	char *data;
	size_t len;
	size_t cap;
	bool failed;
};

void strbuf_init(struct strbuf *sb);
void strbuf_free(struct strbuf *sb);
void strbuf_reset(struct strbuf *sb);
void strbuf_append(struct strbuf *sb, const char *s, size_t len);
void strbuf_puts(struct strbuf *sb, const char *s);
void strbuf_putc(struct strbuf *sb, char c);
void strbuf_printf(struct strbuf *sb, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void strbuf_vprintf(struct strbuf *sb, const char *fmt, va_list ap)
	__attribute__((format(printf, 2, 0)));
/* Append s as a TOML/JSON basic string, quotes included, escaping
 * quotes, backslashes and control characters. */
void strbuf_put_quoted(struct strbuf *sb, const char *s, size_t len);
/* Contents as a C string; "" when empty or failed. */
const char *strbuf_str(const struct strbuf *sb);
static inline bool strbuf_failed(const struct strbuf *sb) { return sb->failed; }

#endif
