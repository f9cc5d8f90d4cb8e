/*
 * clock.h - wall-clock time in milliseconds since the epoch, the unit of
 * every time tern stores (arrival, next attempt) and schedules against.
 */
#ifndef TERN_UTIL_CLOCK_H
#define TERN_UTIL_CLOCK_H

#include <stddef.h>
#include <stdint.h>
#include <sys/time.h>

static inline int64_t clock_wall_ms(void)
{
	struct timeval tv;

	gettimeofday(&tv, NULL);
	return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

#endif
