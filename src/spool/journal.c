/*
 * journal.c - encoding and decoding of the spool's on-disk format, and the
 * CRC that guards it; see journal.h for the layout.
 *
 * Pure functions: no I/O, no state besides the CRC tables (and whether
 * the CPU computes CRC32C itself). Every decoder
 * checks each length against what is left before reading or allocating,
 * and rejects unknown types, states and versions rather than guessing.
 */
#include "spool/journal.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>

#define CRC32C_POLY 0x82f63b78u /* Castagnoli, bit-reversed */
#define STR_ABSENT  0xffffffffu
/* Smallest encoded recipient: two empty strings and the fixed fields. */
#define RCPT_MIN_SIZE (4u + 4u + 1u + 1u + 2u + 8u)

static const unsigned char seg_magic[8] = { 'T', 'E', 'R', 'N', 'S', 'P', 'L', '1' };

static uint32_t crc_table[8][256];
static bool crc_hw;
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;

		for (int k = 0; k < 8; k++)
			c = (c & 1) ? (c >> 1) ^ CRC32C_POLY : c >> 1;
		crc_table[0][i] = c;
	}
	for (uint32_t i = 0; i < 256; i++)
		for (int k = 1; k < 8; k++)
			crc_table[k][i] = (crc_table[k - 1][i] >> 8) ^
					  crc_table[0][crc_table[k - 1][i] & 0xff];
#if defined(__x86_64__) && defined(__GNUC__)
	__builtin_cpu_init();
	crc_hw = __builtin_cpu_supports("sse4.2");
#endif
}

uint32_t journal_crc32c_sw(uint32_t crc, const void *data, size_t len)
{
	const unsigned char *p = data;

	pthread_once(&crc_once, crc_init);
	crc = ~crc;
	while (len >= 8) {
		uint32_t lo = crc ^ journal_get_u32(p);
		uint32_t hi = journal_get_u32(p + 4);

		crc = crc_table[7][lo & 0xff] ^ crc_table[6][(lo >> 8) & 0xff] ^
		      crc_table[5][(lo >> 16) & 0xff] ^ crc_table[4][lo >> 24] ^
		      crc_table[3][hi & 0xff] ^ crc_table[2][(hi >> 8) & 0xff] ^
		      crc_table[1][(hi >> 16) & 0xff] ^ crc_table[0][hi >> 24];
		p += 8;
		len -= 8;
	}
	while (len-- > 0)
		crc = crc_table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return ~crc;
}

#if defined(__x86_64__) && defined(__GNUC__)
/* The SSE4.2 instruction computes the same CRC about four times as fast
 * as the tables: it matters for big bodies, which are checksummed on the
 * event loop. x86 is little-endian, as the memcpy'd words must be. */
__attribute__((target("sse4.2")))
static uint32_t crc32c_hw(uint32_t crc, const unsigned char *p, size_t len)
{
	uint64_t c = ~crc;

	while (len >= 8) {
		uint64_t w;

		memcpy(&w, p, sizeof(w));
		c = __builtin_ia32_crc32di(c, w);
		p += 8;
		len -= 8;
	}
	while (len-- > 0)
		c = __builtin_ia32_crc32qi((uint32_t)c, *p++);
	return ~(uint32_t)c;
}
#endif

uint32_t journal_crc32c(uint32_t crc, const void *data, size_t len)
{
	pthread_once(&crc_once, crc_init);
#if defined(__x86_64__) && defined(__GNUC__)
	if (crc_hw)
		return crc32c_hw(crc, data, len);
#endif
	return journal_crc32c_sw(crc, data, len);
}

/* ---- fixed-width little-endian integers ---- */

void journal_put_u32(unsigned char *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

uint32_t journal_get_u32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

static void put_u16(unsigned char *p, uint16_t v)
{
	p[0] = (unsigned char)v;
	p[1] = (unsigned char)(v >> 8);
}

static uint16_t get_u16(const unsigned char *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static void put_u64(unsigned char *p, uint64_t v)
{
	journal_put_u32(p, (uint32_t)v);
	journal_put_u32(p + 4, (uint32_t)(v >> 32));
}

static uint64_t get_u64(const unsigned char *p)
{
	return (uint64_t)journal_get_u32(p) | (uint64_t)journal_get_u32(p + 4) << 32;
}

/* ---- headers ---- */

void journal_seg_hdr_encode(unsigned char out[JOURNAL_SEG_HDR_SIZE],
			    const struct journal_seg_hdr *h)
{
	memcpy(out, seg_magic, sizeof(seg_magic));
	journal_put_u32(out + 8, JOURNAL_VERSION);
	journal_put_u32(out + 12, h->no);
	put_u64(out + 16, h->id_floor);
	journal_put_u32(out + 24, h->salt);
	journal_put_u32(out + 28, journal_crc32c(0, out, 28));
}

bool journal_seg_hdr_decode(const unsigned char in[JOURNAL_SEG_HDR_SIZE],
			    struct journal_seg_hdr *h)
{
	if (memcmp(in, seg_magic, sizeof(seg_magic)) != 0 ||
	    journal_get_u32(in + 8) != JOURNAL_VERSION ||
	    journal_get_u32(in + 28) != journal_crc32c(0, in, 28))
		return false;
	h->no = journal_get_u32(in + 12);
	h->id_floor = get_u64(in + 16);
	h->salt = journal_get_u32(in + 24);
	return true;
}

void journal_rec_hdr_encode(unsigned char out[JOURNAL_REC_HDR_SIZE], uint32_t salt,
			    const struct journal_rec_hdr *h)
{
	journal_put_u32(out, JOURNAL_REC_MAGIC);
	out[4] = h->type;
	out[5] = 0;
	put_u16(out + 6, 0);
	journal_put_u32(out + 8, h->len);
	put_u64(out + 12, h->id);
	journal_put_u32(out + 20, journal_crc32c(salt, out, 20));
}

bool journal_rec_hdr_decode(const unsigned char in[JOURNAL_REC_HDR_SIZE], uint32_t salt,
			    struct journal_rec_hdr *h)
{
	if (journal_get_u32(in) != JOURNAL_REC_MAGIC ||
	    journal_get_u32(in + 20) != journal_crc32c(salt, in, 20) ||
	    in[5] != 0 || get_u16(in + 6) != 0)
		return false;
	h->type = in[4];
	h->len = journal_get_u32(in + 8);
	h->id = get_u64(in + 12);
	switch (h->type) {
	case JOURNAL_MESSAGE:
		return h->len >= 4 && h->len <= JOURNAL_PAYLOAD_MAX;
	case JOURNAL_RCPT:
		return h->len == JOURNAL_RCPT_PAYLOAD;
	case JOURNAL_DONE:
		return h->len == 0;
	default:
		return false;
	}
}

/* ---- envelope ---- */

static void sb_u8(struct strbuf *sb, uint8_t v)
{
	strbuf_append(sb, (const char *)&v, 1);
}

static void sb_u16(struct strbuf *sb, uint16_t v)
{
	unsigned char b[2];

	put_u16(b, v);
	strbuf_append(sb, (const char *)b, sizeof(b));
}

static void sb_u32(struct strbuf *sb, uint32_t v)
{
	unsigned char b[4];

	journal_put_u32(b, v);
	strbuf_append(sb, (const char *)b, sizeof(b));
}

static void sb_u64(struct strbuf *sb, uint64_t v)
{
	unsigned char b[8];

	put_u64(b, v);
	strbuf_append(sb, (const char *)b, sizeof(b));
}

/* Returns false, appending nothing, for a string longer than an envelope
 * may be. */
static bool sb_str(struct strbuf *sb, const char *s, size_t len)
{
	if (s == NULL) {
		sb_u32(sb, STR_ABSENT);
		return true;
	}
	if (len > JOURNAL_ENV_MAX)
		return false;
	sb_u32(sb, (uint32_t)len);
	strbuf_append(sb, s, len);
	return true;
}

bool journal_env_encode(struct strbuf *sb, const struct message *m)
{
	bool ok;

	if (m->n_rcpts > JOURNAL_ENV_MAX / RCPT_MIN_SIZE)
		return false;
	sb_u8(sb, JOURNAL_ENV_VERSION);
	sb_u8(sb, m->ret);
	sb_u8(sb, m->body_type);
	sb_u8(sb, (uint8_t)((m->smtputf8 ? 1u : 0u) | (m->requiretls ? 2u : 0u)));
	sb_u64(sb, (uint64_t)m->arrival_ms);
	ok = sb_str(sb, m->sender != NULL ? m->sender : "", m->sender != NULL ? strlen(m->sender) : 0);
	ok = ok && sb_str(sb, m->envid, m->envid != NULL ? strlen(m->envid) : 0);
	sb_u32(sb, (uint32_t)m->n_rcpts);
	for (size_t i = 0; ok && i < m->n_rcpts; i++) {
		const struct rcpt *r = &m->rcpts[i];

		ok = sb_str(sb, r->addr, r->addr_len) &&
		     sb_str(sb, r->orcpt, r->orcpt != NULL ? strlen(r->orcpt) : 0);
		sb_u8(sb, r->notify);
		sb_u8(sb, r->state);
		sb_u8(sb, r->flags);
		sb_u16(sb, r->attempts);
		sb_u64(sb, (uint64_t)r->next_try_ms);
	}
	return ok;
}

struct cursor {
	const unsigned char *p;
	size_t left;
	bool bad;
};

static const unsigned char *take(struct cursor *c, size_t n)
{
	const unsigned char *p = c->p;

	if (c->bad || n > c->left) {
		c->bad = true;
		return NULL;
	}
	c->p += n;
	c->left -= n;
	return p;
}

static uint8_t take_u8(struct cursor *c)
{
	const unsigned char *p = take(c, 1);

	return p != NULL ? p[0] : 0;
}

static uint16_t take_u16(struct cursor *c)
{
	const unsigned char *p = take(c, 2);

	return p != NULL ? get_u16(p) : 0;
}

static uint32_t take_u32(struct cursor *c)
{
	const unsigned char *p = take(c, 4);

	return p != NULL ? journal_get_u32(p) : 0;
}

static uint64_t take_u64(struct cursor *c)
{
	const unsigned char *p = take(c, 8);

	return p != NULL ? get_u64(p) : 0;
}

/* A string field: *s points into the input (not NUL-terminated), NULL when
 * absent. */
static void take_str(struct cursor *c, const char **s, size_t *len)
{
	uint32_t n = take_u32(c);

	*s = NULL;
	*len = 0;
	if (c->bad || n == STR_ABSENT)
		return;
	*s = (const char *)take(c, n);
	*len = *s != NULL ? n : 0;
}

/* The same for a field kept as a C string (sender, envid, orcpt): a NUL
 * inside could not have been encoded, and would cut the field short if it
 * were ever written again. */
static void take_cstr(struct cursor *c, const char **s, size_t *len)
{
	take_str(c, s, len);
	if (*s != NULL && memchr(*s, '\0', *len) != NULL) {
		c->bad = true;
		*s = NULL;
	}
}

static struct message *decode_fail(struct message *m, int err)
{
	message_free(m);
	errno = err;
	return NULL;
}

struct message *journal_env_decode(const unsigned char *p, size_t len)
{
	struct cursor c = { p, len, false };
	struct message *m;
	const char *s;
	size_t slen;
	uint8_t version, ret, body_type, flags;
	int64_t arrival;
	uint32_t n;

	version = take_u8(&c);
	ret = take_u8(&c);
	body_type = take_u8(&c);
	flags = take_u8(&c);
	arrival = (int64_t)take_u64(&c);
	take_cstr(&c, &s, &slen);
	if (c.bad || s == NULL || version < 1 || version > JOURNAL_ENV_VERSION || ret > MSG_RET_HDRS ||
	    body_type > MSG_BODY_BINARYMIME || (flags & ~3u) != 0)
		return decode_fail(NULL, EINVAL);
	m = message_new(s, slen);
	if (m == NULL)
		return decode_fail(NULL, ENOMEM);
	m->ret = ret;
	m->body_type = body_type;
	m->smtputf8 = (flags & 1u) != 0;
	m->requiretls = (flags & 2u) != 0;
	m->arrival_ms = arrival;
	take_cstr(&c, &s, &slen);
	if (c.bad)
		return decode_fail(m, EINVAL);
	if (s != NULL && !message_set_string(&m->envid, s, slen))
		return decode_fail(m, ENOMEM);
	n = take_u32(&c);
	/* Check the count against the bytes left before allocating for it. */
	if (c.bad || n > c.left / RCPT_MIN_SIZE)
		return decode_fail(m, EINVAL);
	for (uint32_t i = 0; i < n; i++) {
		struct rcpt *r;

		take_cstr(&c, &s, &slen); /* recipients are C strings too */
		if (s == NULL)
			return decode_fail(m, EINVAL);
		r = message_add_rcpt(m, s, slen);
		if (r == NULL)
			return decode_fail(m, ENOMEM);
		take_cstr(&c, &s, &slen);
		if (c.bad)
			return decode_fail(m, EINVAL);
		if (s != NULL && !message_set_string(&r->orcpt, s, slen))
			return decode_fail(m, ENOMEM);
		r->notify = take_u8(&c);
		r->state = take_u8(&c);
		r->flags = version >= 2 ? take_u8(&c) : 0;
		r->attempts = take_u16(&c);
		r->next_try_ms = (int64_t)take_u64(&c);
		if (c.bad || r->state > RCPT_FAILED || (r->notify & ~0xfu) != 0 ||
		    (r->flags & RCPT_F_KNOWN & ~(RCPT_F_HELD | RCPT_F_DSN_OWED)) != 0)
			return decode_fail(m, EINVAL);
	}
	if (c.bad || c.left != 0)
		return decode_fail(m, EINVAL);
	return m;
}

/* ---- recipient updates ---- */

void journal_rcpt_encode(unsigned char out[JOURNAL_RCPT_PAYLOAD],
			 const struct journal_rcpt_update *u)
{
	journal_put_u32(out, u->index);
	out[4] = u->state;
	out[5] = u->flags;
	put_u16(out + 6, u->attempts);
	put_u64(out + 8, (uint64_t)u->next_try_ms);
}

bool journal_rcpt_decode(const unsigned char in[JOURNAL_RCPT_PAYLOAD],
			 struct journal_rcpt_update *u)
{
	u->index = journal_get_u32(in);
	u->state = in[4];
	u->flags = in[5];
	u->attempts = get_u16(in + 6);
	u->next_try_ms = (int64_t)get_u64(in + 8);
	return u->state <= RCPT_FAILED &&
	       (u->flags & RCPT_F_KNOWN & ~(RCPT_F_HELD | RCPT_F_DSN_OWED)) == 0;
}
