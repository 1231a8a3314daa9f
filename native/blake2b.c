/* blake2b.c -- BLAKE2b per RFC 7693, written for speed in portable C99:
 * message words are loaded once per block and the twelve rounds are unrolled
 * by macro (blake2b_rounds.h, shared with the four-lane code) so every sigma
 * index is a compile-time constant. */
#include <string.h>

#include "blake2b.h"
#include "blake2b_rounds.h"

static inline void store64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void compress(uint64_t h[8], const uint8_t *block, uint64_t t0, uint64_t t1, int last)
{
    uint64_t m[16];
    for (int i = 0; i < 16; i++)
        m[i] = cs_load64_le(block + 8 * i);

    uint64_t v0 = h[0], v1 = h[1], v2 = h[2], v3 = h[3];
    uint64_t v4 = h[4], v5 = h[5], v6 = h[6], v7 = h[7];
    uint64_t v8 = cs_blake2b_iv[0], v9 = cs_blake2b_iv[1];
    uint64_t v10 = cs_blake2b_iv[2], v11 = cs_blake2b_iv[3];
    uint64_t v12 = cs_blake2b_iv[4] ^ t0, v13 = cs_blake2b_iv[5] ^ t1;
    uint64_t v14 = last ? ~cs_blake2b_iv[6] : cs_blake2b_iv[6], v15 = cs_blake2b_iv[7];

    CS_B2B_ROUNDS();
    CS_B2B_FEED_FORWARD(h);
}

static inline void add_counter(cs_blake2b *S, uint64_t inc)
{
    S->t[0] += inc;
    if (S->t[0] < inc)
        S->t[1]++;
}

cs_status cs_blake2b_init(cs_blake2b *S, size_t outlen)
{
    if (outlen < 1 || outlen > CS_BLAKE2B_OUTBYTES)
        return CS_ERR_PARAM;
    for (int i = 0; i < 8; i++)
        S->h[i] = cs_blake2b_iv[i];
    /* Parameter block word 0: digest length, key length 0, fanout 1, depth 1. */
    S->h[0] ^= 0x01010000ULL | (uint64_t)outlen;
    S->t[0] = S->t[1] = 0;
    S->buflen = 0;
    S->outlen = outlen;
    return CS_OK;
}

void cs_blake2b_update(cs_blake2b *S, const uint8_t *in, size_t inlen)
{
    if (inlen == 0)
        return;
    size_t fill = CS_BLAKE2B_BLOCKBYTES - S->buflen;
    if (inlen > fill) {
        /* Complete and compress the pending block: more input follows it. */
        memcpy(S->buf + S->buflen, in, fill);
        add_counter(S, CS_BLAKE2B_BLOCKBYTES);
        compress(S->h, S->buf, S->t[0], S->t[1], 0);
        S->buflen = 0;
        in += fill;
        inlen -= fill;
        /* Whole blocks straight from the input, keeping at least one byte back. */
        while (inlen > CS_BLAKE2B_BLOCKBYTES) {
            add_counter(S, CS_BLAKE2B_BLOCKBYTES);
            compress(S->h, in, S->t[0], S->t[1], 0);
            in += CS_BLAKE2B_BLOCKBYTES;
            inlen -= CS_BLAKE2B_BLOCKBYTES;
        }
    }
    memcpy(S->buf + S->buflen, in, inlen);
    S->buflen += inlen;
}

void cs_blake2b_final(const cs_blake2b *S, uint8_t *out)
{
    uint64_t h[8];
    uint8_t block[CS_BLAKE2B_BLOCKBYTES];
    uint8_t full[CS_BLAKE2B_OUTBYTES];
    uint64_t t0 = S->t[0] + S->buflen;
    uint64_t t1 = S->t[1] + (t0 < S->t[0]);

    memcpy(h, S->h, sizeof h);
    memcpy(block, S->buf, S->buflen);
    memset(block + S->buflen, 0, CS_BLAKE2B_BLOCKBYTES - S->buflen);
    compress(h, block, t0, t1, 1);
    for (int i = 0; i < 8; i++)
        store64(full + 8 * i, h[i]);
    memcpy(out, full, S->outlen);
}

cs_status cs_blake2b_oneshot(uint8_t *out, size_t outlen, const uint8_t *in, size_t inlen)
{
    cs_blake2b S;
    cs_status st = cs_blake2b_init(&S, outlen);
    if (st != CS_OK)
        return st;
    cs_blake2b_update(&S, in, inlen);
    cs_blake2b_final(&S, out);
    return CS_OK;
}
