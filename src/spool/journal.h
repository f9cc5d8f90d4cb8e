/*
 * journal.h - the spool's on-disk format (private to src/spool).
 *
 * A spool directory holds segment files seg-NNNNNNNN.log (decimal,
 * numbered from 1, never reused) and a lock file. Every integer on disk is
 * little-endian and written byte by byte: no struct is ever written or
 * read whole.
 *
 * Segment header (32 bytes):
 *     0  "TERNSPL1"
 *     8  u32 format version (1)
 *    12  u32 segment number (must match the file name)
 *    16  u64 id floor: the next message id when the segment was created,
 *            so ids stay monotonic after every message is gone
 *    24  u32 salt: random, seeds every CRC in the segment
 *    28  u32 CRC32C of bytes 0..27 (seed 0)
 *
 * Then records, back to back:
 *     0  u32 magic JOURNAL_REC_MAGIC
 *     4  u8 type (enum journal_rec_type), u8 0, u16 0
 *     8  u32 payload length
 *    12  u64 message id
 *    20  u32 CRC32C of bytes 0..19, seeded with the salt
 *    24  payload
 *     .  u32 CRC32C of header and payload, seeded with the salt
 *
 * Payloads:
 *   MESSAGE  u32 envelope length, envelope, body (the rest of the payload)
 *            envelope: u8 version (1), u8 ret, u8 body type, u8 flags
 *            (bit 0 SMTPUTF8, bit 1 REQUIRETLS), i64 arrival ms,
 *            str sender, str envid, u32 recipient count, then for each:
 *            str addr, str orcpt, u8 notify, u8 state, (version 2: u8
 *            flags,) u16 attempts, i64 next try ms.  str = u32 length + bytes, or length
 *            0xffffffff and no bytes for "absent" (NULL).
 *   RCPT     u32 recipient index, u8 state, u8 flags, u16 attempts,
 *            i64 next try ms (16 bytes)
 *   DONE     empty
 *
 * The salt makes a record embedded in a message body (which a sender
 * controls) fail its CRC should a corrupt length ever make recovery scan
 * through body bytes looking for the next record.
 */
#ifndef TERN_SPOOL_JOURNAL_H
#define TERN_SPOOL_JOURNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "queue/message.h"
#include "util/strbuf.h"

#define JOURNAL_SEG_HDR_SIZE 32u
#define JOURNAL_REC_HDR_SIZE 24u
#define JOURNAL_REC_TRAILER  4u
#define JOURNAL_REC_OVERHEAD (JOURNAL_REC_HDR_SIZE + JOURNAL_REC_TRAILER)
#define JOURNAL_REC_MAGIC    0x4d52547eu /* "~TRM" */
#define JOURNAL_VERSION      1u
/* Envelope versions: 1 has no recipient flags, 2 adds a u8 after state. */
#define JOURNAL_ENV_VERSION  2u

/* Bounds checked on write and on read: a corrupt length can never cause
 * an allocation or a read larger than this. */
#define JOURNAL_BODY_MAX     (64u << 20)
#define JOURNAL_ENV_MAX      (16u << 20)
#define JOURNAL_PAYLOAD_MAX  (4u + JOURNAL_ENV_MAX + JOURNAL_BODY_MAX)
#define JOURNAL_RCPT_PAYLOAD 16u

enum journal_rec_type {
	JOURNAL_MESSAGE = 1,
	JOURNAL_RCPT = 2,
	JOURNAL_DONE = 3,
};

struct journal_seg_hdr {
	uint32_t no;
	uint64_t id_floor;
	uint32_t salt;
};

struct journal_rec_hdr {
	uint8_t type;
	uint32_t len; /* payload bytes */
	uint64_t id;
};

struct journal_rcpt_update {
	uint32_t index;
	uint8_t state;
	uint8_t flags;
	uint16_t attempts;
	int64_t next_try_ms;
};

/* CRC32C (Castagnoli). crc32c(crc32c(s, a), b) equals the CRC of a
 * followed by b; the seed of a new computation is the salt. Uses the
 * CPU's CRC32C instruction when it has one, else journal_crc32c_sw, the
 * portable table-driven (slice-by-8) version, which gives the same. */
uint32_t journal_crc32c(uint32_t crc, const void *data, size_t len);
uint32_t journal_crc32c_sw(uint32_t crc, const void *data, size_t len);

void journal_seg_hdr_encode(unsigned char out[JOURNAL_SEG_HDR_SIZE],
			    const struct journal_seg_hdr *h);
/* False when the magic, version or CRC is wrong. */
bool journal_seg_hdr_decode(const unsigned char in[JOURNAL_SEG_HDR_SIZE],
			    struct journal_seg_hdr *h);

void journal_rec_hdr_encode(unsigned char out[JOURNAL_REC_HDR_SIZE], uint32_t salt,
			    const struct journal_rec_hdr *h);
/* False unless magic, header CRC, type and payload bound (per type) are
 * all right. */
bool journal_rec_hdr_decode(const unsigned char in[JOURNAL_REC_HDR_SIZE], uint32_t salt,
			    struct journal_rec_hdr *h);

/* Append the envelope of m (state of every recipient as it is in m).
 * False when a field is too long to encode (the caller also checks the
 * total against JOURNAL_ENV_MAX); an allocation failure is left in sb. */
bool journal_env_encode(struct strbuf *sb, const struct message *m);
/* A new message from an envelope of exactly len bytes, or NULL with errno
 * EINVAL (malformed) or ENOMEM. Sets no spool or id field. */
struct message *journal_env_decode(const unsigned char *p, size_t len);

void journal_rcpt_encode(unsigned char out[JOURNAL_RCPT_PAYLOAD],
			 const struct journal_rcpt_update *u);
/* False when the state is not a known one. */
bool journal_rcpt_decode(const unsigned char in[JOURNAL_RCPT_PAYLOAD],
			 struct journal_rcpt_update *u);

void journal_put_u32(unsigned char *p, uint32_t v);
uint32_t journal_get_u32(const unsigned char *p);

#endif
