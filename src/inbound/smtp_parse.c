/*
 * smtp_parse.c - SMTP command lines into commands, paths and parameters;
 * see smtp_parse.h.
 *
 * Invariants: every read is bounded by the length given (lines may hold
 * NUL bytes and are not NUL-terminated); on failure the returned reply
 * is a static string; on success every pointer in the result points into
 * the caller's line.
 *
 * What it does not do: decide policy (relay, limits: the session does)
 * or decode xtext (values are kept as written, as the spool stores them).
 * Addresses are checked for shape, not for existence: local parts may be
 * a dot-string (lenient about dots, as real senders are) or a quoted
 * string; domains are host names or address literals; bytes above 0x7f
 * need SMTPUTF8 (RFC 6531) and must be well-formed UTF-8.
 */
#include "inbound/smtp_parse.h"

#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "queue/message.h"
#include "util/ipaddr.h"

/* RFC 3461: ENVID at most 100 characters, ORCPT at most 500. */
#define ENVID_MAX 100
#define ORCPT_MAX 500

#define R_MAIL_SYNTAX   "501 5.5.4 Syntax: MAIL FROM:<address> [parameters]"
#define R_RCPT_SYNTAX   "501 5.5.4 Syntax: RCPT TO:<address> [parameters]"
#define R_BAD_SENDER    "501 5.1.7 Bad sender address syntax"
#define R_BAD_RCPT      "501 5.1.3 Bad recipient address syntax"
#define R_NEED_UTF8     "553 5.6.7 Non-ASCII address requires SMTPUTF8"
#define R_PARAM_SYNTAX  "501 5.5.4 Bad parameter syntax"
#define R_PARAM_UNKNOWN "555 5.5.4 Unsupported parameter"
#define R_PARAM_TWICE   "501 5.5.4 Duplicate parameter"

static const struct {
	const char *word;
	size_t len;
	enum smtp_verb verb;
} verbs[] = {
	{ "HELO", 4, SMTP_HELO }, { "EHLO", 4, SMTP_EHLO }, { "LHLO", 4, SMTP_LHLO },
	{ "MAIL", 4, SMTP_MAIL }, { "RCPT", 4, SMTP_RCPT }, { "DATA", 4, SMTP_DATA },
	{ "BDAT", 4, SMTP_BDAT }, { "RSET", 4, SMTP_RSET }, { "NOOP", 4, SMTP_NOOP },
	{ "QUIT", 4, SMTP_QUIT }, { "VRFY", 4, SMTP_VRFY }, { "HELP", 4, SMTP_HELP },
	{ "EXPN", 4, SMTP_EXPN }, { "STARTTLS", 8, SMTP_STARTTLS }, { "AUTH", 4, SMTP_AUTH },
	{ "ETRN", 4, SMTP_ETRN }, { "TURN", 4, SMTP_TURN },
};

static bool is_alpha(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

static bool is_alnum(unsigned char c)
{
	return is_alpha(c) || is_digit(c);
}

/* RFC 5322 atext */
static bool is_atext(unsigned char c)
{
	return is_alnum(c) || (c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

static bool word_eq(const char *s, size_t len, const char *word)
{
	return strlen(word) == len && strncasecmp(s, word, len) == 0;
}

void smtp_parse_command(const char *line, size_t len, struct smtp_cmd *cmd)
{
	size_t w = 0, a;

	cmd->verb = SMTP_UNKNOWN;
	cmd->arg = NULL;
	cmd->arg_len = 0;
	while (w < len && line[w] != ' ')
		w++;
	for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++) {
		if (verbs[i].len == w && strncasecmp(line, verbs[i].word, w) == 0) {
			cmd->verb = verbs[i].verb;
			break;
		}
	}
	a = w;
	while (a < len && line[a] == ' ')
		a++;
	while (len > a && (line[len - 1] == ' ' || line[len - 1] == '\t'))
		len--;
	cmd->arg = line + a;
	cmd->arg_len = len - a;
}

const char *smtp_parse_helo(const char *arg, size_t len, const char **name, size_t *name_len)
{
	size_t n = 0;

	while (n < len && arg[n] != ' ')
		n++;
	if (n == 0)
		return "501 5.5.4 Syntax: EHLO hostname";
	if (n > SMTP_HELO_MAX)
		return "501 5.5.4 Host name too long";
	*name = arg;
	*name_len = n;
	return NULL;
}

bool smtp_xtext_valid(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '+') {
			for (size_t k = 1; k <= 2; k++) {
				unsigned char h = i + k < len ? (unsigned char)s[i + k] : 0;

				if (!is_digit(h) && !(h >= 'A' && h <= 'F'))
					return false;
			}
			i += 2;
		} else if (c < 33 || c > 126 || c == '=') {
			return false;
		}
	}
	return true;
}

bool smtp_text_safe(const char *s, size_t len)
{
	if (len == 0)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c < 0x21 || c > 0x7e || strchr("()<>;,\"\\", c) != NULL)
			return false;
	}
	return true;
}

/* Well-formed UTF-8 (no overlongs, no surrogates, at most U+10FFFF). */
static bool utf8_valid(const unsigned char *s, size_t len)
{
	size_t i = 0;

	while (i < len) {
		unsigned char c = s[i];
		size_t n;
		unsigned lo = 0x80, hi = 0xbf;

		if (c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf) {
			n = 1;
		} else if (c >= 0xe0 && c <= 0xef) {
			n = 2;
			lo = c == 0xe0 ? 0xa0 : 0x80;
			hi = c == 0xed ? 0x9f : 0xbf;
		} else if (c >= 0xf0 && c <= 0xf4) {
			n = 3;
			lo = c == 0xf0 ? 0x90 : 0x80;
			hi = c == 0xf4 ? 0x8f : 0xbf;
		} else {
			return false;
		}
		if (len - i <= n)
			return false;
		if (s[i + 1] < lo || s[i + 1] > hi)
			return false;
		for (size_t k = 2; k <= n; k++)
			if (s[i + k] < 0x80 || s[i + k] > 0xbf)
				return false;
		i += n + 1;
	}
	return true;
}

enum addr_check { ADDR_OK, ADDR_BAD, ADDR_NEEDS_UTF8 };

/* The inside of "[...]": an IPv4 address, or "IPv6:" and an IPv6 one. */
static bool domain_literal_valid(const char *s, size_t len)
{
	struct ipaddr a;

	if (len > 5 && strncasecmp(s, "IPv6:", 5) == 0)
		return ipaddr_parse(s + 5, len - 5, &a) && a.family == AF_INET6;
	return ipaddr_parse(s, len, &a) && a.family == AF_INET;
}

/* local-part "@" domain, as RFC 5321 4.1.2 Mailbox (leniently for dots in
 * the local part, and '_' in host names, which real mail uses). */
static enum addr_check check_mailbox(const char *s, size_t len)
{
	size_t i = 0, label = 0;
	bool high = false;

	if (len == 0 || len > SMTP_ADDR_MAX)
		return ADDR_BAD;
	if (s[0] == '"') {
		for (i = 1; i < len && s[i] != '"'; i++) {
			unsigned char c = (unsigned char)s[i];

			if (c == '\\') {
				if (++i == len)
					return ADDR_BAD;
				c = (unsigned char)s[i];
			}
			if (c < 0x20 || c == 0x7f)
				return ADDR_BAD;
			high |= c >= 0x80;
		}
		if (i == len)
			return ADDR_BAD;
		i++;
	} else {
		for (; i < len && s[i] != '@'; i++) {
			unsigned char c = (unsigned char)s[i];

			if (c >= 0x80)
				high = true;
			else if (!is_atext(c) && c != '.')
				return ADDR_BAD;
		}
		if (i == 0)
			return ADDR_BAD;
	}
	if (i >= len || s[i] != '@')
		return ADDR_BAD;
	i++;
	if (i == len)
		return ADDR_BAD;
	if (s[i] == '[') {
		if (s[len - 1] != ']' || len - i < 3 || !domain_literal_valid(s + i + 1, len - i - 2))
			return ADDR_BAD;
	} else {
		for (; i < len; i++) {
			unsigned char c = (unsigned char)s[i];

			if (c == '.') {
				if (label == 0)
					return ADDR_BAD;
				label = 0;
				continue;
			}
			if (c >= 0x80)
				high = true;
			else if (!is_alnum(c) && c != '-' && c != '_')
				return ADDR_BAD;
			if (++label > 63)
				return ADDR_BAD;
		}
		if (label == 0)
			return ADDR_BAD;
	}
	if (!high)
		return ADDR_OK;
	return utf8_valid((const unsigned char *)s, len) ? ADDR_NEEDS_UTF8 : ADDR_BAD;
}

/*
 * "<" [source-route ":"] mailbox ">" at the start of s. On success *path
 * and *path_len give the mailbox (the route is dropped, as RFC 5321 C
 * allows) and *used the bytes consumed. The mailbox is checked later, once
 * the parameters (SMTPUTF8) are known.
 */
static bool split_path(const char *s, size_t len, const char **path, size_t *path_len,
		       size_t *used)
{
	size_t i = 1;
	bool quoted = false;
	const char *p;
	size_t n;

	if (len == 0 || s[0] != '<')
		return false;
	for (; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c < 0x20 || c == 0x7f)
			return false;
		if (quoted) {
			if (c == '\\')
				i++;
			else if (c == '"')
				quoted = false;
			continue;
		}
		if (c == '"')
			quoted = true;
		else if (c == '<')
			return false;
		else if (c == '>')
			break;
	}
	if (i >= len)
		return false;
	p = s + 1;
	n = i - 1;
	/* A source route "@a,@b:" before the mailbox: skip it. */
	if (n > 0 && p[0] == '@') {
		const char *colon = memchr(p, ':', n);

		if (colon == NULL)
			return false;
		n -= (size_t)(colon + 1 - p);
		p = colon + 1;
		if (n == 0)
			return false;
	}
	*path = p;
	*path_len = n;
	*used = i + 1;
	return true;
}

/* "FROM:" or "TO:", optional spaces, then the path; *rest is what follows. */
static bool split_prefix_path(const char *arg, size_t len, const char *prefix, const char **path,
			      size_t *path_len, const char **rest, size_t *rest_len)
{
	size_t plen = strlen(prefix), i, used;

	if (len < plen || strncasecmp(arg, prefix, plen) != 0)
		return false;
	i = plen;
	while (i < len && arg[i] == ' ')
		i++;
	if (!split_path(arg + i, len - i, path, path_len, &used))
		return false;
	i += used;
	/* Parameters are separated from the path by a space. */
	if (i < len && arg[i] != ' ')
		return false;
	*rest = arg + i;
	*rest_len = len - i;
	return true;
}

struct param {
	const char *key, *value; /* value NULL when the parameter has none */
	size_t key_len, value_len;
};

/* The next "keyword[=value]" from *s; false at the end. *bad when the
 * parameter does not have esmtp-param syntax (RFC 5321 4.1.2). */
static bool next_param(const char **s, size_t *len, struct param *p, bool *bad)
{
	const char *q = *s, *end = *s + *len;
	const char *eq = NULL;

	*bad = false;
	while (q < end && *q == ' ')
		q++;
	if (q == end) {
		*s = q;
		*len = 0;
		return false;
	}
	p->key = q;
	while (q < end && *q != ' ') {
		if (*q == '=' && eq == NULL)
			eq = q;
		q++;
	}
	p->key_len = (size_t)((eq != NULL ? eq : q) - p->key);
	p->value = eq != NULL ? eq + 1 : NULL;
	p->value_len = eq != NULL ? (size_t)(q - eq - 1) : 0;
	*s = q;
	*len = (size_t)(end - q);
	if (p->key_len == 0 || !is_alnum((unsigned char)p->key[0]))
		*bad = true;
	for (size_t i = 1; i < p->key_len; i++)
		if (!is_alnum((unsigned char)p->key[i]) && p->key[i] != '-')
			*bad = true;
	if (eq != NULL && p->value_len == 0)
		*bad = true;
	for (size_t i = 0; i < p->value_len; i++) {
		unsigned char c = (unsigned char)p->value[i];

		if (c < 33 || c > 126 || c == '=')
			*bad = true;
	}
	return true;
}

static bool parse_u64(const char *s, size_t len, uint64_t *out)
{
	uint64_t v = 0;

	if (len == 0 || len > 20)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned d;

		if (!is_digit((unsigned char)s[i]))
			return false;
		d = (unsigned)(s[i] - '0');
		if (v > (UINT64_MAX - d) / 10)
			return false;
		v = v * 10 + d;
	}
	*out = v;
	return true;
}

/* Bits for duplicate detection. */
enum {
	P_SIZE = 1 << 0, P_BODY = 1 << 1, P_SMTPUTF8 = 1 << 2, P_RET = 1 << 3, P_ENVID = 1 << 4,
	P_AUTH = 1 << 5, P_REQUIRETLS = 1 << 6, P_NOTIFY = 1 << 7, P_ORCPT = 1 << 8,
};

/* One MAIL parameter; NULL when fine, else the reply. */
static const char *mail_param(const struct param *p, unsigned ext, unsigned *seen,
			      struct smtp_mail *out)
{
	const char *v = p->value;
	size_t vl = p->value_len;
	unsigned bit;

#define KEY(w) word_eq(p->key, p->key_len, w)
	if (KEY("SIZE") && (ext & SMTP_EXT_SIZE))
		bit = P_SIZE;
	else if (KEY("BODY") && (ext & SMTP_EXT_8BITMIME))
		bit = P_BODY;
	else if (KEY("SMTPUTF8") && (ext & SMTP_EXT_SMTPUTF8))
		bit = P_SMTPUTF8;
	else if (KEY("RET") && (ext & SMTP_EXT_DSN))
		bit = P_RET;
	else if (KEY("ENVID") && (ext & SMTP_EXT_DSN))
		bit = P_ENVID;
	else if (KEY("AUTH") && ext != 0)
		bit = P_AUTH;
	else if (KEY("REQUIRETLS") && (ext & SMTP_EXT_REQUIRETLS))
		bit = P_REQUIRETLS;
	else
		return R_PARAM_UNKNOWN;
#undef KEY
	if (*seen & bit)
		return R_PARAM_TWICE;
	*seen |= bit;
	/* Parameters that take no value must have none, and the others one. */
	if ((bit == P_SMTPUTF8 || bit == P_REQUIRETLS) != (v == NULL))
		return R_PARAM_SYNTAX;
	switch (bit) {
	case P_SIZE:
		if (!parse_u64(v, vl, &out->size))
			return "501 5.5.4 Bad SIZE value";
		out->has_size = true;
		break;
	case P_BODY:
		if (word_eq(v, vl, "7BIT"))
			out->body = MSG_BODY_7BIT;
		else if (word_eq(v, vl, "8BITMIME"))
			out->body = MSG_BODY_8BITMIME;
		else if (word_eq(v, vl, "BINARYMIME") && (ext & SMTP_EXT_CHUNKING))
			out->body = MSG_BODY_BINARYMIME;
		else if (word_eq(v, vl, "BINARYMIME"))
			return "555 5.5.4 BODY=BINARYMIME requires CHUNKING";
		else
			return "501 5.5.4 Bad BODY value";
		break;
	case P_SMTPUTF8:
		out->smtputf8 = true;
		break;
	case P_REQUIRETLS:
		out->requiretls = true;
		break;
	case P_RET:
		if (word_eq(v, vl, "FULL"))
			out->ret = MSG_RET_FULL;
		else if (word_eq(v, vl, "HDRS"))
			out->ret = MSG_RET_HDRS;
		else
			return "501 5.5.4 Bad RET value";
		break;
	case P_ENVID: {
		size_t chars = 0;

		if (!smtp_xtext_valid(v, vl))
			return "501 5.5.4 Bad ENVID value";
		for (size_t i = 0; i < vl; i++, chars++)
			if (v[i] == '+')
				i += 2;
		if (chars > ENVID_MAX)
			return "501 5.5.4 ENVID too long";
		out->envid = v;
		out->envid_len = vl;
		break;
	}
	case P_AUTH:
		/* RFC 4954 AUTH=: meaningful only between trusted
		 * authenticated relays; accepted and ignored. */
		break;
	}
	return NULL;
}

const char *smtp_parse_mail(const char *arg, size_t len, unsigned ext, struct smtp_mail *out)
{
	const char *rest;
	size_t rest_len;
	struct param p;
	unsigned seen = 0;
	bool bad;

	memset(out, 0, sizeof(*out));
	out->body = MSG_BODY_7BIT;
	out->ret = MSG_RET_NONE;
	/* The null reverse-path has no mailbox to split. */
	if (len >= 5 && strncasecmp(arg, "FROM:", 5) == 0) {
		size_t i = 5;

		while (i < len && arg[i] == ' ')
			i++;
		if (len - i >= 2 && arg[i] == '<' && arg[i + 1] == '>' &&
		    (len - i == 2 || arg[i + 2] == ' ')) {
			out->addr = arg + i + 1;
			out->addr_len = 0;
			rest = arg + i + 2;
			rest_len = len - i - 2;
			goto params;
		}
	}
	if (!split_prefix_path(arg, len, "FROM:", &out->addr, &out->addr_len, &rest, &rest_len))
		return R_MAIL_SYNTAX;
params:
	while (next_param(&rest, &rest_len, &p, &bad)) {
		const char *r;

		if (bad)
			return R_PARAM_SYNTAX;
		r = mail_param(&p, ext, &seen, out);
		if (r != NULL)
			return r;
	}
	if (out->addr_len == 0)
		return NULL;
	switch (check_mailbox(out->addr, out->addr_len)) {
	case ADDR_OK:
		return NULL;
	case ADDR_NEEDS_UTF8:
		return out->smtputf8 ? NULL : R_NEED_UTF8;
	case ADDR_BAD:
		break;
	}
	return R_BAD_SENDER;
}

/* NEVER, or a comma list of SUCCESS, FAILURE, DELAY (RFC 3461 4.1). */
static bool parse_notify(const char *v, size_t vl, uint8_t *out)
{
	size_t i = 0;
	uint8_t bits = 0;

	while (i <= vl) {
		size_t j = i;

		while (j < vl && v[j] != ',')
			j++;
		if (word_eq(v + i, j - i, "NEVER"))
			bits |= RCPT_NOTIFY_NEVER;
		else if (word_eq(v + i, j - i, "SUCCESS"))
			bits |= RCPT_NOTIFY_SUCCESS;
		else if (word_eq(v + i, j - i, "FAILURE"))
			bits |= RCPT_NOTIFY_FAILURE;
		else if (word_eq(v + i, j - i, "DELAY"))
			bits |= RCPT_NOTIFY_DELAY;
		else
			return false;
		i = j + 1;
	}
	if ((bits & RCPT_NOTIFY_NEVER) && bits != RCPT_NOTIFY_NEVER)
		return false;
	*out = bits;
	return true;
}

/* addr-type ";" xtext (RFC 3461 4.2); the type is an atom. */
static bool orcpt_valid(const char *v, size_t vl)
{
	const char *semi = memchr(v, ';', vl);
	size_t tl;

	if (semi == NULL || vl > ORCPT_MAX)
		return false;
	tl = (size_t)(semi - v);
	if (tl == 0 || tl + 1 == vl)
		return false;
	for (size_t i = 0; i < tl; i++)
		if (!is_atext((unsigned char)v[i]))
			return false;
	return smtp_xtext_valid(semi + 1, vl - tl - 1);
}

const char *smtp_parse_rcpt(const char *arg, size_t len, unsigned ext, bool smtputf8,
			    struct smtp_rcpt *out)
{
	const char *rest;
	size_t rest_len;
	struct param p;
	unsigned seen = 0;
	bool bad;

	memset(out, 0, sizeof(*out));
	if (!split_prefix_path(arg, len, "TO:", &out->addr, &out->addr_len, &rest, &rest_len))
		return R_RCPT_SYNTAX;
	while (next_param(&rest, &rest_len, &p, &bad)) {
		unsigned bit;

		if (bad)
			return R_PARAM_SYNTAX;
		if (word_eq(p.key, p.key_len, "NOTIFY") && (ext & SMTP_EXT_DSN))
			bit = P_NOTIFY;
		else if (word_eq(p.key, p.key_len, "ORCPT") && (ext & SMTP_EXT_DSN))
			bit = P_ORCPT;
		else
			return R_PARAM_UNKNOWN;
		if (seen & bit)
			return R_PARAM_TWICE;
		seen |= bit;
		if (p.value == NULL)
			return R_PARAM_SYNTAX;
		if (bit == P_NOTIFY) {
			if (!parse_notify(p.value, p.value_len, &out->notify))
				return "501 5.5.4 Bad NOTIFY value";
		} else {
			if (!orcpt_valid(p.value, p.value_len))
				return "501 5.5.4 Bad ORCPT value";
			out->orcpt = p.value;
			out->orcpt_len = p.value_len;
		}
	}
	switch (check_mailbox(out->addr, out->addr_len)) {
	case ADDR_OK:
		return NULL;
	case ADDR_NEEDS_UTF8:
		return smtputf8 ? NULL : R_NEED_UTF8;
	case ADDR_BAD:
		break;
	}
	return R_BAD_RCPT;
}

const char *smtp_parse_bdat(const char *arg, size_t len, uint64_t *size, bool *last)
{
	size_t n = 0, i;

	while (n < len && arg[n] != ' ')
		n++;
	if (!parse_u64(arg, n, size))
		return "501 5.5.4 Syntax: BDAT size [LAST]";
	i = n;
	while (i < len && arg[i] == ' ')
		i++;
	*last = false;
	if (i == len)
		return NULL;
	if (!word_eq(arg + i, len - i, "LAST"))
		return "501 5.5.4 Syntax: BDAT size [LAST]";
	*last = true;
	return NULL;
}
