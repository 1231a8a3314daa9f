/* md4.c -- MD4 (RFC 1320 section 3.4), rounds written out in full. */
#include <string.h>

#include "md4.h"

#define F(x, y, z) (((x) & (y)) | (~(x) & (z)))
#define G(x, y, z) (((x) & (y)) | ((x) & (z)) | ((y) & (z)))
#define H(x, y, z) ((x) ^ (y) ^ (z))
#define ROTL(x, s) (((x) << (s)) | ((x) >> (32 - (s))))

/* Round constants: 0, floor(2^30 * sqrt(2)), floor(2^30 * sqrt(3)). */
#define R1(a, b, c, d, k, s) a = ROTL(a + F(b, c, d) + x[k], s)
#define R2(a, b, c, d, k, s) a = ROTL(a + G(b, c, d) + x[k] + 0x5A827999u, s)
#define R3(a, b, c, d, k, s) a = ROTL(a + H(b, c, d) + x[k] + 0x6ED9EBA1u, s)

static inline uint32_t load32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void md4_block(uint32_t st[4], const uint8_t *block)
{
    uint32_t x[16];
    for (int i = 0; i < 16; i++)
        x[i] = load32(block + 4 * i);
    uint32_t a = st[0], b = st[1], c = st[2], d = st[3];

    R1(a, b, c, d, 0, 3);  R1(d, a, b, c, 1, 7);  R1(c, d, a, b, 2, 11);  R1(b, c, d, a, 3, 19);
    R1(a, b, c, d, 4, 3);  R1(d, a, b, c, 5, 7);  R1(c, d, a, b, 6, 11);  R1(b, c, d, a, 7, 19);
    R1(a, b, c, d, 8, 3);  R1(d, a, b, c, 9, 7);  R1(c, d, a, b, 10, 11); R1(b, c, d, a, 11, 19);
    R1(a, b, c, d, 12, 3); R1(d, a, b, c, 13, 7); R1(c, d, a, b, 14, 11); R1(b, c, d, a, 15, 19);

    R2(a, b, c, d, 0, 3);  R2(d, a, b, c, 4, 5);  R2(c, d, a, b, 8, 9);   R2(b, c, d, a, 12, 13);
    R2(a, b, c, d, 1, 3);  R2(d, a, b, c, 5, 5);  R2(c, d, a, b, 9, 9);   R2(b, c, d, a, 13, 13);
    R2(a, b, c, d, 2, 3);  R2(d, a, b, c, 6, 5);  R2(c, d, a, b, 10, 9);  R2(b, c, d, a, 14, 13);
    R2(a, b, c, d, 3, 3);  R2(d, a, b, c, 7, 5);  R2(c, d, a, b, 11, 9);  R2(b, c, d, a, 15, 13);

    R3(a, b, c, d, 0, 3);  R3(d, a, b, c, 8, 9);  R3(c, d, a, b, 4, 11);  R3(b, c, d, a, 12, 15);
    R3(a, b, c, d, 2, 3);  R3(d, a, b, c, 10, 9); R3(c, d, a, b, 6, 11);  R3(b, c, d, a, 14, 15);
    R3(a, b, c, d, 1, 3);  R3(d, a, b, c, 9, 9);  R3(c, d, a, b, 5, 11);  R3(b, c, d, a, 13, 15);
    R3(a, b, c, d, 3, 3);  R3(d, a, b, c, 11, 9); R3(c, d, a, b, 7, 11);  R3(b, c, d, a, 15, 15);

    st[0] += a;
    st[1] += b;
    st[2] += c;
    st[3] += d;
}

void cs_md4_init(cs_md4 *S)
{
    S->state[0] = 0x67452301u;
    S->state[1] = 0xefcdab89u;
    S->state[2] = 0x98badcfeu;
    S->state[3] = 0x10325476u;
    S->length = 0;
    S->buflen = 0;
}

void cs_md4_update(cs_md4 *S, const uint8_t *in, size_t inlen)
{
    S->length += inlen;
    if (S->buflen) {
        size_t fill = CS_MD4_BLOCKBYTES - S->buflen;
        if (inlen < fill) {
            memcpy(S->buf + S->buflen, in, inlen);
            S->buflen += inlen;
            return;
        }
        memcpy(S->buf + S->buflen, in, fill);
        md4_block(S->state, S->buf);
        S->buflen = 0;
        in += fill;
        inlen -= fill;
    }
    while (inlen >= CS_MD4_BLOCKBYTES) {
        md4_block(S->state, in);
        in += CS_MD4_BLOCKBYTES;
        inlen -= CS_MD4_BLOCKBYTES;
    }
    memcpy(S->buf, in, inlen);
    S->buflen = inlen;
}

void cs_md4_final(const cs_md4 *S, uint8_t *out)
{
    uint32_t st[4];
    uint8_t block[2 * CS_MD4_BLOCKBYTES];
    size_t n = S->buflen;
    uint64_t bits = S->length * 8;

    memcpy(st, S->state, sizeof st);
    memcpy(block, S->buf, n);
    /* Pad with 0x80, zeros to 56 mod 64, then the bit length little-endian. */
    block[n++] = 0x80;
    size_t total = (n <= 56) ? CS_MD4_BLOCKBYTES : 2 * CS_MD4_BLOCKBYTES;
    memset(block + n, 0, total - 8 - n);
    for (int i = 0; i < 8; i++)
        block[total - 8 + i] = (uint8_t)(bits >> (8 * i));
    md4_block(st, block);
    if (total > CS_MD4_BLOCKBYTES)
        md4_block(st, block + CS_MD4_BLOCKBYTES);
    for (int i = 0; i < 4; i++) {
        out[4 * i] = (uint8_t)st[i];
        out[4 * i + 1] = (uint8_t)(st[i] >> 8);
        out[4 * i + 2] = (uint8_t)(st[i] >> 16);
        out[4 * i + 3] = (uint8_t)(st[i] >> 24);
    }
}

void cs_md4_oneshot(uint8_t *out, const uint8_t *in, size_t inlen)
{
    cs_md4 S;
    cs_md4_init(&S);
    cs_md4_update(&S, in, inlen);
    cs_md4_final(&S, out);
}
