/*
 * random.h - uniform random choices that are not secrets: shuffling MX
 * hosts of equal preference, picking a source address. Seeded once from
 * the kernel (getrandom); not for keys or tokens.
 */
#ifndef TERN_UTIL_RANDOM_H
#define TERN_UTIL_RANDOM_H

#include <stddef.h>
#include <stdint.h>

uint64_t random_u64(void);
/* Uniform in [0, n); n must be > 0. */
size_t random_below(size_t n);

#endif
