/*
 * timefmt.h - wall-clock times (milliseconds since the epoch, as
 * util/clock.h keeps them) to and from text: RFC 3339 in UTC for output,
 * RFC 3339 with any offset or plain seconds since the epoch for input.
 * Pure arithmetic on the proleptic Gregorian calendar: no time zone
 * database, no locale, nothing that depends on the process's TZ.
 */
#ifndef TERN_UTIL_TIMEFMT_H
#define TERN_UTIL_TIMEFMT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* "2026-12-04T11:22:07Z" and its NUL; years past 9999 do not occur. */
#define TIMEFMT_RFC3339_SIZE 21

/* ms as "YYYY-MM-DDTHH:MM:SSZ" (UTC, whole seconds: the milliseconds are
 * dropped) into buf (TIMEFMT_RFC3339_SIZE bytes); returns buf. Times
 * outside years 0000-9999 are clamped to those years' ends. */
const char *timefmt_rfc3339(int64_t ms, char *buf);

/* s as an RFC 3339 date-time ("2026-12-04T11:22:07Z",
 * "2026-12-04t12:22:07.250+01:00"; 'T', 't' or a space between date and
 * time) or as a whole number of seconds since the epoch ("1796382127"),
 * into *ms. False for anything else, out-of-range fields included, and
 * for times outside years 0000-9999 in UTC. */
bool timefmt_parse(const char *s, int64_t *ms);

#endif
