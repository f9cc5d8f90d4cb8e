/*
 * text.h - small text helpers that know nothing about mail: hashing, edit
 * distance (for "did you mean" suggestions), UTF-8 validity and comparing
 * secrets.
 */
#ifndef TERN_UTIL_TEXT_H
#define TERN_UTIL_TEXT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* 64-bit FNV-1a: short keys, no tuning needed. */
static inline uint64_t text_hash(const char *s, size_t len)
{
	uint64_t h = 0xcbf29ce484222325ull;

	for (size_t i = 0; i < len; i++) {
		h ^= (unsigned char)s[i];
		h *= 0x100000001b3ull;
	}
	return h;
}

/* Longest input text_edit_distance measures; longer ones are "far". */
#define TEXT_EDIT_MAX 127

/* Levenshtein distance, or SIZE_MAX when either text is longer than
 * TEXT_EDIT_MAX bytes. */
size_t text_edit_distance(const char *a, size_t alen, const char *b, size_t blen);

/* Is s well-formed UTF-8 (RFC 3629: shortest forms only, no surrogates,
 * nothing past U+10FFFF)? */
bool text_utf8_valid(const char *s, size_t len);

/* Equal, in a time that depends on the lengths but not on where the
 * contents differ: for comparing secrets. */
bool text_equal_secret(const char *a, size_t alen, const char *b, size_t blen);

#endif
