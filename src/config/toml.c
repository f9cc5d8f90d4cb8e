/*
 * toml.c - TOML 1.0 parser; see toml.h.
 *
 * Two passes. The first checks the encoding of the whole buffer: well-formed
 * UTF-8 and no control characters other than tab, LF and the CR of a CRLF.
 * After it, the grammar never meets NUL, a bare CR or a broken sequence, so
 * strings and comments need no checks of their own. The second pass is a
 * recursive descent that builds the tree directly in the document's arena.
 *
 * Invariants:
 * - Every table and array is a struct node whose first member is the public
 *   toml_value. The node's flags record how the container came to exist,
 *   which is all the redefinition rules need:
 *     [a] may define a table that was only created implicitly by an earlier
 *         header path, never one that is already defined, made by dotted
 *         keys, inline, or an array;
 *     a.b = 1 may only walk through tables that dotted keys created (inside
 *         the current section or inline table: no other way leads back to
 *         them), so it cannot extend a table defined by a header;
 *     a header path may walk through implicit, explicit and dotted tables
 *         and into the last element of a [[array]], never into an inline
 *         table or an array written as a value.
 * - The tree is at most TOML_MAX_DEPTH containers deep (the root is depth 0),
 *   however the depth arises: nested values, dotted keys or header paths.
 *   That bounds the recursion here and in every consumer that walks the
 *   tree recursively.
 * - A table with more than INDEX_MIN keys gets a hash index, so duplicate
 *   checks stay linear in the input however wide a table grows.
 * - Positions are 1-based; a column is the byte offset from the start of its
 *   line. A leading BOM is skipped and not counted.
 *
 * Deliberately not done: TOML 1.1 relaxations (newlines in inline tables,
 * \e and \x escapes, times without seconds). Floats are read with strtod,
 * which assumes the "C" locale's decimal point; tern never calls setlocale.
 */
#include "config/toml.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/strbuf.h"
#include "util/text.h"

#define TOML_MAX_DEPTH 128 /* containers, counting the root as 0 */
#define INDEX_MIN 8      /* keys a table holds before it gets a hash index */
#define KEY_SHOW_SIZE 64 /* room for a key quoted in an error message */

enum {
	NODE_EXPLICIT = 1 << 0, /* table defined by a [header], or the root */
	NODE_DOTTED = 1 << 1,   /* table created by a dotted key */
	NODE_INLINE = 1 << 2,   /* inline table: closed once its } is read */
	NODE_AOT = 1 << 3,      /* array built by [[header]]s */
};

struct node {
	struct toml_value v; /* first: a container's toml_value * is its node */
	size_t cap;          /* room in v.u.table.items or v.u.array.items */
	uint32_t *index;     /* open addressing, item number + 1, 0 = empty */
	size_t index_mask;   /* slots - 1; 0 while the table has no index */
	unsigned depth;
	unsigned flags;
};

/* One component of a dotted key, decoded into parser.scratch. */
struct key_part {
	size_t off;
	size_t len;
	struct toml_pos pos;
};

struct parser {
	const char *p; /* next byte */
	const char *end;
	const char *line_start;
	uint32_t line;
	struct arena *arena;
	struct toml_error *err;
	bool failed;
	struct strbuf scratch; /* the key or string being decoded */
	struct key_part parts[TOML_MAX_DEPTH + 1];
	size_t nparts;
	struct node *root;
	struct node *cur; /* table of the current [section] */
};

static struct toml_value *parse_value(struct parser *ps, unsigned depth);

/* ---- positions and errors ---- */

static struct toml_pos pos_of(const struct parser *ps, const char *at)
{
	size_t col = (size_t)(at - ps->line_start) + 1;
	struct toml_pos pos = { ps->line, col > UINT32_MAX ? UINT32_MAX : (uint32_t)col };

	return pos;
}

static struct toml_pos here(const struct parser *ps)
{
	return pos_of(ps, ps->p);
}

__attribute__((format(printf, 3, 4)))
static bool fail_at(struct parser *ps, struct toml_pos pos, const char *fmt, ...)
{
	va_list ap;

	/* The first error is the one worth reporting. */
	if (ps->failed)
		return false;
	ps->failed = true;
	ps->err->pos = pos;
	va_start(ap, fmt);
	vsnprintf(ps->err->message, sizeof(ps->err->message), fmt, ap);
	va_end(ap);
	return false;
}

static bool fail_oom(struct parser *ps)
{
	return fail_at(ps, here(ps), "out of memory");
}

/*
 * Render a decoded key for a message: quotes, backslashes and control
 * characters escaped, cut at a character boundary with "..." when long.
 */
static const char *show_key(char *buf, size_t size, const char *key, size_t len)
{
	size_t o = 0;

	for (size_t i = 0; i < len;) {
		unsigned char c = (unsigned char)key[i];
		char tmp[8];
		size_t n, used;

		if (c == '"' || c == '\\') {
			tmp[0] = '\\';
			tmp[1] = (char)c;
			n = 2;
			used = 1;
		} else if (c < 0x20 || c == 0x7f) {
			n = (size_t)snprintf(tmp, sizeof(tmp), "\\u%04X", c);
			used = 1;
		} else {
			/* Keys are valid UTF-8: copy whole characters only. */
			n = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
			if (n > len - i)
				n = len - i;
			memcpy(tmp, key + i, n);
			used = n;
		}
		if (o + n + 4 > size) {
			memcpy(buf + o, "...", 3);
			o += 3;
			break;
		}
		memcpy(buf + o, tmp, n);
		o += n;
		i += used;
	}
	buf[o] = '\0';
	return buf;
}


/* ---- encoding ---- */

static bool is_cont(unsigned char c)
{
	return (c & 0xC0) == 0x80;
}

/* Length of the well-formed UTF-8 sequence at s (RFC 3629), 0 if none. */
static size_t utf8_len(const unsigned char *s, size_t avail)
{
	unsigned char c = s[0];

	if (c < 0x80)
		return 1;
	if (c < 0xC2)
		return 0;
	if (c < 0xE0)
		return avail >= 2 && is_cont(s[1]) ? 2 : 0;
	if (c < 0xF0) {
		if (avail < 3 || !is_cont(s[1]) || !is_cont(s[2]))
			return 0;
		if ((c == 0xE0 && s[1] < 0xA0) || (c == 0xED && s[1] > 0x9F))
			return 0; /* overlong, or a surrogate */
		return 3;
	}
	if (c < 0xF5) {
		if (avail < 4 || !is_cont(s[1]) || !is_cont(s[2]) || !is_cont(s[3]))
			return 0;
		if ((c == 0xF0 && s[1] < 0x90) || (c == 0xF4 && s[1] > 0x8F))
			return 0; /* overlong, or beyond U+10FFFF */
		return 4;
	}
	return 0;
}

static bool check_encoding(struct parser *ps)
{
	const char *s = ps->p;

	while (s < ps->end) {
		unsigned char c = (unsigned char)*s;

		if (c >= 0x80) {
			size_t n = utf8_len((const unsigned char *)s, (size_t)(ps->end - s));

			if (n == 0)
				return fail_at(ps, pos_of(ps, s), "invalid UTF-8");
			s += n;
			continue;
		}
		if (c == '\n') {
			if (ps->line < UINT32_MAX)
				ps->line++;
			ps->line_start = s + 1;
		} else if (c == '\r') {
			if (s + 1 == ps->end || s[1] != '\n')
				return fail_at(ps, pos_of(ps, s),
					       "carriage return not followed by newline");
		} else if (c == '\0') {
			return fail_at(ps, pos_of(ps, s), "NUL byte");
		} else if ((c < 0x20 && c != '\t') || c == 0x7f) {
			return fail_at(ps, pos_of(ps, s), "control character U+%04X", c);
		}
		s++;
	}
	return true;
}

/* ---- lexical helpers ---- */

static bool at_newline(const struct parser *ps)
{
	return ps->p < ps->end && (*ps->p == '\n' || *ps->p == '\r');
}

/* At LF or CRLF (check_encoding guarantees a CR is followed by LF). */
static void take_newline(struct parser *ps)
{
	if (*ps->p == '\r')
		ps->p++;
	ps->p++;
	if (ps->line < UINT32_MAX)
		ps->line++;
	ps->line_start = ps->p;
}

static void skip_ws(struct parser *ps)
{
	while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t'))
		ps->p++;
}

/* At '#': move to the newline or the end. */
static void skip_comment(struct parser *ps)
{
	const char *nl = memchr(ps->p, '\n', (size_t)(ps->end - ps->p));

	if (nl == NULL)
		ps->p = ps->end;
	else
		ps->p = nl[-1] == '\r' ? nl - 1 : nl;
}

/* Whitespace, newlines and comments, as allowed between array elements. */
static void skip_ws_lines(struct parser *ps)
{
	for (;;) {
		skip_ws(ps);
		if (ps->p == ps->end)
			return;
		if (*ps->p == '#')
			skip_comment(ps);
		else if (at_newline(ps))
			take_newline(ps);
		else
			return;
	}
}

static bool expect_eol(struct parser *ps, const char *after)
{
	skip_ws(ps);
	if (ps->p < ps->end && *ps->p == '#')
		skip_comment(ps);
	if (ps->p == ps->end)
		return true;
	if (at_newline(ps)) {
		take_newline(ps);
		return true;
	}
	return fail_at(ps, here(ps), "expected newline after %s", after);
}

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static int hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static bool is_bare_key_char(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || is_digit(c) ||
	       c == '_' || c == '-';
}

/* ---- containers ---- */

static struct node *node_new(struct parser *ps, enum toml_type type, struct toml_pos pos,
			     unsigned depth, unsigned flags)
{
	struct node *n;

	if (depth > TOML_MAX_DEPTH) {
		fail_at(ps, pos, "nesting deeper than %d levels", TOML_MAX_DEPTH);
		return NULL;
	}
	n = arena_alloc(ps->arena, sizeof(*n));
	if (n == NULL) {
		fail_oom(ps);
		return NULL;
	}
	n->v.type = type;
	n->v.pos = pos;
	n->depth = depth;
	n->flags = flags;
	return n;
}

/* Only tables and arrays are nodes; scalars are bare toml_values. */
static struct node *as_node(struct toml_value *v)
{
	return (struct node *)v;
}

static unsigned flags_of(const struct toml_value *v)
{
	if (v->type != TOML_TABLE && v->type != TOML_ARRAY)
		return 0;
	return ((const struct node *)v)->flags;
}

/* "an integer", "an array of tables", ... for messages. */
static const char *describe(const struct toml_value *v)
{
	switch (v->type) {
	case TOML_STRING: return "a string";
	case TOML_INTEGER: return "an integer";
	case TOML_FLOAT: return "a float";
	case TOML_BOOL: return "a boolean";
	case TOML_DATETIME: return "a date-time";
	case TOML_DATETIME_LOCAL: return "a local date-time";
	case TOML_DATE_LOCAL: return "a local date";
	case TOML_TIME_LOCAL: return "a local time";
	case TOML_ARRAY: return (flags_of(v) & NODE_AOT) ? "an array of tables" : "an array";
	case TOML_TABLE: return (flags_of(v) & NODE_INLINE) ? "an inline table" : "a table";
	}
	return "a value";
}

static struct toml_value *scalar_new(struct parser *ps, enum toml_type type, struct toml_pos pos)
{
	struct toml_value *v = arena_alloc(ps->arena, sizeof(*v));

	if (v == NULL) {
		fail_oom(ps);
		return NULL;
	}
	v->type = type;
	v->pos = pos;
	return v;
}

static bool array_push(struct parser *ps, struct node *a, struct toml_value *v)
{
	size_t n = a->v.u.array.len;

	if (n == a->cap) {
		size_t cap = n ? n * 2 : 4;
		struct toml_value **items = arena_grow(ps->arena, a->v.u.array.items, n, cap,
							sizeof(*items));

		if (items == NULL)
			return fail_oom(ps);
		a->v.u.array.items = items;
		a->cap = cap;
	}
	a->v.u.array.items[n] = v;
	a->v.u.array.len = n + 1;
	return true;
}

static bool key_eq(const struct toml_keyval *kv, const char *key, size_t len)
{
	return kv->key_len == len && (len == 0 || memcmp(kv->key, key, len) == 0);
}

static struct toml_keyval *table_lookup(const struct node *t, const char *key, size_t len)
{
	struct toml_keyval *items = t->v.u.table.items;

	if (t->index_mask == 0) {
		for (size_t i = 0; i < t->v.u.table.len; i++)
			if (key_eq(&items[i], key, len))
				return &items[i];
		return NULL;
	}
	for (size_t i = (size_t)text_hash(key, len) & t->index_mask;; i = (i + 1) & t->index_mask) {
		uint32_t slot = t->index[i];

		if (slot == 0)
			return NULL;
		if (key_eq(&items[slot - 1], key, len))
			return &items[slot - 1];
	}
}

static void index_put(struct node *t, size_t item)
{
	const struct toml_keyval *kv = &t->v.u.table.items[item];
	size_t i = (size_t)text_hash(kv->key, kv->key_len) & t->index_mask;

	while (t->index[i] != 0)
		i = (i + 1) & t->index_mask;
	t->index[i] = (uint32_t)item + 1;
}

static bool index_rebuild(struct parser *ps, struct node *t, size_t slots)
{
	uint32_t *index = arena_grow(ps->arena, NULL, 0, slots, sizeof(*index));

	if (index == NULL)
		return fail_oom(ps);
	t->index = index;
	t->index_mask = slots - 1;
	for (size_t i = 0; i < t->v.u.table.len; i++)
		index_put(t, i);
	return true;
}

/*
 * Append key (copied into the arena) with value v, which may still be NULL
 * while the value is being parsed. The caller has checked that the key is
 * new. Returns the item's number, or -1 after an error.
 */
static long table_add(struct parser *ps, struct node *t, const char *key, size_t len,
		      struct toml_pos key_pos, struct toml_value *v)
{
	size_t n = t->v.u.table.len;
	struct toml_keyval *kv;
	char *copy;

	if (n == t->cap) {
		size_t cap = n ? n * 2 : 4;
		struct toml_keyval *items;

		/* Index slots hold n + 1 in 32 bits; a table this wide is absurd. */
		if (n >= UINT32_MAX / 4) {
			fail_at(ps, key_pos, "too many keys in one table");
			return -1;
		}
		items = arena_grow(ps->arena, t->v.u.table.items, n, cap, sizeof(*items));
		if (items == NULL) {
			fail_oom(ps);
			return -1;
		}
		t->v.u.table.items = items;
		t->cap = cap;
	}
	copy = arena_strndup(ps->arena, key, len);
	if (copy == NULL) {
		fail_oom(ps);
		return -1;
	}
	kv = &t->v.u.table.items[n];
	kv->key = copy;
	kv->key_len = len;
	kv->key_pos = key_pos;
	kv->value = v;
	t->v.u.table.len = n + 1;

	/* Keep the index at most half full. */
	if (t->index_mask != 0 && (n + 1) * 2 <= t->index_mask + 1) {
		index_put(t, n);
	} else if (n + 1 > INDEX_MIN) {
		size_t slots = t->index_mask ? (t->index_mask + 1) * 2 : 4 * INDEX_MIN;

		if (!index_rebuild(ps, t, slots))
			return -1;
	}
	return (long)n;
}

/* ---- strings ---- */

static void put_utf8(struct strbuf *sb, uint32_t cp)
{
	char b[4];
	size_t n;

	if (cp < 0x80) {
		b[0] = (char)cp;
		n = 1;
	} else if (cp < 0x800) {
		b[0] = (char)(0xC0 | (cp >> 6));
		b[1] = (char)(0x80 | (cp & 0x3F));
		n = 2;
	} else if (cp < 0x10000) {
		b[0] = (char)(0xE0 | (cp >> 12));
		b[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
		b[2] = (char)(0x80 | (cp & 0x3F));
		n = 3;
	} else {
		b[0] = (char)(0xF0 | (cp >> 18));
		b[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
		b[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
		b[3] = (char)(0x80 | (cp & 0x3F));
		n = 4;
	}
	strbuf_append(sb, b, n);
}

/* At a backslash in a basic string: decode one escape into scratch. */
static bool parse_escape(struct parser *ps)
{
	const char *bs = ps->p;
	struct toml_pos pos = here(ps);
	char c;

	if (ps->end - bs < 2)
		return fail_at(ps, pos, "incomplete escape sequence");
	c = bs[1];
	ps->p += 2;
	switch (c) {
	case 'b': strbuf_putc(&ps->scratch, '\b'); return true;
	case 't': strbuf_putc(&ps->scratch, '\t'); return true;
	case 'n': strbuf_putc(&ps->scratch, '\n'); return true;
	case 'f': strbuf_putc(&ps->scratch, '\f'); return true;
	case 'r': strbuf_putc(&ps->scratch, '\r'); return true;
	case '"': strbuf_putc(&ps->scratch, '"'); return true;
	case '\\': strbuf_putc(&ps->scratch, '\\'); return true;
	case 'u':
	case 'U': {
		int ndigits = c == 'u' ? 4 : 8;
		uint32_t cp = 0;

		if (ps->end - ps->p < ndigits)
			return fail_at(ps, pos, "\\%c needs %d hex digits", c, ndigits);
		for (int i = 0; i < ndigits; i++) {
			int h = hex_value(ps->p[i]);

			if (h < 0)
				return fail_at(ps, pos, "\\%c needs %d hex digits", c, ndigits);
			cp = cp << 4 | (uint32_t)h;
		}
		if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
			return fail_at(ps, pos, "\\%c%.*s is not a Unicode scalar value", c,
				       ndigits, ps->p);
		ps->p += ndigits;
		put_utf8(&ps->scratch, cp);
		return true;
	}
	default:
		if (c > ' ' && c < 0x7f)
			return fail_at(ps, pos, "invalid escape \\%c", c);
		return fail_at(ps, pos, "invalid escape sequence");
	}
}

/*
 * At the opening quote of a one-line string; quote is '"' (basic, with
 * escapes) or '\'' (literal). Appends the contents to scratch.
 */
static bool parse_string_line(struct parser *ps, char quote)
{
	struct toml_pos open = here(ps);

	ps->p++;
	for (;;) {
		const char *run = ps->p;

		while (ps->p < ps->end && *ps->p != quote && *ps->p != '\n' && *ps->p != '\r' &&
		       !(quote == '"' && *ps->p == '\\'))
			ps->p++;
		strbuf_append(&ps->scratch, run, (size_t)(ps->p - run));
		if (ps->p == ps->end || at_newline(ps))
			return fail_at(ps, open, "unterminated string");
		if (*ps->p == quote) {
			ps->p++;
			return true;
		}
		if (!parse_escape(ps))
			return false;
	}
}

/*
 * At a backslash in a multi-line basic string. If only whitespace follows
 * it on its line, skip that, the newline and all whitespace and newlines
 * after it, and return true.
 */
static bool skip_line_ending_backslash(struct parser *ps)
{
	const char *q = ps->p + 1;

	while (q < ps->end && (*q == ' ' || *q == '\t'))
		q++;
	if (q == ps->end || (*q != '\n' && *q != '\r'))
		return false;
	ps->p = q;
	while (ps->p < ps->end) {
		if (at_newline(ps))
			take_newline(ps);
		else if (*ps->p == ' ' || *ps->p == '\t')
			ps->p++;
		else
			break;
	}
	return true;
}

/* At the opening triple quote of a multi-line string. */
static bool parse_string_ml(struct parser *ps, char quote)
{
	struct toml_pos open = here(ps);

	ps->p += 3;
	/* A newline right after the delimiter is not part of the string. */
	if (at_newline(ps))
		take_newline(ps);
	for (;;) {
		const char *run = ps->p;
		size_t nq;

		while (ps->p < ps->end && *ps->p != quote && *ps->p != '\n' && *ps->p != '\r' &&
		       !(quote == '"' && *ps->p == '\\'))
			ps->p++;
		strbuf_append(&ps->scratch, run, (size_t)(ps->p - run));
		if (ps->p == ps->end)
			return fail_at(ps, open, "unterminated multi-line string");
		if (at_newline(ps)) {
			/* CRLF is stored as LF, so the value does not depend on
			 * how the file was saved. */
			take_newline(ps);
			strbuf_putc(&ps->scratch, '\n');
			continue;
		}
		if (*ps->p == '\\') {
			if (!skip_line_ending_backslash(ps) && !parse_escape(ps))
				return false;
			continue;
		}
		/* Up to two quotes may precede the closing three. */
		for (nq = 0; ps->p + nq < ps->end && ps->p[nq] == quote; nq++) {
			if (nq == 5)
				return fail_at(ps, pos_of(ps, ps->p + nq),
					       "too many quotes at end of multi-line string");
		}
		if (nq >= 3) {
			strbuf_append(&ps->scratch, ps->p, nq - 3);
			ps->p += nq;
			return true;
		}
		strbuf_append(&ps->scratch, ps->p, nq);
		ps->p += nq;
	}
}

static bool at_triple_quote(const struct parser *ps)
{
	return ps->end - ps->p >= 3 && ps->p[1] == ps->p[0] && ps->p[2] == ps->p[0];
}

/* ---- keys ---- */

static const char *part_key(const struct parser *ps, const struct key_part *kp)
{
	return ps->scratch.data != NULL ? ps->scratch.data + kp->off : "";
}

/* Parse a possibly dotted key into ps->parts; stops after trailing blanks. */
static bool parse_key(struct parser *ps)
{
	strbuf_reset(&ps->scratch);
	ps->nparts = 0;
	for (;;) {
		struct key_part *kp;

		if (ps->nparts == TOML_MAX_DEPTH + 1)
			return fail_at(ps, here(ps), "nesting deeper than %d levels", TOML_MAX_DEPTH);
		kp = &ps->parts[ps->nparts];
		kp->pos = here(ps);
		kp->off = ps->scratch.len;
		if (ps->p == ps->end || at_newline(ps)) {
			return fail_at(ps, kp->pos, "expected a key");
		} else if (*ps->p == '"' || *ps->p == '\'') {
			if (at_triple_quote(ps))
				return fail_at(ps, kp->pos, "a key cannot be a multi-line string");
			if (!parse_string_line(ps, *ps->p))
				return false;
		} else if (is_bare_key_char(*ps->p)) {
			const char *s = ps->p;

			while (ps->p < ps->end && is_bare_key_char(*ps->p))
				ps->p++;
			strbuf_append(&ps->scratch, s, (size_t)(ps->p - s));
		} else if (*ps->p == '=') {
			return fail_at(ps, kp->pos, "missing key before '='");
		} else {
			return fail_at(ps, kp->pos, "expected a key");
		}
		if (strbuf_failed(&ps->scratch))
			return fail_oom(ps);
		kp->len = ps->scratch.len - kp->off;
		ps->nparts++;
		skip_ws(ps);
		if (ps->p == ps->end || *ps->p != '.')
			return true;
		ps->p++;
		skip_ws(ps);
	}
}

/* Walk one dotted-key component of a key/value pair, creating it if new. */
static struct node *descend_dotted(struct parser *ps, struct node *t, const struct key_part *kp)
{
	char name[KEY_SHOW_SIZE];
	const char *key = part_key(ps, kp);
	struct toml_keyval *kv = table_lookup(t, key, kp->len);
	struct node *n;

	if (kv == NULL) {
		n = node_new(ps, TOML_TABLE, kp->pos, t->depth + 1, NODE_DOTTED);
		if (n == NULL || table_add(ps, t, key, kp->len, kp->pos, &n->v) < 0)
			return NULL;
		return n;
	}
	show_key(name, sizeof(name), key, kp->len);
	if (kv->value->type != TOML_TABLE) {
		fail_at(ps, kp->pos, "key \"%s\" is already defined as %s", name,
			describe(kv->value));
		return NULL;
	}
	n = as_node(kv->value);
	if (n->flags & NODE_INLINE) {
		fail_at(ps, kp->pos, "inline table \"%s\" cannot be extended", name);
		return NULL;
	}
	if (!(n->flags & NODE_DOTTED)) {
		fail_at(ps, kp->pos, "table \"%s\" is defined elsewhere; dotted keys cannot extend it",
			name);
		return NULL;
	}
	return n;
}

/* key = value, into table t (a section, or an inline table being built). */
static bool parse_keyval(struct parser *ps, struct node *t)
{
	char name[KEY_SHOW_SIZE];
	const struct key_part *last;
	struct toml_value *v;
	long item;

	if (!parse_key(ps))
		return false;
	if (ps->p == ps->end || *ps->p != '=')
		return fail_at(ps, here(ps), "expected '=' after key");
	ps->p++;
	skip_ws(ps);
	for (size_t i = 0; i + 1 < ps->nparts; i++) {
		t = descend_dotted(ps, t, &ps->parts[i]);
		if (t == NULL)
			return false;
	}
	last = &ps->parts[ps->nparts - 1];
	if (table_lookup(t, part_key(ps, last), last->len) != NULL)
		return fail_at(ps, last->pos, "duplicate key \"%s\"",
			       show_key(name, sizeof(name), part_key(ps, last), last->len));
	/* Add the key before parsing the value: the value reuses scratch. */
	item = table_add(ps, t, part_key(ps, last), last->len, last->pos, NULL);
	if (item < 0)
		return false;
	v = parse_value(ps, t->depth + 1);
	if (v == NULL)
		return false;
	t->v.u.table.items[item].value = v;
	return true;
}

/* ---- table headers ---- */

/* Walk one non-final component of a [header] path. */
static struct node *descend_header(struct parser *ps, struct node *t, const struct key_part *kp,
				   struct toml_pos header_pos)
{
	char name[KEY_SHOW_SIZE];
	const char *key = part_key(ps, kp);
	struct toml_keyval *kv = table_lookup(t, key, kp->len);
	struct node *n;

	if (kv == NULL) {
		n = node_new(ps, TOML_TABLE, header_pos, t->depth + 1, 0);
		if (n == NULL || table_add(ps, t, key, kp->len, kp->pos, &n->v) < 0)
			return NULL;
		return n;
	}
	show_key(name, sizeof(name), key, kp->len);
	if (kv->value->type == TOML_TABLE && !(flags_of(kv->value) & NODE_INLINE))
		return as_node(kv->value);
	/* [[a]] always leaves a table as the last element. */
	if (kv->value->type == TOML_ARRAY && (flags_of(kv->value) & NODE_AOT)) {
		n = as_node(kv->value);
		return as_node(n->v.u.array.items[n->v.u.array.len - 1]);
	}
	fail_at(ps, kp->pos, "key \"%s\" is already defined as %s", name, describe(kv->value));
	return NULL;
}

/* At '[' at the start of a line: [table] or [[array of tables]]. */
static bool parse_header(struct parser *ps)
{
	char name[KEY_SHOW_SIZE];
	struct toml_pos pos = here(ps);
	bool aot = ps->end - ps->p >= 2 && ps->p[1] == '[';
	const struct key_part *last;
	struct toml_keyval *kv;
	struct node *t = ps->root, *n;

	ps->p += aot ? 2 : 1;
	skip_ws(ps);
	if (!parse_key(ps))
		return false;
	if (ps->p == ps->end || *ps->p != ']' ||
	    (aot && (ps->end - ps->p < 2 || ps->p[1] != ']')))
		return fail_at(ps, here(ps), aot ? "expected ']]' after table name" :
			       "expected ']' after table name");
	ps->p += aot ? 2 : 1;

	for (size_t i = 0; i + 1 < ps->nparts; i++) {
		t = descend_header(ps, t, &ps->parts[i], pos);
		if (t == NULL)
			return false;
	}
	last = &ps->parts[ps->nparts - 1];
	show_key(name, sizeof(name), part_key(ps, last), last->len);
	kv = table_lookup(t, part_key(ps, last), last->len);
	if (aot) {
		struct node *arr;

		if (kv == NULL) {
			arr = node_new(ps, TOML_ARRAY, pos, t->depth + 1, NODE_AOT);
			if (arr == NULL ||
			    table_add(ps, t, part_key(ps, last), last->len, last->pos, &arr->v) < 0)
				return false;
		} else if (kv->value->type == TOML_ARRAY && (flags_of(kv->value) & NODE_AOT)) {
			arr = as_node(kv->value);
		} else {
			return fail_at(ps, last->pos, "key \"%s\" is already defined as %s", name,
				       describe(kv->value));
		}
		n = node_new(ps, TOML_TABLE, pos, arr->depth + 1, NODE_EXPLICIT);
		if (n == NULL || !array_push(ps, arr, &n->v))
			return false;
	} else if (kv == NULL) {
		n = node_new(ps, TOML_TABLE, pos, t->depth + 1, NODE_EXPLICIT);
		if (n == NULL ||
		    table_add(ps, t, part_key(ps, last), last->len, last->pos, &n->v) < 0)
			return false;
	} else {
		if (kv->value->type != TOML_TABLE || (flags_of(kv->value) & NODE_INLINE))
			return fail_at(ps, last->pos, "key \"%s\" is already defined as %s", name,
				       describe(kv->value));
		n = as_node(kv->value);
		if (n->flags & NODE_DOTTED)
			return fail_at(ps, last->pos, "table \"%s\" is already defined by dotted keys",
				       name);
		if (n->flags & NODE_EXPLICIT)
			return fail_at(ps, last->pos, "table \"%s\" is defined twice", name);
		n->flags |= NODE_EXPLICIT;
		n->v.pos = pos;
	}
	ps->cur = n;
	return true;
}

/* ---- values ---- */

static struct toml_value *parse_string_value(struct parser *ps)
{
	struct toml_pos pos = here(ps);
	struct toml_value *v;
	char quote = *ps->p;
	bool ok;

	strbuf_reset(&ps->scratch);
	ok = at_triple_quote(ps) ? parse_string_ml(ps, quote) : parse_string_line(ps, quote);
	if (!ok)
		return NULL;
	if (strbuf_failed(&ps->scratch)) {
		fail_oom(ps);
		return NULL;
	}
	v = scalar_new(ps, TOML_STRING, pos);
	if (v == NULL)
		return NULL;
	v->u.str.len = ps->scratch.len;
	v->u.str.ptr = arena_strndup(ps->arena, ps->scratch.len ? ps->scratch.data : "",
				     ps->scratch.len);
	if (v->u.str.ptr == NULL) {
		fail_oom(ps);
		return NULL;
	}
	return v;
}

/*
 * At a digit (base 10 when base is 10, else the given base): digits with
 * single underscores between them. Leaves *q after the run.
 */
static bool scan_digits(struct parser *ps, const char **q, const char *e, int base)
{
	const char *s = *q;

	for (;;) {
		int d = s < e ? hex_value(*s) : -1;

		if (d < 0 || d >= base)
			return fail_at(ps, pos_of(ps, s), s < e && *s == '_' ?
				       "'_' must be between digits" : "expected a digit");
		s++;
		if (s < e && *s == '_')
			s++;
		else if (s == e || hex_value(*s) < 0 || hex_value(*s) >= base)
			break;
	}
	*q = s;
	return true;
}

static bool to_integer(struct parser *ps, const char *s, const char *e, int base, bool neg,
		       int64_t *out, struct toml_pos pos)
{
	uint64_t limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
	uint64_t mag = 0;

	for (; s < e; s++) {
		unsigned d;

		if (*s == '_')
			continue;
		d = (unsigned)hex_value(*s);
		if (mag > (limit - d) / (unsigned)base)
			return fail_at(ps, pos, "integer out of range");
		mag = mag * (unsigned)base + d;
	}
	if (!neg)
		*out = (int64_t)mag;
	else if (mag == (uint64_t)INT64_MAX + 1)
		*out = INT64_MIN;
	else
		*out = -(int64_t)mag;
	return true;
}

/* The token [s, e) is an integer or a float, or invalid. */
static struct toml_value *parse_number(struct parser *ps, const char *s, const char *e)
{
	struct toml_pos pos = pos_of(ps, s);
	const char *q = s, *digits;
	bool neg = false, is_float = false;
	struct toml_value *v;

	if (*q == '+' || *q == '-') {
		neg = *q == '-';
		q++;
	}
	if (e - q >= 2 && q[0] == '0' && (q[1] == 'x' || q[1] == 'o' || q[1] == 'b')) {
		int base = q[1] == 'x' ? 16 : q[1] == 'o' ? 8 : 2;

		if (q != s) {
			fail_at(ps, pos, "sign not allowed on hex, octal or binary integer");
			return NULL;
		}
		q += 2;
		digits = q;
		if (!scan_digits(ps, &q, e, base))
			return NULL;
		if (q != e) {
			fail_at(ps, pos_of(ps, q), "invalid digit in %s integer",
				base == 16 ? "hex" : base == 8 ? "octal" : "binary");
			return NULL;
		}
		v = scalar_new(ps, TOML_INTEGER, pos);
		if (v == NULL || !to_integer(ps, digits, e, base, false, &v->u.integer, pos))
			return NULL;
		return v;
	}
	digits = q;
	if (!scan_digits(ps, &q, e, 10))
		return NULL;
	if (*digits == '0' && q - digits > 1) {
		fail_at(ps, pos_of(ps, digits), "leading zeros are not allowed");
		return NULL;
	}
	if (q < e && *q == '.') {
		q++;
		is_float = true;
		if (!scan_digits(ps, &q, e, 10))
			return NULL;
	}
	if (q < e && (*q == 'e' || *q == 'E')) {
		q++;
		is_float = true;
		if (q < e && (*q == '+' || *q == '-'))
			q++;
		if (!scan_digits(ps, &q, e, 10))
			return NULL;
	}
	if (q != e) {
		/* 10000-01-01 or 1:30:00 reach here, being no date-time shape. */
		fail_at(ps, pos_of(ps, q), *q == '-' || *q == ':' ? "invalid date-time" :
			"invalid character in number");
		return NULL;
	}
	if (!is_float) {
		v = scalar_new(ps, TOML_INTEGER, pos);
		if (v == NULL || !to_integer(ps, digits, e, 10, neg, &v->u.integer, pos))
			return NULL;
		return v;
	}

	/* strtod needs the underscores gone and a terminating NUL. */
	strbuf_reset(&ps->scratch);
	for (q = s; q < e; q++)
		if (*q != '_')
			strbuf_putc(&ps->scratch, *q);
	if (strbuf_failed(&ps->scratch)) {
		fail_oom(ps);
		return NULL;
	}
	v = scalar_new(ps, TOML_FLOAT, pos);
	if (v == NULL)
		return NULL;
	v->u.flt = strtod(ps->scratch.data, NULL);
	if (isinf(v->u.flt)) {
		fail_at(ps, pos, "float out of range");
		return NULL;
	}
	return v;
}

static bool digits_at(const char *s, const char *e, size_t n)
{
	if ((size_t)(e - s) < n)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!is_digit(s[i]))
			return false;
	return true;
}

static int two_digits(const char *s)
{
	return (s[0] - '0') * 10 + (s[1] - '0');
}

static bool looks_like_date(const char *s, const char *e)
{
	return digits_at(s, e, 4) && e - s > 4 && s[4] == '-';
}

static bool looks_like_time(const char *s, const char *e)
{
	return digits_at(s, e, 2) && e - s > 2 && s[2] == ':';
}

/* HH:MM:SS[.frac] at *q. */
static bool scan_time(struct parser *ps, const char **q, const char *e)
{
	const char *s = *q;

	if (!digits_at(s, e, 2) || e - s < 3 || s[2] != ':' || !digits_at(s + 3, e, 2) ||
	    e - s < 6 || s[5] != ':' || !digits_at(s + 6, e, 2))
		return fail_at(ps, pos_of(ps, s), "invalid time (expected HH:MM:SS)");
	if (two_digits(s) > 23)
		return fail_at(ps, pos_of(ps, s), "hour out of range");
	if (two_digits(s + 3) > 59)
		return fail_at(ps, pos_of(ps, s + 3), "minute out of range");
	/* 60 is a leap second. */
	if (two_digits(s + 6) > 60)
		return fail_at(ps, pos_of(ps, s + 6), "second out of range");
	s += 8;
	if (s < e && *s == '.') {
		s++;
		if (s == e || !is_digit(*s))
			return fail_at(ps, pos_of(ps, s), "expected digits after '.'");
		while (s < e && is_digit(*s))
			s++;
	}
	*q = s;
	return true;
}

static bool valid_date(struct parser *ps, const char *s)
{
	static const int mdays[12] = { 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
	int year = two_digits(s) * 100 + two_digits(s + 2);
	int month = two_digits(s + 5), day = two_digits(s + 8);
	bool leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);

	if (month < 1 || month > 12)
		return fail_at(ps, pos_of(ps, s + 5), "month out of range");
	if (day < 1 || day > mdays[month - 1] || (month == 2 && day == 29 && !leap))
		return fail_at(ps, pos_of(ps, s + 8), "day out of range for the month");
	return true;
}

/* The token [s, e) is one of the four date-time kinds, or invalid. */
static struct toml_value *parse_datetime(struct parser *ps, const char *s, const char *e)
{
	enum toml_type type = TOML_TIME_LOCAL;
	const char *q = s;
	struct toml_value *v;

	if (looks_like_date(s, e)) {
		if (!digits_at(s, e, 4) || e - s < 10 || s[4] != '-' || !digits_at(s + 5, e, 2) ||
		    s[7] != '-' || !digits_at(s + 8, e, 2)) {
			fail_at(ps, pos_of(ps, s), "invalid date (expected YYYY-MM-DD)");
			return NULL;
		}
		if (!valid_date(ps, s))
			return NULL;
		q += 10;
		type = TOML_DATE_LOCAL;
		if (q < e) {
			if (*q != 'T' && *q != 't' && *q != ' ') {
				fail_at(ps, pos_of(ps, q), "expected 'T' between date and time");
				return NULL;
			}
			q++;
			type = TOML_DATETIME_LOCAL;
		}
	}
	if (type != TOML_DATE_LOCAL && !scan_time(ps, &q, e))
		return NULL;
	if (type == TOML_DATETIME_LOCAL && q < e) {
		type = TOML_DATETIME;
		if (*q == 'Z' || *q == 'z') {
			q++;
		} else if (*q == '+' || *q == '-') {
			if (!digits_at(q + 1, e, 2) || e - q < 6 || q[3] != ':' ||
			    !digits_at(q + 4, e, 2) || two_digits(q + 1) > 23 ||
			    two_digits(q + 4) > 59) {
				fail_at(ps, pos_of(ps, q), "invalid time offset (expected +HH:MM)");
				return NULL;
			}
			q += 6;
		}
	}
	if (q != e) {
		fail_at(ps, pos_of(ps, q), "invalid character in date-time");
		return NULL;
	}
	v = scalar_new(ps, type, pos_of(ps, s));
	if (v == NULL)
		return NULL;
	v->u.str.len = (size_t)(e - s);
	v->u.str.ptr = arena_strndup(ps->arena, s, (size_t)(e - s));
	if (v->u.str.ptr == NULL) {
		fail_oom(ps);
		return NULL;
	}
	return v;
}

static bool token_is(const char *s, const char *e, const char *word)
{
	size_t n = strlen(word);

	return (size_t)(e - s) == n && memcmp(s, word, n) == 0;
}

static bool is_token_char(char c)
{
	return is_bare_key_char(c) || c == '+' || c == '.' || c == ':';
}

/* Booleans, numbers and date-times: everything not quoted or bracketed. */
static struct toml_value *parse_bare_value(struct parser *ps)
{
	const char *s = ps->p, *e = s, *u;
	struct toml_value *v;

	while (e < ps->end && is_token_char(*e))
		e++;
	/* A space may separate a date from its time. */
	if (e - s == 10 && looks_like_date(s, e) && ps->end - e >= 2 && *e == ' ' &&
	    is_digit(e[1])) {
		e++;
		while (e < ps->end && is_token_char(*e))
			e++;
	}
	if (e == s) {
		fail_at(ps, here(ps), "expected a value");
		return NULL;
	}
	ps->p = e;
	if (token_is(s, e, "true") || token_is(s, e, "false")) {
		v = scalar_new(ps, TOML_BOOL, pos_of(ps, s));
		if (v != NULL)
			v->u.boolean = *s == 't';
		return v;
	}
	u = (*s == '+' || *s == '-') ? s + 1 : s;
	if (token_is(u, e, "inf") || token_is(u, e, "nan")) {
		v = scalar_new(ps, TOML_FLOAT, pos_of(ps, s));
		if (v != NULL)
			v->u.flt = *u == 'i' ? (*s == '-' ? -INFINITY : INFINITY) :
				   (*s == '-' ? -NAN : NAN);
		return v;
	}
	if (looks_like_date(s, e) || looks_like_time(s, e))
		return parse_datetime(ps, s, e);
	if (u < e && (is_digit(*u) || u > s))
		return parse_number(ps, s, e);
	fail_at(ps, pos_of(ps, s), "invalid value (strings must be quoted)");
	return NULL;
}

static struct toml_value *parse_array(struct parser *ps, unsigned depth)
{
	struct node *a = node_new(ps, TOML_ARRAY, here(ps), depth, 0);

	if (a == NULL)
		return NULL;
	ps->p++;
	for (;;) {
		struct toml_value *v;

		skip_ws_lines(ps);
		if (ps->p < ps->end && *ps->p == ']')
			break;
		if (ps->p == ps->end) {
			fail_at(ps, here(ps), "unterminated array");
			return NULL;
		}
		v = parse_value(ps, depth + 1);
		if (v == NULL || !array_push(ps, a, v))
			return NULL;
		skip_ws_lines(ps);
		if (ps->p < ps->end && *ps->p == ',') {
			ps->p++;
			continue;
		}
		if (ps->p < ps->end && *ps->p == ']')
			break;
		fail_at(ps, here(ps), ps->p == ps->end ? "unterminated array" :
			"expected ',' or ']' after array element");
		return NULL;
	}
	ps->p++;
	return &a->v;
}

static struct toml_value *parse_inline_table(struct parser *ps, unsigned depth)
{
	struct node *t = node_new(ps, TOML_TABLE, here(ps), depth, 0);

	if (t == NULL)
		return NULL;
	ps->p++;
	skip_ws(ps);
	if (ps->p < ps->end && *ps->p == '}') {
		ps->p++;
		t->flags |= NODE_INLINE;
		return &t->v;
	}
	for (;;) {
		if (at_newline(ps)) {
			fail_at(ps, here(ps), "newline not allowed in inline table");
			return NULL;
		}
		if (!parse_keyval(ps, t))
			return NULL;
		skip_ws(ps);
		if (ps->p == ps->end) {
			fail_at(ps, here(ps), "unterminated inline table");
			return NULL;
		}
		if (*ps->p == '}')
			break;
		if (*ps->p != ',') {
			fail_at(ps, here(ps), at_newline(ps) ?
				"newline not allowed in inline table" :
				"expected ',' or '}' after inline table entry");
			return NULL;
		}
		ps->p++;
		skip_ws(ps);
		if (ps->p < ps->end && *ps->p == '}') {
			fail_at(ps, here(ps), "trailing comma not allowed in inline table");
			return NULL;
		}
	}
	ps->p++;
	t->flags |= NODE_INLINE;
	return &t->v;
}

/* depth: the depth the value will have once stored in its container. */
static struct toml_value *parse_value(struct parser *ps, unsigned depth)
{
	if (ps->p == ps->end || at_newline(ps) || *ps->p == '#') {
		fail_at(ps, here(ps), "expected a value");
		return NULL;
	}
	switch (*ps->p) {
	case '"':
	case '\'':
		return parse_string_value(ps);
	case '[':
		return parse_array(ps, depth);
	case '{':
		return parse_inline_table(ps, depth);
	default:
		return parse_bare_value(ps);
	}
}

/* ---- document ---- */

static bool parse_document(struct parser *ps)
{
	while (ps->p < ps->end) {
		skip_ws(ps);
		if (ps->p == ps->end)
			break;
		if (at_newline(ps)) {
			take_newline(ps);
		} else if (*ps->p == '#') {
			skip_comment(ps);
		} else if (*ps->p == '[') {
			if (!parse_header(ps) || !expect_eol(ps, "table header"))
				return false;
		} else {
			if (!parse_keyval(ps, ps->cur) || !expect_eol(ps, "value"))
				return false;
		}
	}
	return true;
}

struct toml_doc *toml_parse(const char *buf, size_t len, struct toml_error *err)
{
	static const char bom[] = "\xEF\xBB\xBF";
	struct toml_error dummy;
	struct toml_doc *doc;
	struct parser ps;
	bool ok;

	if (err == NULL)
		err = &dummy;
	err->pos.line = 1;
	err->pos.col = 1;
	err->message[0] = '\0';
	if (buf == NULL && len > 0) {
		snprintf(err->message, sizeof(err->message), "no input buffer");
		return NULL;
	}
	doc = malloc(sizeof(*doc));
	if (doc == NULL) {
		snprintf(err->message, sizeof(err->message), "out of memory");
		return NULL;
	}
	arena_init(&doc->arena);
	doc->root = NULL;

	memset(&ps, 0, sizeof(ps));
	ps.p = buf != NULL ? buf : "";
	ps.end = ps.p + len;
	if (len >= 3 && memcmp(buf, bom, 3) == 0)
		ps.p += 3;
	ps.line_start = ps.p;
	ps.line = 1;
	ps.arena = &doc->arena;
	ps.err = err;
	strbuf_init(&ps.scratch);

	ok = check_encoding(&ps);
	/* check_encoding counted lines; the grammar pass counts again. */
	ps.line = 1;
	ps.line_start = ps.p;
	if (ok) {
		ps.root = node_new(&ps, TOML_TABLE, here(&ps), 0, NODE_EXPLICIT);
		ps.cur = ps.root;
		ok = ps.root != NULL && parse_document(&ps);
	}
	strbuf_free(&ps.scratch);
	if (!ok) {
		toml_doc_free(doc);
		return NULL;
	}
	doc->root = &ps.root->v;
	return doc;
}

void toml_doc_free(struct toml_doc *doc)
{
	if (doc == NULL)
		return;
	arena_free(&doc->arena);
	free(doc);
}

/*
 * Linear on purpose: the lookup must also work on tables built by hand
 * (tests, defaults), which have no node around them, and the tables tern
 * looks keys up in are small.
 */
const struct toml_keyval *toml_table_find(const struct toml_value *t, const char *key)
{
	size_t len;

	if (t == NULL || t->type != TOML_TABLE || key == NULL)
		return NULL;
	len = strlen(key);
	for (size_t i = 0; i < t->u.table.len; i++)
		if (key_eq(&t->u.table.items[i], key, len))
			return &t->u.table.items[i];
	return NULL;
}

const struct toml_value *toml_table_get(const struct toml_value *t, const char *key)
{
	const struct toml_keyval *kv = toml_table_find(t, key);

	return kv != NULL ? kv->value : NULL;
}

const char *toml_type_name(enum toml_type type)
{
	switch (type) {
	case TOML_STRING: return "string";
	case TOML_INTEGER: return "integer";
	case TOML_FLOAT: return "float";
	case TOML_BOOL: return "boolean";
	case TOML_DATETIME: return "date-time";
	case TOML_DATETIME_LOCAL: return "local date-time";
	case TOML_DATE_LOCAL: return "local date";
	case TOML_TIME_LOCAL: return "local time";
	case TOML_ARRAY: return "array";
	case TOML_TABLE: return "table";
	}
	return "unknown";
}
