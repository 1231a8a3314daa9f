/* blake2b.c -- BLAKE2b per RFC 7693, written for speed in portable C99:
 * message words are loaded once per block, the twelve rounds are unrolled by
 * macro so every sigma index is a compile-time constant, and loads use memcpy
 * so unaligned input costs nothing on little-endian machines. */
#include <string.h>

#include "blake2b.h"

static const uint64_t blake2b_iv[8] = {
    0x6a09e667f3bcc908ULL, 0xbb67ae8584caa73bULL, 0x3c6ef372fe94f82bULL,
    0xa54ff53a5f1d36f1ULL, 0x510e527fade682d1ULL, 0x9b05688c2b3e6c1fULL,
    0x1f83d9abfb41bd6bULL, 0x5be0cd19137e2179ULL,
};

static inline uint64_t load64(const uint8_t *p)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
#else
    return (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 | (uint64_t)p[3] << 24
        | (uint64_t)p[4] << 32 | (uint64_t)p[5] << 40 | (uint64_t)p[6] << 48
        | (uint64_t)p[7] << 56;
#endif
}

static inline void store64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static inline uint64_t rotr64(uint64_t x, unsigned n)
{
    return (x >> n) | (x << (64 - n));
}

#define G(a, b, c, d, x, y)                    \
    do {                                       \
        a = a + b + (x);                       \
        d = rotr64(d ^ a, 32);                 \
        c = c + d;                             \
        b = rotr64(b ^ c, 24);                 \
        a = a + b + (y);                       \
        d = rotr64(d ^ a, 16);                 \
        c = c + d;                             \
        b = rotr64(b ^ c, 63);                 \
    } while (0)

/* One round with the message schedule spelled out (RFC 7693 section 2.7). */
#define ROUND(s0, s1, s2, s3, s4, s5, s6, s7, s8, s9, s10, s11, s12, s13, s14, s15) \
    do {                                                 \
        G(v0, v4, v8, v12, m[s0], m[s1]);                \
        G(v1, v5, v9, v13, m[s2], m[s3]);                \
        G(v2, v6, v10, v14, m[s4], m[s5]);               \
        G(v3, v7, v11, v15, m[s6], m[s7]);               \
        G(v0, v5, v10, v15, m[s8], m[s9]);               \
        G(v1, v6, v11, v12, m[s10], m[s11]);             \
        G(v2, v7, v8, v13, m[s12], m[s13]);              \
        G(v3, v4, v9, v14, m[s14], m[s15]);              \
    } while (0)

static void compress(uint64_t h[8], const uint8_t *block, uint64_t t0, uint64_t t1, int last)
{
    uint64_t m[16];
    for (int i = 0; i < 16; i++)
        m[i] = load64(block + 8 * i);

    uint64_t v0 = h[0], v1 = h[1], v2 = h[2], v3 = h[3];
    uint64_t v4 = h[4], v5 = h[5], v6 = h[6], v7 = h[7];
    uint64_t v8 = blake2b_iv[0], v9 = blake2b_iv[1], v10 = blake2b_iv[2], v11 = blake2b_iv[3];
    uint64_t v12 = blake2b_iv[4] ^ t0, v13 = blake2b_iv[5] ^ t1;
    uint64_t v14 = last ? ~blake2b_iv[6] : blake2b_iv[6], v15 = blake2b_iv[7];

    ROUND(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    ROUND(14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3);
    ROUND(11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4);
    ROUND(7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8);
    ROUND(9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13);
    ROUND(2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9);
    ROUND(12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11);
    ROUND(13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10);
    ROUND(6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5);
    ROUND(10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0);
    ROUND(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    ROUND(14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3);

    h[0] ^= v0 ^ v8;
    h[1] ^= v1 ^ v9;
    h[2] ^= v2 ^ v10;
    h[3] ^= v3 ^ v11;
    h[4] ^= v4 ^ v12;
    h[5] ^= v5 ^ v13;
    h[6] ^= v6 ^ v14;
    h[7] ^= v7 ^ v15;
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
        S->h[i] = blake2b_iv[i];
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
