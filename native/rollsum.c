/* rollsum.c -- rsync rolling checksum (see rollsum.h for the definition). */
#include "rollsum.h"

void cs_rollsum_init(cs_rollsum *sum)
{
    sum->count = 0;
    sum->s1 = 0;
    sum->s2 = 0;
}

/* Append bytes to the window. The per-byte offset is added in closed form
 * after the loop so the loop itself is two adds per byte (four-way unrolled:
 * s2 gains 4*s1 plus the bytes weighted 4,3,2,1). */
void cs_rollsum_update(cs_rollsum *sum, const uint8_t *buf, size_t len)
{
    uint32_t s1 = sum->s1, s2 = sum->s2;
    size_t i = 0;
    for (; i + 4 <= len; i += 4) {
        uint32_t b0 = buf[i], b1 = buf[i + 1], b2 = buf[i + 2], b3 = buf[i + 3];
        s2 += 4 * s1 + 4 * b0 + 3 * b1 + 2 * b2 + b3;
        s1 += b0 + b1 + b2 + b3;
    }
    for (; i < len; i++) {
        s1 += buf[i];
        s2 += s1;
    }
    /* Offset contribution: s1 += 31*len, s2 += 31*len*(len+1)/2.  Only the low
     * 16 bits matter, so compute the triangle number modulo 2^32 without
     * overflowing: halve whichever factor is even first. */
    uint32_t n = (uint32_t)len;
    uint32_t tri = (len % 2 == 0) ? (uint32_t)(len / 2) * (n + 1u) : n * (uint32_t)((len + 1) / 2);
    sum->s1 = s1 + CS_ROLLSUM_CHAR_OFFSET * n;
    sum->s2 = s2 + CS_ROLLSUM_CHAR_OFFSET * tri;
    sum->count += len;
}

void cs_rollsum_rotate(cs_rollsum *sum, uint8_t out, uint8_t in)
{
    cs_rollsum_rotate_inline(sum, out, in);
}

void cs_rollsum_rollin(cs_rollsum *sum, uint8_t in)
{
    sum->s1 += (uint32_t)in + CS_ROLLSUM_CHAR_OFFSET;
    sum->s2 += sum->s1;
    sum->count++;
}

/* Drop the first byte of the window (the window shrinks by one). */
void cs_rollsum_rollout(cs_rollsum *sum, uint8_t out)
{
    uint32_t v = (uint32_t)out + CS_ROLLSUM_CHAR_OFFSET;
    sum->s1 -= v;
    sum->s2 -= (uint32_t)sum->count * v;
    sum->count--;
}

/* n rotations in one call: outs[i] leaves as ins[i] enters. */
void cs_rollsum_roll(cs_rollsum *sum, const uint8_t *outs, const uint8_t *ins, size_t n)
{
    uint32_t s1 = sum->s1, s2 = sum->s2;
    const uint32_t w = (uint32_t)sum->count;
    const uint32_t woff = w * CS_ROLLSUM_CHAR_OFFSET;
    for (size_t i = 0; i < n; i++) {
        s1 += (uint32_t)ins[i] - (uint32_t)outs[i];
        s2 += s1 - w * (uint32_t)outs[i] - woff;
    }
    sum->s1 = s1;
    sum->s2 = s2;
}

uint32_t cs_rollsum_digest(const cs_rollsum *sum)
{
    return cs_rollsum_digest_inline(sum);
}

uint32_t cs_rollsum_oneshot(const uint8_t *buf, size_t len)
{
    cs_rollsum sum;
    cs_rollsum_init(&sum);
    cs_rollsum_update(&sum, buf, len);
    return cs_rollsum_digest(&sum);
}
