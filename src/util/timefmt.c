/*
 * timefmt.c - see timefmt.h.
 */
#include "util/timefmt.h"

#include <string.h>

#define MS_PER_DAY 86400000LL
/* 0000-01-01T00:00:00Z and 9999-12-31T23:59:59.999Z */
#define MS_MIN (-62167219200000LL)
#define MS_MAX (253402300799999LL)

/* Days from 1970-01-01 to y-m-d (Howard Hinnant's days_from_civil). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
	y -= m <= 2;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	unsigned yoe = (unsigned)(y - era * 400);
	unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
	unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;

	return era * 146097 + (int64_t)doe - 719468;
}

/* The inverse: y-m-d of a day number. */
static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
	z += 719468;
	int64_t era = (z >= 0 ? z : z - 146096) / 146097;
	unsigned doe = (unsigned)(z - era * 146097);
	unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	unsigned mp = (5 * doy + 2) / 153;

	*d = doy - (153 * mp + 2) / 5 + 1;
	*m = mp < 10 ? mp + 3 : mp - 9;
	*y = (int64_t)yoe + era * 400 + (*m <= 2);
}

/* v as n decimal digits at p, zero-padded. */
static void put_digits(char *p, unsigned v, int n)
{
	while (n-- > 0) {
		p[n] = (char)('0' + v % 10);
		v /= 10;
	}
}

const char *timefmt_rfc3339(int64_t ms, char *buf)
{
	int64_t y, days, rem;
	unsigned m, d;

	if (ms < MS_MIN)
		ms = MS_MIN;
	if (ms > MS_MAX)
		ms = MS_MAX;
	days = ms / MS_PER_DAY;
	rem = ms % MS_PER_DAY;
	if (rem < 0) {
		rem += MS_PER_DAY;
		days--;
	}
	rem /= 1000;
	civil_from_days(days, &y, &m, &d);
	memcpy(buf, "0000-00-00T00:00:00Z", TIMEFMT_RFC3339_SIZE);
	put_digits(buf, (unsigned)y, 4);
	put_digits(buf + 5, m, 2);
	put_digits(buf + 8, d, 2);
	put_digits(buf + 11, (unsigned)(rem / 3600), 2);
	put_digits(buf + 14, (unsigned)(rem / 60 % 60), 2);
	put_digits(buf + 17, (unsigned)(rem % 60), 2);
	return buf;
}

/* n decimal digits at *p as a number, advancing *p; -1 if not digits. */
static int digits(const char **p, int n)
{
	int v = 0;

	for (int i = 0; i < n; i++) {
		if ((*p)[i] < '0' || (*p)[i] > '9')
			return -1;
		v = v * 10 + ((*p)[i] - '0');
	}
	*p += n;
	return v;
}

static bool expect(const char **p, char c)
{
	if (**p != c)
		return false;
	(*p)++;
	return true;
}

static bool leap_year(int y)
{
	return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static bool parse_epoch_seconds(const char *s, int64_t *ms)
{
	int64_t v = 0;

	if (*s == '\0')
		return false;
	for (; *s != '\0'; s++) {
		if (*s < '0' || *s > '9' || v > MS_MAX / 10000)
			return false;
		v = v * 10 + (*s - '0');
	}
	*ms = v * 1000;
	return true;
}

bool timefmt_parse(const char *s, int64_t *ms)
{
	static const unsigned char month_days[] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
	const char *p = s;
	int year, month, day, hour, min, sec, frac_ms = 0, offset_min = 0;

	if (parse_epoch_seconds(s, ms))
		return true;
	year = digits(&p, 4);
	if (year < 0 || !expect(&p, '-') || (month = digits(&p, 2)) < 1 || month > 12 ||
	    !expect(&p, '-') || (day = digits(&p, 2)) < 1 ||
	    day > month_days[month - 1] + (month == 2 && leap_year(year)))
		return false;
	if (*p != 'T' && *p != 't' && *p != ' ')
		return false;
	p++;
	/* Second 60 is a leap second: it counts as the next minute's first. */
	if ((hour = digits(&p, 2)) < 0 || hour > 23 || !expect(&p, ':') ||
	    (min = digits(&p, 2)) < 0 || min > 59 || !expect(&p, ':') ||
	    (sec = digits(&p, 2)) < 0 || sec > 60)
		return false;
	if (*p == '.') {
		int n = 0;

		for (p++; *p >= '0' && *p <= '9'; p++, n++)
			if (n < 3)
				frac_ms = frac_ms * 10 + (*p - '0');
		if (n == 0)
			return false;
		for (; n < 3; n++)
			frac_ms *= 10;
	}
	if (*p == 'Z' || *p == 'z') {
		p++;
	} else if (*p == '+' || *p == '-') {
		int sign = *p++ == '-' ? -1 : 1, oh, om;

		if ((oh = digits(&p, 2)) < 0 || oh > 23 || !expect(&p, ':') ||
		    (om = digits(&p, 2)) < 0 || om > 59)
			return false;
		offset_min = sign * (oh * 60 + om);
	} else {
		return false;
	}
	if (*p != '\0')
		return false;
	*ms = days_from_civil(year, (unsigned)month, (unsigned)day) * MS_PER_DAY +
	      ((int64_t)hour * 3600 + min * 60 + sec - (int64_t)offset_min * 60) * 1000 + frac_ms;
	/* An offset can carry year 0000 or 9999 over the edge. */
	return *ms >= MS_MIN && *ms <= MS_MAX;
}
