/* rollsum.h -- rsync's rolling checksum as librsync computes it.
 *
 * For a window b[0..n-1]:  s1 = sum(b[i] + 31),  s2 = sum((n - i) * (b[i] + 31)),
 * both modulo 2^16, digest = (s2 << 16) | s1.  There is no modulus prime and s1
 * starts at 0 (zlib's Adler-32 starts at 1 and uses 65521).  The sums are kept
 * in 32-bit words that wrap freely: only their low 16 bits are meaningful, and
 * modular arithmetic makes masking unnecessary until the digest.
 */
#ifndef CS_ROLLSUM_H
#define CS_ROLLSUM_H

#include <stddef.h>
#include <stdint.h>

/* Added to every byte so that runs of zero bytes still move the sums
 * (librsync's ROLLSUM_CHAR_OFFSET). */
#define CS_ROLLSUM_CHAR_OFFSET 31u

typedef struct cs_rollsum {
    uint64_t count; /* number of bytes in the window */
    uint32_t s1;    /* sum of (byte + offset); low 16 bits significant */
    uint32_t s2;    /* sum of the running s1 values; low 16 bits significant */
} cs_rollsum;

void cs_rollsum_init(cs_rollsum *sum);
void cs_rollsum_update(cs_rollsum *sum, const uint8_t *buf, size_t len);
void cs_rollsum_rotate(cs_rollsum *sum, uint8_t out, uint8_t in);
void cs_rollsum_rollin(cs_rollsum *sum, uint8_t in);
void cs_rollsum_rollout(cs_rollsum *sum, uint8_t out);
void cs_rollsum_roll(cs_rollsum *sum, const uint8_t *outs, const uint8_t *ins, size_t n);
uint32_t cs_rollsum_digest(const cs_rollsum *sum);
uint32_t cs_rollsum_oneshot(const uint8_t *buf, size_t len);

/* Slide the window one byte: drop `out` from the front, append `in`. */
static inline void cs_rollsum_rotate_inline(cs_rollsum *sum, uint8_t out, uint8_t in)
{
    sum->s1 += (uint32_t)in - (uint32_t)out;
    sum->s2 += sum->s1 - (uint32_t)sum->count * ((uint32_t)out + CS_ROLLSUM_CHAR_OFFSET);
}

static inline uint32_t cs_rollsum_digest_inline(const cs_rollsum *sum)
{
    return (sum->s2 << 16) | (sum->s1 & 0xffffu);
}

#endif
