/*
 * policy.c - the MTA-STS TXT record and policy file parsers and the MX
 * pattern matcher; see sts.h.
 *
 * Both parsers read bytes from the network (and the policy file also
 * from the disk cache): every length is checked, nothing is read past
 * the end, the output is bounded (STS_ID_MAX, STS_MX_MAX, STS_MX_LEN).
 * The grammar is RFC 8461's ABNF (§3.1, §3.2). tern's choices where it
 * leaves room: a policy field other than mx given twice keeps its first
 * value; more than STS_MX_MAX mx patterns make the policy invalid (tern
 * would otherwise refuse MX hosts the domain allowed); an mx value must
 * be a host name (letters, digits, '-', '_'), optionally "*." first.
 */
#include "sts/sts.h"

#include <stdio.h>
#include <string.h>

#define STS_TXT_MAX 2048   /* one TXT record's text; longer ones are no STSv1 record */

static bool is_alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

static bool is_wsp(char c)
{
	return c == ' ' || c == '\t';
}

static char lower(char c)
{
	return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

const char *sts_mode_name(enum sts_mode m)
{
	switch (m) {
	case STS_MODE_ENFORCE: return "enforce";
	case STS_MODE_TESTING: return "testing";
	case STS_MODE_NONE: break;
	}
	return "none";
}

/* ---- the TXT record ---- */

/* Does text begin with sts-version and a separator ("v=STSv1" *WSP ";")? */
static bool txt_is_stsv1(const char *text, size_t len)
{
	size_t i = 7;

	if (len < 8 || memcmp(text, "v=STSv1", 7) != 0)
		return false;
	while (i < len && is_wsp(text[i]))
		i++;
	return i < len && text[i] == ';';
}

bool sts_txt_record_parse(const char *text, size_t len, char id[STS_ID_MAX + 1], char *why,
			  size_t whylen)
{
	size_t i = 7;
	bool have_id = false;

	if (!txt_is_stsv1(text, len)) {
		snprintf(why, whylen, "not an STSv1 record");
		return false;
	}
	/* 1*(sts-sep sts-field) [sts-sep] */
	for (;;) {
		size_t name, name_len, value, value_len;

		while (i < len && is_wsp(text[i]))
			i++;
		if (i == len)
			break;
		if (text[i] != ';') {
			snprintf(why, whylen, "a field is not separated by ';'");
			return false;
		}
		i++;
		while (i < len && is_wsp(text[i]))
			i++;
		if (i == len)
			break; /* the optional trailing separator */
		name = i;
		while (i < len && (is_alnum(text[i]) || text[i] == '_' || text[i] == '-' ||
				   text[i] == '.'))
			i++;
		name_len = i - name;
		if (name_len == 0 || name_len > 32 || !is_alnum(text[name]) || i == len ||
		    text[i] != '=') {
			snprintf(why, whylen, "a field that is not name=value");
			return false;
		}
		i++;
		value = i;
		while (i < len && text[i] > ' ' && text[i] < 0x7f && text[i] != '=' && text[i] != ';')
			i++;
		value_len = i - value;
		if (value_len == 0) {
			snprintf(why, whylen, "a field without a value");
			return false;
		}
		if (name_len == 2 && memcmp(text + name, "id", 2) == 0) {
			if (have_id) {
				snprintf(why, whylen, "two id fields");
				return false;
			}
			if (value_len > STS_ID_MAX) {
				snprintf(why, whylen, "id longer than %d characters", STS_ID_MAX);
				return false;
			}
			for (size_t k = 0; k < value_len; k++) {
				if (!is_alnum(text[value + k])) {
					snprintf(why, whylen, "id holds a character other than a letter or digit");
					return false;
				}
			}
			memcpy(id, text + value, value_len);
			id[value_len] = '\0';
			have_id = true;
		}
	}
	if (!have_id) {
		snprintf(why, whylen, "no id field");
		return false;
	}
	return true;
}

/* One record's character-strings joined into out; false when the rdata
 * is malformed or the text longer than outlen - 1. */
static bool txt_join(const uint8_t *rd, size_t len, char *out, size_t outlen, size_t *textlen)
{
	size_t i = 0, n = 0;

	while (i < len) {
		size_t part = rd[i++];

		if (part > len - i || n + part >= outlen)
			return false;
		memcpy(out + n, rd + i, part);
		n += part;
		i += part;
	}
	out[n] = '\0';
	*textlen = n;
	return true;
}

enum sts_txt_status sts_txt_parse(const uint8_t *const *rdata, const int *rdlen, size_t n,
				  char id[STS_ID_MAX + 1], char *why, size_t whylen)
{
	char text[STS_TXT_MAX];
	size_t found = 0, which = 0, textlen;

	for (size_t i = 0; i < n; i++) {
		if (rdlen[i] < 0 || !txt_join(rdata[i], (size_t)rdlen[i], text, sizeof(text), &textlen))
			continue;
		if (txt_is_stsv1(text, textlen)) {
			found++;
			which = i;
		}
	}
	if (found == 0) {
		snprintf(why, whylen, "no STSv1 TXT record");
		return STS_TXT_NONE;
	}
	if (found > 1) {
		snprintf(why, whylen, "%zu STSv1 TXT records (RFC 8461 §3.1: exactly one)", found);
		return STS_TXT_INVALID;
	}
	txt_join(rdata[which], (size_t)rdlen[which], text, sizeof(text), &textlen);
	if (!sts_txt_record_parse(text, textlen, id, why, whylen))
		return STS_TXT_INVALID;
	return STS_TXT_OK;
}

/* ---- the policy file ---- */

/* A host name pattern: ["*."] labels of letters, digits, '-', '_'. */
static bool mx_pattern_ok(const char *v, size_t len)
{
	size_t label = 0;

	if (len >= 2 && v[0] == '*' && v[1] == '.') {
		v += 2;
		len -= 2;
	}
	if (len == 0 || len >= STS_MX_LEN)
		return false;
	for (size_t i = 0; i < len; i++) {
		if (v[i] == '.') {
			if (label == 0)
				return false;
			label = 0;
		} else if (is_alnum(v[i]) || v[i] == '-' || v[i] == '_') {
			if (++label > 63)
				return false;
		} else {
			return false;
		}
	}
	return label > 0 || (len > 1 && v[len - 1] == '.'); /* a trailing dot is allowed */
}

static bool field_is(const char *name, size_t len, const char *want)
{
	return strlen(want) == len && memcmp(name, want, len) == 0;
}

static bool parse_max_age(const char *v, size_t len, int64_t *out)
{
	int64_t n = 0;

	if (len == 0 || len > 10)
		return false;
	for (size_t i = 0; i < len; i++) {
		if (v[i] < '0' || v[i] > '9')
			return false;
		n = n * 10 + (v[i] - '0');
	}
	if (n > STS_MAX_AGE_MAX)
		return false;
	*out = n;
	return true;
}

bool sts_policy_parse(const char *text, size_t len, struct sts_policy *out, char *why,
		      size_t whylen)
{
	bool have_version = false, have_mode = false, have_max_age = false;
	size_t i = 0, line_no = 0;

	memset(out, 0, sizeof(*out));
	if (len > STS_BODY_MAX) {
		snprintf(why, whylen, "the policy is larger than %d bytes", STS_BODY_MAX);
		return false;
	}
	while (i < len) {
		size_t start = i, end, name_len, v, vend;

		line_no++;
		while (i < len && text[i] != '\n')
			i++;
		end = i;
		if (i < len)
			i++; /* the LF */
		if (end > start && text[end - 1] == '\r')
			end--;
		if (end == start)
			continue; /* tern's choice: blank lines are harmless */
		/* sts-policy-ext-name: (ALPHA / DIGIT) *31(ALPHA / DIGIT / "_" / "-" / ".") */
		name_len = 0;
		while (start + name_len < end && (is_alnum(text[start + name_len]) ||
						  text[start + name_len] == '_' ||
						  text[start + name_len] == '-' ||
						  text[start + name_len] == '.'))
			name_len++;
		if (name_len == 0 || name_len > 32 || !is_alnum(text[start]) ||
		    start + name_len == end || text[start + name_len] != ':') {
			snprintf(why, whylen, "line %zu is not \"name: value\"", line_no);
			return false;
		}
		v = start + name_len + 1;
		while (v < end && is_wsp(text[v]))
			v++;
		vend = end;
		while (vend > v && is_wsp(text[vend - 1]))
			vend--;
		for (size_t k = v; k < vend; k++) {
			if ((unsigned char)text[k] < 0x20 && !is_wsp(text[k])) {
				snprintf(why, whylen, "line %zu holds a control character", line_no);
				return false;
			}
		}
		if (field_is(text + start, name_len, "version")) {
			if (have_version)
				continue;
			if (!field_is(text + v, vend - v, "STSv1")) {
				snprintf(why, whylen, "version is not STSv1");
				return false;
			}
			have_version = true;
		} else if (field_is(text + start, name_len, "mode")) {
			if (have_mode)
				continue;
			if (field_is(text + v, vend - v, "enforce"))
				out->mode = STS_MODE_ENFORCE;
			else if (field_is(text + v, vend - v, "testing"))
				out->mode = STS_MODE_TESTING;
			else if (field_is(text + v, vend - v, "none"))
				out->mode = STS_MODE_NONE;
			else {
				snprintf(why, whylen, "mode is none of enforce, testing, none");
				return false;
			}
			have_mode = true;
		} else if (field_is(text + start, name_len, "max_age")) {
			if (have_max_age)
				continue;
			if (!parse_max_age(text + v, vend - v, &out->max_age)) {
				snprintf(why, whylen, "max_age is not a number of seconds from 0 to %d",
					 STS_MAX_AGE_MAX);
				return false;
			}
			have_max_age = true;
		} else if (field_is(text + start, name_len, "mx")) {
			size_t n = vend - v;

			if (!mx_pattern_ok(text + v, n)) {
				snprintf(why, whylen, "line %zu: mx is not a host name pattern", line_no);
				return false;
			}
			if (out->n_mx == STS_MX_MAX) {
				snprintf(why, whylen, "more than %d mx patterns", STS_MX_MAX);
				return false;
			}
			for (size_t k = 0; k < n; k++)
				out->mx[out->n_mx][k] = lower(text[v + k]);
			if (n > 0 && out->mx[out->n_mx][n - 1] == '.')
				n--;
			out->mx[out->n_mx][n] = '\0';
			out->n_mx++;
		}
		/* Unknown fields are ignored (RFC 8461 §3.2). */
	}
	if (!have_version || !have_mode || !have_max_age) {
		snprintf(why, whylen, "the policy has no %s field",
			 !have_version ? "version" : !have_mode ? "mode" : "max_age");
		return false;
	}
	if (out->mode != STS_MODE_NONE && out->n_mx == 0) {
		snprintf(why, whylen, "the policy (mode %s) has no mx field", sts_mode_name(out->mode));
		return false;
	}
	return true;
}

/* ---- matching ---- */

static bool same_name(const char *a, size_t alen, const char *b, size_t blen)
{
	if (alen != blen)
		return false;
	for (size_t i = 0; i < alen; i++)
		if (lower(a[i]) != lower(b[i]))
			return false;
	return true;
}

bool sts_mx_match(const struct sts_policy *p, const char *host)
{
	size_t hlen = strlen(host);

	if (hlen > 0 && host[hlen - 1] == '.')
		hlen--;
	if (hlen == 0)
		return false;
	for (size_t i = 0; i < p->n_mx; i++) {
		const char *pat = p->mx[i];
		size_t plen = strlen(pat);

		if (plen >= 2 && pat[0] == '*' && pat[1] == '.') {
			/* One whole leftmost label, then the rest exactly. */
			const char *dot = memchr(host, '.', hlen);

			if (dot != NULL && dot > host &&
			    same_name(dot + 1, hlen - (size_t)(dot + 1 - host), pat + 2, plen - 2))
				return true;
		} else if (same_name(host, hlen, pat, plen)) {
			return true;
		}
	}
	return false;
}
