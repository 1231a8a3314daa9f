/* rsync_format.h -- constants and helpers of librsync's signature and delta formats.
 *
 * Both formats are big-endian throughout.  A signature is a 12-byte header
 * (magic, block_len, strong_len) followed by one record per basis block:
 * the 32-bit weak sum then the first strong_len bytes of the strong hash.
 * A delta is its magic followed by commands (an opcode byte and big-endian
 * parameters), ending with the END opcode.  Values from librsync 2.3.2
 * (src/librsync.h, src/prototab.h) and checked against rdiff output.
 */
#ifndef CS_RSYNC_FORMAT_H
#define CS_RSYNC_FORMAT_H

#include <stddef.h>
#include <stdint.h>

#include "cs_status.h"

#define CS_MAGIC_DELTA 0x72730236u       /* "rs\x026": the only delta format */
#define CS_MAGIC_MD4_SIG 0x72730136u     /* rollsum + MD4 */
#define CS_MAGIC_BLAKE2_SIG 0x72730137u  /* rollsum + BLAKE2b */
#define CS_MAGIC_RK_MD4_SIG 0x72730146u  /* Rabin-Karp + MD4 */
#define CS_MAGIC_RK_BLAKE2_SIG 0x72730147u /* Rabin-Karp + BLAKE2b (rdiff's default) */

#define CS_SIG_HEADER_LEN 12
#define CS_MD4_SUM_LEN 16    /* whole MD4 digest */
#define CS_BLAKE2_SUM_LEN 32 /* librsync hashes blocks with BLAKE2b-256 */
#define CS_MAX_STRONG_LEN 32

/* Largest block length accepted anywhere.  rdiff's sqrt rule reaches it only
 * for 256 TiB files; the cap keeps a hostile header from forcing a huge
 * window buffer. */
#define CS_MAX_BLOCK_LEN (1u << 24)

/* Delta opcodes (librsync prototab). */
#define CS_OP_END 0x00
#define CS_OP_LITERAL_1 0x01   /* 0x01..0x40: literal of that many bytes */
#define CS_OP_LITERAL_64 0x40
#define CS_OP_LITERAL_N1 0x41  /* 0x41..0x44: literal, length in 1/2/4/8 bytes */
#define CS_OP_LITERAL_N8 0x44
#define CS_OP_COPY_N1_N1 0x45  /* 0x45..0x54: copy, 0x45 + 4*i(pos width) + i(len width) */
#define CS_OP_COPY_N8_N8 0x54

/* The delta encoder cuts literal runs into pieces of this many bytes, as
 * librsync does, so one command never needs more buffering than this. */
#define CS_LITERAL_FLUSH 32768u

typedef enum cs_weak_kind { CS_WEAK_ROLLSUM = 0, CS_WEAK_RABINKARP = 1 } cs_weak_kind;
typedef enum cs_strong_kind { CS_STRONG_MD4 = 0, CS_STRONG_BLAKE2 = 1 } cs_strong_kind;

/* Which sums a signature magic selects; CS_ERR_MAGIC if it is not one. */
cs_status cs_sig_magic_kinds(uint32_t magic, cs_weak_kind *weak, cs_strong_kind *strong);
/* Check a signature's header values: a known magic (else CS_ERR_MAGIC),
 * 1 <= block_len <= CS_MAX_BLOCK_LEN and 1 <= strong_len <= the strong hash's
 * length (else CS_ERR_PARAM).  On CS_OK *weak and *strong are the sums the
 * magic selects. */
cs_status cs_sig_check(uint32_t magic, uint32_t block_len, uint32_t strong_len,
                       cs_weak_kind *weak, cs_strong_kind *strong);
/* Longest strong sum a signature with this hash can carry (16 or 32). */
uint32_t cs_strong_max(cs_strong_kind strong);
/* Weak sum of a whole block. */
uint32_t cs_weak_block(cs_weak_kind weak, const uint8_t *buf, size_t len);
/* Full strong hash of a block into out (16 or 32 bytes written). */
void cs_strong_block(cs_strong_kind strong, const uint8_t *buf, size_t len,
                     uint8_t out[CS_MAX_STRONG_LEN]);

static inline void cs_put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static inline uint32_t cs_get_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

#endif
