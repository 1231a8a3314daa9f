/* blake2b_rounds.h -- the BLAKE2b compression rounds (RFC 7693), as macros.
 *
 * Shared by the scalar code (blake2b.c) and the four-lane vector code
 * (blake2b_x4.c).  They are macros, not functions, so that one text serves
 * both word types: uint64_t, and the GCC vector-extension words on which the
 * same operators act lane by lane.  CS_B2B_ROUNDS expects the working vector
 * as locals v0..v15 and the message words as m[0..15] in scope.  Internal to
 * native/: nothing here is declared to cffi.
 */
#ifndef CS_BLAKE2B_ROUNDS_H
#define CS_BLAKE2B_ROUNDS_H

#include <stdint.h>
#include <string.h>

/* Initialisation vector (RFC 7693 section 2.6; the same as SHA-512's). */
static const uint64_t cs_blake2b_iv[8] = {
    0x6a09e667f3bcc908ULL, 0xbb67ae8584caa73bULL, 0x3c6ef372fe94f82bULL,
    0xa54ff53a5f1d36f1ULL, 0x510e527fade682d1ULL, 0x9b05688c2b3e6c1fULL,
    0x1f83d9abfb41bd6bULL, 0x5be0cd19137e2179ULL,
};

/* Little-endian 64-bit load; memcpy makes an unaligned load free on
 * little-endian machines. */
static inline uint64_t cs_load64_le(const uint8_t *p)
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

#define CS_B2B_ROTR(x, n) (((x) >> (n)) | ((x) << (64 - (n))))

/* The mixing function G (RFC 7693 section 3.1). */
#define CS_B2B_G(a, b, c, d, x, y)             \
    do {                                       \
        a = a + b + (x);                       \
        d = CS_B2B_ROTR(d ^ a, 32);            \
        c = c + d;                             \
        b = CS_B2B_ROTR(b ^ c, 24);            \
        a = a + b + (y);                       \
        d = CS_B2B_ROTR(d ^ a, 16);            \
        c = c + d;                             \
        b = CS_B2B_ROTR(b ^ c, 63);            \
    } while (0)

/* One round with its message schedule spelled out, so every index is a
 * compile-time constant (RFC 7693 section 2.7). */
#define CS_B2B_ROUND(s0, s1, s2, s3, s4, s5, s6, s7, s8, s9, s10, s11, s12, s13, s14, s15) \
    do {                                                     \
        CS_B2B_G(v0, v4, v8, v12, m[s0], m[s1]);             \
        CS_B2B_G(v1, v5, v9, v13, m[s2], m[s3]);             \
        CS_B2B_G(v2, v6, v10, v14, m[s4], m[s5]);            \
        CS_B2B_G(v3, v7, v11, v15, m[s6], m[s7]);            \
        CS_B2B_G(v0, v5, v10, v15, m[s8], m[s9]);            \
        CS_B2B_G(v1, v6, v11, v12, m[s10], m[s11]);          \
        CS_B2B_G(v2, v7, v8, v13, m[s12], m[s13]);           \
        CS_B2B_G(v3, v4, v9, v14, m[s14], m[s15]);           \
    } while (0)

/* The twelve rounds: the ten schedules of SIGMA, then the first two again. */
#define CS_B2B_ROUNDS()                                                    \
    do {                                                                   \
        CS_B2B_ROUND(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15); \
        CS_B2B_ROUND(14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3); \
        CS_B2B_ROUND(11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4); \
        CS_B2B_ROUND(7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8); \
        CS_B2B_ROUND(9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13); \
        CS_B2B_ROUND(2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9); \
        CS_B2B_ROUND(12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11); \
        CS_B2B_ROUND(13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10); \
        CS_B2B_ROUND(6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5); \
        CS_B2B_ROUND(10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0); \
        CS_B2B_ROUND(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15); \
        CS_B2B_ROUND(14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3); \
    } while (0)

/* Fold the working vector back into the chaining value h[0..7]. */
#define CS_B2B_FEED_FORWARD(h)  \
    do {                        \
        (h)[0] ^= v0 ^ v8;      \
        (h)[1] ^= v1 ^ v9;      \
        (h)[2] ^= v2 ^ v10;     \
        (h)[3] ^= v3 ^ v11;     \
        (h)[4] ^= v4 ^ v12;     \
        (h)[5] ^= v5 ^ v13;     \
        (h)[6] ^= v6 ^ v14;     \
        (h)[7] ^= v7 ^ v15;     \
    } while (0)

#endif
