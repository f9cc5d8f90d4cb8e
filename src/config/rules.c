/*
 * rules.c - compile rule arrays once at load; evaluate them per message
 * or connection without allocating; see rules.h.
 *
 * Compilation turns each entry's condition into a tree of struct rule_cond
 * whose operands are already in the form the test needs: a string with its
 * length, a compiled regex, a resolved list, an address prefix or an
 * integer. Evaluation is then a walk of that tree: no parsing, no
 * allocation, recursion no deeper than RULE_MAX_DEPTH groups, which the
 * compiler enforces.
 *
 * Errors are collected, not fatal: compilation goes on after a bad entry
 * so one load reports every mistake, then returns NULL.
 *
 * regex_t owns heap memory the arena cannot free, so every compiled regex
 * is linked into struct rule_regexes the moment it exists (even when the
 * rule around it later fails) and rule_regexes_free releases them. It must
 * run before the arena is freed, since the list lives in the arena.
 * Patterns are checked before regcomp sees them (regex_check), refused
 * where glibc would crash or take exponential time, and given Perl's lazy
 * a*? the meaning Stalwart gives it.
 *
 * An omitted then/else of a list setting yields an empty list value with
 * no position (pos.line == 0); parsed values always carry their position.
 * rule_dump relies on that to print the rule the way it was written.
 */
#include "config/rules.h"
#include "util/text.h"

#include <assert.h>
#include <inttypes.h>
#include <limits.h>
#include <regex.h>
#include <stdarg.h>
#include <string.h>

/* regexec must match the bytes it is given, which are not NUL-terminated:
 * REG_STARTEND (glibc, the BSDs) says where the text ends. */
#ifndef REG_STARTEND
#error "rules.c needs regexec with REG_STARTEND"
#endif

/* regoff_t is an int in glibc: text longer than this is matched on its
 * first RULE_MATCH_MAX bytes only. No variable comes near it. */
#define RULE_MATCH_MAX INT_MAX
static_assert(sizeof(regoff_t) >= sizeof(int), "regoff_t narrower than int");

/* Longest word offered a "did you mean"; keys are short. */
#define SUGGEST_MAX 32

enum rule_op {
	RULE_OP_EQ,
	RULE_OP_STARTS_WITH,
	RULE_OP_ENDS_WITH,
	RULE_OP_MATCHES,
	RULE_OP_IN_LIST,
	RULE_OP_COUNT
};

enum cond_kind { COND_TEST, COND_ANY_OF, COND_ALL_OF, COND_NONE_OF };

struct rule_cond {
	enum cond_kind kind;

	/* COND_TEST: var OP operand, negated for ne and not-... */
	enum rule_var var;
	enum rule_op op;
	bool negate;
	const char *operand;   /* as written (arena copy), for comparing and dumps */
	size_t operand_len;
	bool operand_is_int;   /* written as a TOML integer (priority) */
	int64_t number;        /* priority eq/ne */
	struct ipprefix prefix; /* remote-ip/local-ip eq/ne */
	const regex_t *re;     /* matches */
	const struct cfg_list *list; /* in-list */

	/* groups */
	const struct rule_cond **children;
	size_t n_children;
};

struct rule_regex {
	regex_t re;
	struct rule_regex *next;
};

struct rule_regexes {
	struct rule_regex *head;
	size_t size; /* sum of the expanded sizes of every regex compiled */
};

/*
 * glibc's regcomp has costs a short pattern can make explode: it recurses
 * once per group level (100000 nested groups overflow the stack), copies
 * out repetitions (a{100} is a hundred a's, a+ is a then a*, so a+++...
 * doubles with each +), takes time exponential in the number of loops
 * over something that can be empty ((a*)*(a*)*...) and in the number of
 * anchors joined by parts that can be empty (\ba?\ba?...). A bad pattern
 * would hang or crash the loader, so regex_check refuses them first; real
 * patterns are far inside these bounds. One element costs regcomp from a
 * few hundred bytes to some kilobytes; the worst pattern within them
 * takes about 0.2 s and 80 MB.
 */
#define REGEX_MAX_GROUP_DEPTH 32
#define REGEX_MAX_SIZE 1000     /* elements once repetitions are copied out, one regex */
#define REGEX_MAX_TOTAL 50000   /* the same, all regexes of a configuration */
#define REGEX_MAX_ANCHORS 8     /* ^ $ \b \B \< \> \` \' once copied out */
#define REGEX_MAX_COUNT 100000  /* clamps {m,n} bounds; RE_DUP_MAX is 32767 */
#define REGEX_STR_(x) #x
#define REGEX_STR(x) REGEX_STR_(x)
/* How much of a pattern messages quote. */
#define REGEX_QUOTE_MAX 200

static const char *const var_names[RULE_VAR_COUNT] = {
	[RULE_VAR_SENDER] = "sender",
	[RULE_VAR_SENDER_DOMAIN] = "sender-domain",
	[RULE_VAR_RCPT] = "rcpt",
	[RULE_VAR_RCPT_DOMAIN] = "rcpt-domain",
	[RULE_VAR_PRIORITY] = "priority",
	[RULE_VAR_MX] = "mx",
	[RULE_VAR_REMOTE_IP] = "remote-ip",
	[RULE_VAR_LOCAL_IP] = "local-ip",
	[RULE_VAR_LISTENER] = "listener",
	[RULE_VAR_AUTHENTICATED_AS] = "authenticated-as",
};

/* The order variables are listed in messages: the order of SPEC §2's sets. */
static const enum rule_var var_display_order[RULE_VAR_COUNT] = {
	RULE_VAR_SENDER, RULE_VAR_SENDER_DOMAIN, RULE_VAR_PRIORITY, RULE_VAR_RCPT,
	RULE_VAR_RCPT_DOMAIN, RULE_VAR_MX, RULE_VAR_REMOTE_IP, RULE_VAR_LOCAL_IP,
	RULE_VAR_LISTENER, RULE_VAR_AUTHENTICATED_AS,
};

static const struct {
	const char *name;
	enum rule_op op;
	bool negate;
} op_table[] = {
	{ "eq", RULE_OP_EQ, false },
	{ "ne", RULE_OP_EQ, true },
	{ "equal-to", RULE_OP_EQ, false },
	{ "not-equal-to", RULE_OP_EQ, true },
	{ "starts-with", RULE_OP_STARTS_WITH, false },
	{ "not-starts-with", RULE_OP_STARTS_WITH, true },
	{ "ends-with", RULE_OP_ENDS_WITH, false },
	{ "not-ends-with", RULE_OP_ENDS_WITH, true },
	{ "matches", RULE_OP_MATCHES, false },
	{ "not-matches", RULE_OP_MATCHES, true },
	{ "in-list", RULE_OP_IN_LIST, false },
	{ "not-in-list", RULE_OP_IN_LIST, true },
};
#define N_OPS (sizeof(op_table) / sizeof(op_table[0]))
#define OPS_EXPECTED "eq, ne, equal-to, not-equal-to, starts-with, ends-with, matches, " \
	"in-list, or not- before any of the last four"

/* How dumps spell an operator: the short form of the aliases. */
static const char *const op_dump_names[RULE_OP_COUNT][2] = {
	[RULE_OP_EQ] = { "eq", "ne" },
	[RULE_OP_STARTS_WITH] = { "starts-with", "not-starts-with" },
	[RULE_OP_ENDS_WITH] = { "ends-with", "not-ends-with" },
	[RULE_OP_MATCHES] = { "matches", "not-matches" },
	[RULE_OP_IN_LIST] = { "in-list", "not-in-list" },
};

static const char *const group_names[] = {
	[COND_ANY_OF] = "any-of",
	[COND_ALL_OF] = "all-of",
	[COND_NONE_OF] = "none-of",
};

/* Words valid as keys of an entry other than operators, for suggestions. */
static const char *const entry_words[] = { "if", "then", "else", "any-of", "all-of", "none-of" };
#define N_ENTRY_WORDS (sizeof(entry_words) / sizeof(entry_words[0]))

const char *rule_var_name(enum rule_var v)
{
	if ((unsigned)v >= RULE_VAR_COUNT)
		return NULL;
	return var_names[v];
}

/* ------------------------------------------------------------------ */
/* Compilation                                                         */

struct compiler {
	struct arena *a;
	const char *key;
	uint32_t allowed_vars;
	unsigned flags;
	const struct cfg_lists *lists;
	struct rule_regexes **regexes;
	rule_value_parse_fn parse;
	void *parse_ctx;
	struct diags *diags;
	bool failed;
};

/* The keys of one entry or condition table, sorted by role. */
struct parts {
	const struct toml_keyval *if_kv;
	const struct toml_keyval *op_kv;
	size_t op_index; /* into op_table */
	const struct toml_keyval *group_kv;
	enum cond_kind group_kind;
	const struct toml_keyval *then_kv;
	const struct toml_keyval *else_kv;
	bool bad;         /* an error was reported */
	bool unknown_op;  /* an unknown key was reported as an operator */
};

static void cerr(struct compiler *c, struct toml_pos pos, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void cerr(struct compiler *c, struct toml_pos pos, const char *fmt, ...)
{
	struct strbuf msg;
	va_list ap;

	c->failed = true;
	strbuf_init(&msg);
	va_start(ap, fmt);
	strbuf_vprintf(&msg, fmt, ap);
	va_end(ap);
	diag_error(c->diags, pos, c->key, "%s",
		   strbuf_failed(&msg) ? "out of memory formatting a message" : strbuf_str(&msg));
	strbuf_free(&msg);
}

static bool word_is(const char *s, size_t len, const char *word)
{
	size_t wlen = strlen(word);

	return len == wlen && memcmp(s, word, len) == 0;
}

/* The candidate closest to s, if it is close enough to be a typo. */
static const char *suggest(const char *s, size_t len, const char *const *cands, size_t n,
			   size_t *best_dist)
{
	const char *best = NULL;

	*best_dist = SIZE_MAX;
	if (len == 0 || len > SUGGEST_MAX)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		size_t clen = strlen(cands[i]);
		size_t d;

		if (clen > SUGGEST_MAX)
			continue;
		d = text_edit_distance(s, len, cands[i], clen);
		if (d < *best_dist) {
			*best_dist = d;
			best = cands[i];
		}
	}
	/* Two edits, and fewer than the word has letters: "eqq" -> "eq"
	 * but not "x" -> "eq". */
	if (best == NULL || *best_dist > 2 || *best_dist >= len)
		return NULL;
	return best;
}

static int find_op(const char *s, size_t len)
{
	for (size_t i = 0; i < N_OPS; i++)
		if (word_is(s, len, op_table[i].name))
			return (int)i;
	return -1;
}

static int find_var(const char *s, size_t len)
{
	for (int v = 0; v < RULE_VAR_COUNT; v++)
		if (word_is(s, len, var_names[v]))
			return v;
	return -1;
}

static bool find_group(const char *s, size_t len, enum cond_kind *kind)
{
	for (enum cond_kind k = COND_ANY_OF; k <= COND_NONE_OF; k++) {
		if (word_is(s, len, group_names[k])) {
			*kind = k;
			return true;
		}
	}
	return false;
}

/* "sender, sender-domain, ..." for the variables in mask. */
static void put_var_list(struct strbuf *sb, uint32_t mask)
{
	bool first = true;

	for (size_t i = 0; i < RULE_VAR_COUNT; i++) {
		enum rule_var v = var_display_order[i];

		if (!(mask & RULE_VAR_BIT(v)))
			continue;
		if (!first)
			strbuf_puts(sb, ", ");
		strbuf_puts(sb, var_names[v]);
		first = false;
	}
	if (first)
		strbuf_puts(sb, "none");
}

static void report_unknown_key(struct compiler *c, const struct toml_keyval *kv, bool in_entry,
			       struct parts *p)
{
	const char *cands[N_OPS + N_ENTRY_WORDS];
	size_t n = 0, dist;
	const char *best;
	bool best_is_op;

	for (size_t i = 0; i < N_OPS; i++)
		cands[n++] = op_table[i].name;
	for (size_t i = 0; i < N_ENTRY_WORDS; i++) {
		/* then/else do not belong in conditions, so never suggest them there. */
		if (!in_entry && (strcmp(entry_words[i], "then") == 0 ||
				  strcmp(entry_words[i], "else") == 0))
			continue;
		cands[n++] = entry_words[i];
	}
	best = suggest(kv->key, kv->key_len, cands, n, &dist);
	best_is_op = best != NULL && find_op(best, strlen(best)) >= 0;

	p->bad = true;
	/* Beside an `if`, a stray key is most likely a misspelt operator. */
	if (best_is_op || (best == NULL && p->if_kv != NULL)) {
		p->unknown_op = true;
		if (best != NULL)
			cerr(c, kv->key_pos, "unknown operator \"%s\"; did you mean \"%s\"?",
			     kv->key, best);
		else
			cerr(c, kv->key_pos, "unknown operator \"%s\"; expected " OPS_EXPECTED,
			     kv->key);
		return;
	}
	if (best != NULL)
		cerr(c, kv->key_pos, "unknown key \"%s\" in a %s; did you mean \"%s\"?", kv->key,
		     in_entry ? "rule entry" : "condition", best);
	else if (in_entry)
		cerr(c, kv->key_pos, "unknown key \"%s\" in a rule entry; expected if, an operator, "
		     "then, else, any-of, all-of or none-of", kv->key);
	else
		cerr(c, kv->key_pos, "unknown key \"%s\" in a condition; expected if, an operator, "
		     "any-of, all-of or none-of", kv->key);
}

/*
 * Sort the keys of an entry (in_entry) or of a condition inside a group,
 * reporting keys that do not belong and conditions that are not one
 * `if` with one operator or one group.
 */
static void scan_table(struct compiler *c, const struct toml_value *t, bool in_entry,
		       struct parts *p)
{
	memset(p, 0, sizeof(*p));
	for (size_t i = 0; i < t->u.table.len; i++) {
		const struct toml_keyval *kv = &t->u.table.items[i];

		if (word_is(kv->key, kv->key_len, "if"))
			p->if_kv = kv;
	}
	for (size_t i = 0; i < t->u.table.len; i++) {
		const struct toml_keyval *kv = &t->u.table.items[i];
		enum cond_kind kind;
		int op;

		if (kv == p->if_kv)
			continue;
		op = find_op(kv->key, kv->key_len);
		if (op >= 0) {
			if (p->op_kv != NULL) {
				cerr(c, kv->key_pos, "two operators in one condition (\"%s\" and \"%s\"); "
				     "a condition has exactly one: combine conditions with all-of",
				     p->op_kv->key, kv->key);
				p->bad = true;
			} else {
				p->op_kv = kv;
				p->op_index = (size_t)op;
			}
		} else if (find_group(kv->key, kv->key_len, &kind)) {
			if (p->group_kv != NULL) {
				cerr(c, kv->key_pos, "\"%s\" and \"%s\" in one %s; nest one group "
				     "inside the other", p->group_kv->key, kv->key,
				     in_entry ? "entry" : "condition");
				p->bad = true;
			} else {
				p->group_kv = kv;
				p->group_kind = kind;
			}
		} else if (word_is(kv->key, kv->key_len, "then") ||
			   word_is(kv->key, kv->key_len, "else")) {
			bool is_then = word_is(kv->key, kv->key_len, "then");

			if (!in_entry) {
				cerr(c, kv->key_pos, "\"%s\" belongs to a rule entry, not to a "
				     "condition inside a group", kv->key);
				p->bad = true;
			} else if (is_then) {
				p->then_kv = kv;
			} else {
				p->else_kv = kv;
			}
		} else {
			report_unknown_key(c, kv, in_entry, p);
		}
	}

	if (p->if_kv != NULL && p->group_kv != NULL) {
		cerr(c, p->group_kv->key_pos, "a condition has either `if` or \"%s\", not both",
		     p->group_kv->key);
		p->bad = true;
	} else if (p->op_kv != NULL && p->if_kv == NULL) {
		cerr(c, p->op_kv->key_pos, "operator \"%s\" without `if`; write "
		     "{ if = \"VARIABLE\", %s = ... }", p->op_kv->key, p->op_kv->key);
		p->bad = true;
	} else if (p->if_kv != NULL && p->op_kv == NULL && !p->unknown_op) {
		cerr(c, p->if_kv->key_pos, "condition has no operator; add one of " OPS_EXPECTED);
		p->bad = true;
	}
}

static bool parse_int64(const char *s, size_t len, int64_t *out)
{
	uint64_t v = 0, limit = INT64_MAX;
	size_t i = 0;
	bool neg = false;

	if (len > 0 && (s[0] == '+' || s[0] == '-')) {
		neg = s[0] == '-';
		limit = (uint64_t)INT64_MAX + 1;
		i = 1;
	}
	if (i == len)
		return false;
	for (; i < len; i++) {
		unsigned d;

		if (s[i] < '0' || s[i] > '9')
			return false;
		d = (unsigned)(s[i] - '0');
		if (v > (limit - d) / 10)
			return false;
		v = v * 10 + d;
	}
	if (!neg)
		*out = (int64_t)v;
	else if (v == (uint64_t)INT64_MAX + 1)
		*out = INT64_MIN;
	else
		*out = -(int64_t)v;
	return true;
}

/* Index just past the bracket expression starting at p[i] == '[', or len
 * when it is not closed (regcomp then reports it). */
static size_t skip_bracket(const char *p, size_t len, size_t i)
{
	size_t j = i + 1;

	if (j < len && p[j] == '^')
		j++;
	if (j < len && p[j] == ']') /* a leading ] is literal */
		j++;
	while (j < len) {
		if (p[j] == '[' && j + 1 < len && (p[j + 1] == ':' || p[j + 1] == '=' ||
						   p[j + 1] == '.')) {
			char delim = p[j + 1];

			/* [:alpha:], [=a=], [.x.] end at the delimiter and ]. */
			j += 2;
			while (j + 1 < len && !(p[j] == delim && p[j + 1] == ']'))
				j++;
			j += 2;
			continue;
		}
		if (p[j] == ']')
			return j + 1;
		j++;
	}
	return len;
}

/* A bound of an interval: digits, clamped to REGEX_MAX_COUNT. */
static size_t interval_number(const char *p, size_t len, size_t *i, bool *any)
{
	size_t v = 0;

	*any = false;
	while (*i < len && p[*i] >= '0' && p[*i] <= '9') {
		v = v * 10 + (size_t)(p[*i] - '0');
		if (v > REGEX_MAX_COUNT)
			v = REGEX_MAX_COUNT;
		*any = true;
		(*i)++;
	}
	return v;
}

/* A repetition: {min,max}, or {min,} when unbounded. */
struct re_repeat {
	size_t min, max;
	bool unbounded;
};

/* The repetition operator at p[*i], if there is one: * + ? or an
 * interval {m} {m,} {m,n} (or glibc's {,n}). *i moves past it. */
static bool parse_repeat(const char *p, size_t len, size_t *i, struct re_repeat *r)
{
	size_t j = *i + 1;
	bool have_min, have_max = false, comma = false;

	switch (p[*i]) {
	case '*':
		*r = (struct re_repeat){ 0, 0, true };
		break;
	case '+':
		*r = (struct re_repeat){ 1, 0, true };
		break;
	case '?':
		*r = (struct re_repeat){ 0, 1, false };
		break;
	case '{':
		r->min = interval_number(p, len, &j, &have_min);
		if (j < len && p[j] == ',') {
			comma = true;
			j++;
			r->max = interval_number(p, len, &j, &have_max);
		} else {
			r->max = r->min;
		}
		if (j >= len || p[j] != '}' || (!have_min && !comma))
			return false; /* not an interval: a literal { */
		r->unbounded = comma && !have_max;
		*i = j;
		break;
	default:
		return false;
	}
	(*i)++;
	return true;
}

/* What a part of the pattern weighs once glibc has copied out its
 * repetitions. */
struct re_weight {
	size_t size;    /* elements */
	size_t anchors; /* zero-width assertions */
};

/* One level of group nesting of the pattern being checked. */
struct re_level {
	struct re_weight w; /* so far */
	bool seq_nullable;  /* the current alternative so far can match "" */
	bool alt_nullable;  /* an earlier alternative can */
};

static bool re_too_heavy(const struct re_weight *outer, const struct re_weight *cur,
			 const char **why)
{
	if (outer->size + cur->size > REGEX_MAX_SIZE) {
		*why = "its repetitions expand to more than " REGEX_STR(REGEX_MAX_SIZE) " elements";
		return true;
	}
	if (outer->anchors + cur->anchors > REGEX_MAX_ANCHORS) {
		*why = "it has more than " REGEX_STR(REGEX_MAX_ANCHORS) " anchors and word "
		       "boundaries (^ $ \\b \\< ...) once repetitions are expanded";
		return true;
	}
	return false;
}

/*
 * Check pattern p (len bytes) against what glibc copes with, and copy it
 * to out (room for len + 1 bytes) as regcomp should see it: a ? right
 * after a repetition operator (Perl's lazy a*?, a+?, which Stalwart's
 * engine takes) is dropped. Laziness only chooses which match is found,
 * never whether there is one, and POSIX would read a+? as (a+)?, which
 * also matches the empty string. NULL when the pattern is fine, else why
 * not; *size is its expanded size.
 *
 * Refused: groups deeper than REGEX_MAX_GROUP_DEPTH, more than
 * REGEX_MAX_SIZE elements or REGEX_MAX_ANCHORS anchors once repetitions
 * are copied out, and any repetition of something that can match the
 * empty string ((a*)*, (a|)+, (b?)?, ^*): it adds nothing to what the
 * pattern matches, and such loops are what makes glibc exponential.
 */
static const char *regex_check(const char *p, size_t len, char *out, size_t *size)
{
	struct re_level levels[REGEX_MAX_GROUP_DEPTH + 1];
	struct re_level *l = &levels[0];
	struct re_weight outer = { 0, 0 }; /* all enclosing levels together */
	struct re_weight last = { 0, 0 };  /* the operand of a repetition */
	size_t depth = 0, i = 0, o = 0;
	bool have_last = false, last_nullable = false, seq_before_last = true;
	bool after_repeat = false;
	const char *why;

	*l = (struct re_level){ { 0, 0 }, true, false };
	while (i < len) {
		size_t start = i;
		struct re_repeat rep;

		if (after_repeat && p[i] == '?') {
			/* Lazy: dropped, see above. */
			after_repeat = false;
			i++;
			continue;
		}
		after_repeat = false;
		if (have_last && parse_repeat(p, len, &i, &rep)) {
			size_t copies = rep.unbounded ? rep.min + 1 : (rep.max > 1 ? rep.max : 1);

			if (last_nullable)
				return "it repeats something that can match the empty string, like "
				       "(a*)* or (a|b?)+, which adds nothing but can make glibc's "
				       "regex compiler take exponential time; repeat only what "
				       "cannot be empty";
			/* Every weight is within the limits here and copies at most
			 * REGEX_MAX_COUNT + 1: no overflow. */
			l->w.size += last.size * (copies - 1) + 1;
			l->w.anchors += last.anchors * (copies - 1);
			last.size = last.size * copies + 1;
			last.anchors *= copies;
			if (rep.min == 0) {
				last_nullable = true;
				l->seq_nullable = seq_before_last;
			}
			after_repeat = true;
		} else if (p[i] == '(') {
			if (depth == REGEX_MAX_GROUP_DEPTH)
				return "groups nest more than " REGEX_STR(REGEX_MAX_GROUP_DEPTH) " deep";
			outer.size += l->w.size;
			outer.anchors += l->w.anchors;
			l = &levels[++depth];
			*l = (struct re_level){ { 0, 0 }, true, false };
			have_last = false;
			i++;
		} else if (p[i] == ')' && depth > 0) {
			bool group_nullable = l->alt_nullable || l->seq_nullable;

			last = (struct re_weight){ l->w.size + 1, l->w.anchors };
			l = &levels[--depth];
			outer.size -= l->w.size;
			outer.anchors -= l->w.anchors;
			seq_before_last = l->seq_nullable;
			l->w.size += last.size;
			l->w.anchors += last.anchors;
			l->seq_nullable = l->seq_nullable && group_nullable;
			last_nullable = group_nullable;
			have_last = true;
			i++;
		} else if (p[i] == '|') {
			l->alt_nullable = l->alt_nullable || l->seq_nullable;
			l->seq_nullable = true;
			l->w.size++;
			have_last = false;
			i++;
		} else {
			/* One atom. Anchors and back-references may match the
			 * empty string; a repetition operator with nothing
			 * before it is taken literally. */
			bool anchor = false, nullable;

			if (p[i] == '\\') {
				anchor = i + 1 < len && strchr("bB<>`'", p[i + 1]) != NULL;
				nullable = anchor || (i + 1 < len && p[i + 1] >= '1' && p[i + 1] <= '9');
				i += i + 1 < len ? 2 : 1;
			} else if (p[i] == '[') {
				i = skip_bracket(p, len, i);
				nullable = false;
			} else {
				anchor = p[i] == '^' || p[i] == '$';
				nullable = anchor;
				i++;
			}
			seq_before_last = l->seq_nullable;
			last = (struct re_weight){ 1, anchor ? 1 : 0 };
			l->w.size++;
			l->w.anchors += last.anchors;
			l->seq_nullable = l->seq_nullable && nullable;
			last_nullable = nullable;
			have_last = true;
		}
		if (re_too_heavy(&outer, &l->w, &why))
			return why;
		memcpy(out + o, p + start, i - start);
		o += i - start;
	}
	out[o] = '\0';
	*size = outer.size + l->w.size;
	return NULL;
}

static const regex_t *compile_regex(struct compiler *c, const struct toml_value *v)
{
	const char *pat = v->u.str.ptr;
	size_t len = v->u.str.len, size = 0;
	int quote = len > REGEX_QUOTE_MAX ? REGEX_QUOTE_MAX : (int)len;
	const char *more = len > REGEX_QUOTE_MAX ? "..." : "";
	struct rule_regex *node;
	const char *why;
	char msg[256], *posix;
	int rc;

	if (memchr(pat, '\0', len) != NULL) {
		cerr(c, v->pos, "regex contains a NUL character");
		return NULL;
	}
	/* The copy regcomp compiles; the operand keeps the text as written. */
	posix = arena_alloc(c->a, len + 1);
	if (posix == NULL) {
		cerr(c, v->pos, "out of memory compiling a rule");
		return NULL;
	}
	why = regex_check(pat, len, posix, &size);
	if (why != NULL) {
		cerr(c, v->pos, "bad regex \"%.*s%s\": %s", quote, pat, more, why);
		return NULL;
	}
	if (*c->regexes == NULL) {
		*c->regexes = arena_alloc(c->a, sizeof(**c->regexes));
		if (*c->regexes == NULL) {
			cerr(c, v->pos, "out of memory compiling a rule");
			return NULL;
		}
	}
	if ((*c->regexes)->size + size > REGEX_MAX_TOTAL) {
		cerr(c, v->pos, "too many or too large regexes: together their repetitions "
		     "expand to more than %d elements", REGEX_MAX_TOTAL);
		return NULL;
	}
	node = arena_alloc(c->a, sizeof(*node));
	if (node == NULL) {
		cerr(c, v->pos, "out of memory compiling a rule");
		return NULL;
	}
	rc = regcomp(&node->re, posix, REG_EXTENDED | REG_NOSUB);
	if (rc != 0) {
		regerror(rc, &node->re, msg, sizeof(msg));
		cerr(c, v->pos, "bad regex \"%.*s%s\": %s", quote, pat, more, msg);
		return NULL;
	}
	/* Registered at once: from here on only rule_regexes_free may drop it. */
	node->next = (*c->regexes)->head;
	(*c->regexes)->head = node;
	(*c->regexes)->size += size;
	return &node->re;
}

/* Fill in the operand of a test for its variable and operator. */
static bool compile_operand(struct compiler *c, struct rule_cond *t, const struct toml_keyval *op_kv)
{
	const struct toml_value *v = op_kv->value;
	const char *s;
	size_t len;
	bool ip_var = t->var == RULE_VAR_REMOTE_IP || t->var == RULE_VAR_LOCAL_IP;

	if (t->var == RULE_VAR_PRIORITY && t->op == RULE_OP_EQ && v->type == TOML_INTEGER) {
		char num[24];
		int n = snprintf(num, sizeof(num), "%" PRId64, v->u.integer);

		t->operand_is_int = true;
		t->number = v->u.integer;
		t->operand = arena_strndup(c->a, num, (size_t)n);
		t->operand_len = (size_t)n;
		if (t->operand == NULL) {
			cerr(c, v->pos, "out of memory compiling a rule");
			return false;
		}
		return true;
	}
	if (v->type != TOML_STRING) {
		cerr(c, v->pos, "the operand of \"%s\" must be a string%s, not %s", op_kv->key,
		     t->var == RULE_VAR_PRIORITY && t->op == RULE_OP_EQ ? " or an integer" : "",
		     toml_type_name(v->type));
		return false;
	}
	s = v->u.str.ptr;
	len = v->u.str.len;
	t->operand = arena_strndup(c->a, s, len);
	t->operand_len = len;
	if (t->operand == NULL) {
		cerr(c, v->pos, "out of memory compiling a rule");
		return false;
	}

	switch (t->op) {
	case RULE_OP_EQ:
		if (ip_var && !ipprefix_parse(s, len, &t->prefix)) {
			cerr(c, v->pos, "%s compares against an IP address or CIDR prefix; "
			     "\"%s\" is neither", var_names[t->var], s);
			return false;
		}
		if (t->var == RULE_VAR_PRIORITY && !parse_int64(s, len, &t->number)) {
			cerr(c, v->pos, "priority compares as an integer; \"%s\" is not one", s);
			return false;
		}
		return true;
	case RULE_OP_STARTS_WITH:
	case RULE_OP_ENDS_WITH:
		return true;
	case RULE_OP_MATCHES:
		t->re = compile_regex(c, v);
		return t->re != NULL;
	case RULE_OP_IN_LIST:
		if (len <= 5 || memcmp(s, "list/", 5) != 0) {
			cerr(c, v->pos, "%s takes a list reference \"list/<id>\", not \"%s\"",
			     op_kv->key, s);
			return false;
		}
		t->list = cfg_lists_ref(c->lists, s, len);
		if (t->list == NULL) {
			cerr(c, v->pos, "undefined list \"%s\": no [list] entry \"%s\"", s, s + 5);
			return false;
		}
		return true;
	case RULE_OP_COUNT:
		break;
	}
	return false;
}

static const struct rule_cond *compile_test(struct compiler *c, const struct parts *p)
{
	const struct toml_value *iv = p->if_kv->value;
	struct rule_cond *t;
	int var;

	if (iv->type != TOML_STRING) {
		cerr(c, iv->pos, "`if` takes a variable name as a string, not %s",
		     toml_type_name(iv->type));
		return NULL;
	}
	var = find_var(iv->u.str.ptr, iv->u.str.len);
	if (var < 0) {
		struct strbuf sb;
		size_t dist;
		const char *best = suggest(iv->u.str.ptr, iv->u.str.len, var_names,
					   RULE_VAR_COUNT, &dist);

		strbuf_init(&sb);
		put_var_list(&sb, (1u << RULE_VAR_COUNT) - 1);
		if (best != NULL)
			cerr(c, iv->pos, "unknown variable \"%s\" (did you mean \"%s\"?); "
			     "variables: %s", iv->u.str.ptr, best, strbuf_str(&sb));
		else
			cerr(c, iv->pos, "unknown variable \"%s\"; variables: %s", iv->u.str.ptr,
			     strbuf_str(&sb));
		strbuf_free(&sb);
		return NULL;
	}
	if (!(c->allowed_vars & RULE_VAR_BIT(var))) {
		struct strbuf sb;

		strbuf_init(&sb);
		put_var_list(&sb, c->allowed_vars);
		cerr(c, iv->pos, "variable \"%s\" is not available here; allowed: %s",
		     var_names[var], strbuf_str(&sb));
		strbuf_free(&sb);
		return NULL;
	}

	t = arena_alloc(c->a, sizeof(*t));
	if (t == NULL) {
		cerr(c, iv->pos, "out of memory compiling a rule");
		return NULL;
	}
	t->kind = COND_TEST;
	t->var = (enum rule_var)var;
	t->op = op_table[p->op_index].op;
	t->negate = op_table[p->op_index].negate;
	if (!compile_operand(c, t, p->op_kv))
		return NULL;
	return t;
}

static const struct rule_cond *compile_group(struct compiler *c, const struct toml_keyval *kv,
					     enum cond_kind kind, unsigned level);

/* The condition of an entry or of a group member, already scanned. level
 * is the number of groups around it. */
static const struct rule_cond *compile_cond(struct compiler *c, const struct parts *p,
					    unsigned level)
{
	if (p->if_kv != NULL)
		return compile_test(c, p);
	return compile_group(c, p->group_kv, p->group_kind, level + 1);
}

static const struct rule_cond *compile_group(struct compiler *c, const struct toml_keyval *kv,
					     enum cond_kind kind, unsigned level)
{
	const struct toml_value *arr = kv->value;
	const struct rule_cond **children;
	struct rule_cond *g;
	bool ok = true;

	if (level > RULE_MAX_DEPTH) {
		cerr(c, kv->key_pos, "conditions nest deeper than %d groups", RULE_MAX_DEPTH);
		return NULL;
	}
	if (arr->type != TOML_ARRAY || arr->u.array.len == 0) {
		cerr(c, arr->pos, "\"%s\" takes a non-empty array of conditions such as "
		     "{ if = \"sender\", eq = \"...\" }", kv->key);
		return NULL;
	}
	g = arena_alloc(c->a, sizeof(*g));
	children = arena_grow(c->a, NULL, 0, arr->u.array.len, sizeof(*children));
	if (g == NULL || children == NULL) {
		cerr(c, arr->pos, "out of memory compiling a rule");
		return NULL;
	}
	for (size_t i = 0; i < arr->u.array.len; i++) {
		const struct toml_value *item = arr->u.array.items[i];
		struct parts p;

		if (item->type != TOML_TABLE) {
			cerr(c, item->pos, "\"%s\" holds conditions ({ if = ..., OP = ... }), not %s",
			     kv->key, toml_type_name(item->type));
			ok = false;
			continue;
		}
		scan_table(c, item, false, &p);
		if (p.bad) {
			ok = false;
			continue;
		}
		if (p.if_kv == NULL && p.group_kv == NULL) {
			cerr(c, item->pos, "empty condition in \"%s\"", kv->key);
			ok = false;
			continue;
		}
		children[i] = compile_cond(c, &p, level);
		if (children[i] == NULL)
			ok = false;
	}
	if (!ok)
		return NULL;
	g->kind = kind;
	g->children = children;
	g->n_children = arr->u.array.len;
	return g;
}

static bool parse_value(struct compiler *c, const struct toml_value *v, struct cfg_value *out)
{
	memset(out, 0, sizeof(*out));
	if (!c->parse(c->parse_ctx, v, out, c->diags)) {
		c->failed = true;
		return false;
	}
	/* A position marks a value as written; see the header comment. */
	if (out->pos.line == 0)
		out->pos = v->pos;
	return true;
}

/* An omitted then/else of a list setting: the empty list, no position. */
static bool value_omitted(const struct cfg_value *v)
{
	return v->pos.line == 0 && v->n_items == 0;
}

/* Compile one entry of a rule array into e. Returns false after errors. */
static bool compile_entry(struct compiler *c, const struct toml_value *t, struct rule_entry *e,
			  bool *is_else)
{
	struct parts p;

	*is_else = false;
	memset(e, 0, sizeof(*e));
	scan_table(c, t, true, &p);

	if (p.else_kv != NULL) {
		const struct toml_keyval *other = p.if_kv != NULL ? p.if_kv
			: p.group_kv != NULL ? p.group_kv
			: p.op_kv != NULL ? p.op_kv : p.then_kv;

		*is_else = true;
		if (other != NULL) {
			cerr(c, other->key_pos, "an else entry takes no condition and no then; "
			     "write { else = VALUE }, found \"%s\"", other->key);
			return false;
		}
		return !p.bad && parse_value(c, p.else_kv->value, &e->value);
	}
	if (p.if_kv == NULL && p.group_kv == NULL) {
		if (p.then_kv != NULL && p.op_kv == NULL) {
			cerr(c, p.then_kv->key_pos, "`then` without `if` or any-of/all-of/none-of");
			return false;
		}
		if (t->u.table.len == 0) {
			cerr(c, t->pos, "empty rule entry; write { if = ..., OP = ..., then = ... } "
			     "or { else = ... }");
			return false;
		}
		/* Only stray keys or an operator without if: already reported. */
		return false;
	}
	if (p.bad)
		return false;

	e->cond = compile_cond(c, &p, 0);
	if (p.then_kv != NULL) {
		if (!parse_value(c, p.then_kv->value, &e->value))
			return false;
	} else if (!(c->flags & RULE_LIST_VALUED)) {
		cerr(c, t->pos, "`%s` without `then`", p.if_kv != NULL ? "if" : p.group_kv->key);
		return false;
	}
	/* else: a list setting without then yields the empty list (e->value). */
	return e->cond != NULL;
}

static struct rule *compile_array(struct compiler *c, struct rule *r, const struct toml_value *arr)
{
	size_t n = arr->u.array.len;
	bool have_else = false, reported_after_else = false, ok = true;

	/* One spare slot for the implicit else of a list setting. */
	r->entries = arena_grow(c->a, NULL, 0, n + 1, sizeof(*r->entries));
	if (r->entries == NULL) {
		cerr(c, arr->pos, "out of memory compiling a rule");
		return NULL;
	}
	for (size_t i = 0; i < n; i++) {
		const struct toml_value *t = arr->u.array.items[i];
		bool is_else;

		if (have_else) {
			if (!reported_after_else)
				cerr(c, t->pos, "entry after the else entry is never used; "
				     "else must be the last entry");
			reported_after_else = true;
			ok = false;
			continue;
		}
		if (!compile_entry(c, t, &r->entries[r->n_entries], &is_else))
			ok = false;
		r->n_entries++;
		have_else = is_else;
	}
	if (!have_else) {
		if (!(c->flags & RULE_LIST_VALUED)) {
			cerr(c, arr->pos, "missing final { else = VALUE } entry: this setting needs "
			     "a value when no condition holds");
			return NULL;
		}
		/* Zeroed: the empty list, with no position (see value_omitted). */
		memset(&r->entries[r->n_entries], 0, sizeof(r->entries[0]));
		r->n_entries++;
	}
	return ok ? r : NULL;
}

struct rule *rule_compile(struct arena *a, const char *key, const struct toml_value *v,
			  uint32_t allowed_vars, bool allow_rules, unsigned flags,
			  const struct cfg_lists *lists, struct rule_regexes **regexes,
			  rule_value_parse_fn parse, void *parse_ctx, struct diags *diags)
{
	struct compiler c = {
		.a = a, .key = key != NULL ? key : "", .allowed_vars = allowed_vars,
		.flags = flags, .lists = lists, .regexes = regexes, .parse = parse,
		.parse_ctx = parse_ctx, .diags = diags,
	};
	struct rule *r;
	size_t tables = 0;

	if (v == NULL)
		return NULL;
	if (v->type == TOML_ARRAY) {
		for (size_t i = 0; i < v->u.array.len; i++)
			tables += v->u.array.items[i]->type == TOML_TABLE;
		if (tables > 0 && tables < v->u.array.len) {
			cerr(&c, v->pos, "array mixes rule entries ({ ... }) with plain values");
			return NULL;
		}
	}
	if (tables > 0 && !allow_rules) {
		cerr(&c, v->pos, "this setting takes a plain value, not rules");
		return NULL;
	}

	r = arena_alloc(a, sizeof(*r));
	if (r != NULL)
		r->key = arena_strdup(a, c.key);
	if (r == NULL || r->key == NULL) {
		cerr(&c, v->pos, "out of memory compiling a rule");
		return NULL;
	}
	if (tables == 0) {
		r->plain = true;
		r->entries = arena_alloc(a, sizeof(*r->entries));
		if (r->entries == NULL) {
			cerr(&c, v->pos, "out of memory compiling a rule");
			return NULL;
		}
		r->n_entries = 1;
		return parse_value(&c, v, &r->entries[0].value) ? r : NULL;
	}
	r = compile_array(&c, r, v);
	return c.failed ? NULL : r;
}

void rule_regexes_free(struct rule_regexes *regexes)
{
	if (regexes == NULL)
		return;
	for (struct rule_regex *n = regexes->head; n != NULL; n = n->next)
		regfree(&n->re);
	regexes->head = NULL;
}

/* ------------------------------------------------------------------ */
/* Evaluation                                                          */

static bool test_eval(const struct rule_cond *t, const struct rule_ctx *ctx)
{
	const char *s = ctx->var[t->var].ptr;
	size_t len = ctx->var[t->var].len;
	regmatch_t m[1];
	bool hit = false;

	if (s == NULL) {
		s = "";
		len = 0;
	}
	switch (t->op) {
	case RULE_OP_EQ:
		if (t->var == RULE_VAR_REMOTE_IP)
			hit = ipprefix_contains(&t->prefix, &ctx->remote_ip);
		else if (t->var == RULE_VAR_LOCAL_IP)
			hit = ipprefix_contains(&t->prefix, &ctx->local_ip);
		else if (t->var == RULE_VAR_PRIORITY)
			hit = ctx->priority == t->number;
		else
			hit = len == t->operand_len && memcmp(s, t->operand, len) == 0;
		break;
	case RULE_OP_STARTS_WITH:
		hit = len >= t->operand_len && memcmp(s, t->operand, t->operand_len) == 0;
		break;
	case RULE_OP_ENDS_WITH:
		hit = len >= t->operand_len &&
		      memcmp(s + len - t->operand_len, t->operand, t->operand_len) == 0;
		break;
	case RULE_OP_MATCHES:
		m[0].rm_so = 0;
		m[0].rm_eo = (regoff_t)(len > RULE_MATCH_MAX ? RULE_MATCH_MAX : len);
		hit = regexec(t->re, s, 1, m, REG_STARTEND) == 0;
		break;
	case RULE_OP_IN_LIST:
		hit = cfg_list_contains(t->list, s, len);
		break;
	case RULE_OP_COUNT:
		break;
	}
	return hit != t->negate;
}

/* Recursion depth is bounded by RULE_MAX_DEPTH: compile_group refuses more. */
static bool cond_eval(const struct rule_cond *c, const struct rule_ctx *ctx)
{
	switch (c->kind) {
	case COND_TEST:
		return test_eval(c, ctx);
	case COND_ANY_OF:
		for (size_t i = 0; i < c->n_children; i++)
			if (cond_eval(c->children[i], ctx))
				return true;
		return false;
	case COND_ALL_OF:
		for (size_t i = 0; i < c->n_children; i++)
			if (!cond_eval(c->children[i], ctx))
				return false;
		return true;
	case COND_NONE_OF:
		for (size_t i = 0; i < c->n_children; i++)
			if (cond_eval(c->children[i], ctx))
				return false;
		return true;
	}
	return false;
}

const struct cfg_value *rule_eval(const struct rule *r, const struct rule_ctx *ctx)
{
	static const struct cfg_value no_value = { .none = true };

	if (r == NULL || r->n_entries == 0)
		return &no_value;
	for (size_t i = 0; i + 1 < r->n_entries; i++) {
		const struct rule_entry *e = &r->entries[i];

		if (e->cond == NULL || cond_eval(e->cond, ctx))
			return &e->value;
	}
	return &r->entries[r->n_entries - 1].value;
}

/* ------------------------------------------------------------------ */
/* Dump                                                                */

/* The keys of a condition, without braces: `if = "v", eq = "x"` or
 * `any-of = [{ ... }, ...]`. */
static void dump_cond(const struct rule_cond *c, struct strbuf *out)
{
	if (c->kind == COND_TEST) {
		strbuf_puts(out, "if = ");
		strbuf_put_quoted(out, var_names[c->var], strlen(var_names[c->var]));
		strbuf_printf(out, ", %s = ", op_dump_names[c->op][c->negate]);
		if (c->operand_is_int)
			strbuf_printf(out, "%" PRId64, c->number);
		else
			strbuf_put_quoted(out, c->operand, c->operand_len);
		return;
	}
	strbuf_printf(out, "%s = [", group_names[c->kind]);
	for (size_t i = 0; i < c->n_children; i++) {
		strbuf_puts(out, i > 0 ? ", { " : "{ ");
		dump_cond(c->children[i], out);
		strbuf_puts(out, " }");
	}
	strbuf_putc(out, ']');
}

void rule_dump(const struct rule *r, struct strbuf *out, rule_value_dump_fn dump, void *dump_ctx)
{
	bool first = true;

	if (r == NULL || r->n_entries == 0)
		return;
	if (r->plain) {
		dump(dump_ctx, &r->entries[r->n_entries - 1].value, out);
		return;
	}
	strbuf_putc(out, '[');
	for (size_t i = 0; i < r->n_entries; i++) {
		const struct rule_entry *e = &r->entries[i];
		bool omitted = value_omitted(&e->value);

		/* The implicit else of a list setting was not written. */
		if (e->cond == NULL && omitted)
			continue;
		strbuf_puts(out, first ? "{ " : ", { ");
		first = false;
		if (e->cond != NULL) {
			dump_cond(e->cond, out);
			if (!omitted) {
				strbuf_puts(out, ", then = ");
				dump(dump_ctx, &e->value, out);
			}
		} else {
			strbuf_puts(out, "else = ");
			dump(dump_ctx, &e->value, out);
		}
		strbuf_puts(out, " }");
	}
	strbuf_putc(out, ']');
}
