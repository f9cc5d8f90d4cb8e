/*
 * arena.h - bump allocator that frees everything it handed out in one call.
 *
 * A parsed configuration or TOML document lives as long as its owner and
 * is freed whole, so its many small nodes come from one arena instead of
 * being tracked one by one. Allocation failure returns NULL; callers turn
 * it into an error, never an abort.
 */
#ifndef TERN_UTIL_ARENA_H
#define TERN_UTIL_ARENA_H

#include <stddef.h>

struct arena_block;

struct arena {
	struct arena_block *head;
	size_t bytes; /* total handed out, for limits and statistics */
};

void arena_init(struct arena *a);
void arena_free(struct arena *a);

/* Zeroed memory aligned for any type, or NULL when out of memory. */
void *arena_alloc(struct arena *a, size_t size);

/* Copy len bytes and append a NUL (the copy may itself contain NULs). */
char *arena_strndup(struct arena *a, const char *s, size_t len);
char *arena_strdup(struct arena *a, const char *s);

/* Grow an arena array: returns a copy of old (n elements) with room for
 * cap elements of size elem, or NULL. The old memory stays in the arena. */
void *arena_grow(struct arena *a, void *old, size_t n, size_t cap, size_t elem);

#endif
