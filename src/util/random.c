/*
 * random.c - xoshiro256** seeded from getrandom(2); see random.h.
 * Only the event loop's thread draws numbers.
 */
#include "util/random.h"

#include <stdbool.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

static uint64_t state[4];
static bool seeded;

static uint64_t rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

static void seed(void)
{
	if (getrandom(state, sizeof(state), 0) != (ssize_t)sizeof(state)) {
		/* No entropy source: a seed that still differs per process. */
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		state[0] = (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 32);
		state[1] = (uint64_t)ts.tv_sec;
		state[2] = 0x9e3779b97f4a7c15ull;
		state[3] = 0xbf58476d1ce4e5b9ull;
	}
	if ((state[0] | state[1] | state[2] | state[3]) == 0)
		state[0] = 1;
	seeded = true;
}

uint64_t random_u64(void)
{
	uint64_t result, t;

	if (!seeded)
		seed();
	result = rotl(state[1] * 5, 7) * 9;
	t = state[1] << 17;
	state[2] ^= state[0];
	state[3] ^= state[1];
	state[1] ^= state[2];
	state[0] ^= state[3];
	state[2] ^= t;
	state[3] = rotl(state[3], 45);
	return result;
}

size_t random_below(size_t n)
{
	/* Rejection keeps it uniform: drop the top partial range. */
	uint64_t limit = UINT64_MAX - UINT64_MAX % n;
	uint64_t x;

	do
		x = random_u64();
	while (x >= limit);
	return (size_t)(x % n);
}
