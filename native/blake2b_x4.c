/* blake2b_x4.c -- four-way multi-buffer BLAKE2b (see blake2b_x4.h).
 *
 * The vector code is the scalar algorithm with every state word widened to
 * a 4-lane vector (GCC/Clang vector extensions), compiled with the AVX2
 * target attribute so the rest of the extension stays baseline x86-64.
 * Vector values never cross a function boundary by value. */
#include <string.h>

#include "blake2b.h"
#include "blake2b_x4.h"

#if defined(__GNUC__) && defined(__x86_64__) && !defined(CS_NO_AVX2)
#define X4_HAVE_AVX2 1
#endif

static void x4_scalar(const uint8_t *const msgs[4], size_t len, size_t outlen,
                      uint8_t *const outs[4])
{
    for (int i = 0; i < 4; i++)
        cs_blake2b_oneshot(outs[i], outlen, msgs[i], len);
}

#ifdef X4_HAVE_AVX2

static const uint64_t x4_iv[8] = {
    0x6a09e667f3bcc908ULL, 0xbb67ae8584caa73bULL, 0x3c6ef372fe94f82bULL,
    0xa54ff53a5f1d36f1ULL, 0x510e527fade682d1ULL, 0x9b05688c2b3e6c1fULL,
    0x1f83d9abfb41bd6bULL, 0x5be0cd19137e2179ULL,
};

typedef uint64_t x4_vec __attribute__((vector_size(32)));

static inline uint64_t x4_load64(const uint8_t *p)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
#else
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
#endif
}

#define X4_ROTR(x, n) (((x) >> (n)) | ((x) << (64 - (n))))
#define X4_G(a, b, c, d, x, y)             \
    do {                                   \
        a = a + b + (x);                   \
        d = X4_ROTR(d ^ a, 32);            \
        c = c + d;                         \
        b = X4_ROTR(b ^ c, 24);            \
        a = a + b + (y);                   \
        d = X4_ROTR(d ^ a, 16);            \
        c = c + d;                         \
        b = X4_ROTR(b ^ c, 63);            \
    } while (0)
#define X4_ROUND(s0, s1, s2, s3, s4, s5, s6, s7, s8, s9, s10, s11, s12, s13, s14, s15) \
    do {                                                  \
        X4_G(v0, v4, v8, v12, m[s0], m[s1]);              \
        X4_G(v1, v5, v9, v13, m[s2], m[s3]);              \
        X4_G(v2, v6, v10, v14, m[s4], m[s5]);             \
        X4_G(v3, v7, v11, v15, m[s6], m[s7]);             \
        X4_G(v0, v5, v10, v15, m[s8], m[s9]);             \
        X4_G(v1, v6, v11, v12, m[s10], m[s11]);           \
        X4_G(v2, v7, v8, v13, m[s12], m[s13]);            \
        X4_G(v3, v4, v9, v14, m[s14], m[s15]);            \
    } while (0)

/* Compress one 128-byte block of each message (blocks[i] is message i's).
 * t is the byte counter after this block, last marks the final block. */
#define X4_COMPRESS_BODY                                                          \
    x4_vec m[16];                                                                 \
    for (int w = 0; w < 16; w++)                                                  \
        m[w] = (x4_vec){x4_load64(blocks[0] + 8 * w), x4_load64(blocks[1] + 8 * w),  \
                        x4_load64(blocks[2] + 8 * w), x4_load64(blocks[3] + 8 * w)}; \
    x4_vec v0 = h[0], v1 = h[1], v2 = h[2], v3 = h[3];                            \
    x4_vec v4 = h[4], v5 = h[5], v6 = h[6], v7 = h[7];                            \
    x4_vec v8 = {x4_iv[0], x4_iv[0], x4_iv[0], x4_iv[0]};                         \
    x4_vec v9 = {x4_iv[1], x4_iv[1], x4_iv[1], x4_iv[1]};                         \
    x4_vec v10 = {x4_iv[2], x4_iv[2], x4_iv[2], x4_iv[2]};                        \
    x4_vec v11 = {x4_iv[3], x4_iv[3], x4_iv[3], x4_iv[3]};                        \
    uint64_t t12 = x4_iv[4] ^ t, t14 = last ? ~x4_iv[6] : x4_iv[6];               \
    x4_vec v12 = {t12, t12, t12, t12};                                            \
    x4_vec v13 = {x4_iv[5], x4_iv[5], x4_iv[5], x4_iv[5]};                        \
    x4_vec v14 = {t14, t14, t14, t14};                                            \
    x4_vec v15 = {x4_iv[7], x4_iv[7], x4_iv[7], x4_iv[7]};                        \
    X4_ROUND(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);               \
    X4_ROUND(14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3);               \
    X4_ROUND(11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4);               \
    X4_ROUND(7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8);               \
    X4_ROUND(9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13);               \
    X4_ROUND(2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9);               \
    X4_ROUND(12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11);               \
    X4_ROUND(13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10);               \
    X4_ROUND(6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5);               \
    X4_ROUND(10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0);               \
    X4_ROUND(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);               \
    X4_ROUND(14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3);               \
    h[0] ^= v0 ^ v8;                                                              \
    h[1] ^= v1 ^ v9;                                                              \
    h[2] ^= v2 ^ v10;                                                             \
    h[3] ^= v3 ^ v11;                                                             \
    h[4] ^= v4 ^ v12;                                                             \
    h[5] ^= v5 ^ v13;                                                             \
    h[6] ^= v6 ^ v14;                                                             \
    h[7] ^= v7 ^ v15;

/* Whole hash: full blocks straight from the messages, the last (possibly
 * partial or empty) block copied and zero-padded, then the digests. */
#define X4_HASH_BODY(compress)                                                    \
    x4_vec h[8];                                                                  \
    for (int i = 0; i < 8; i++) {                                                 \
        uint64_t w = x4_iv[i] ^ (i == 0 ? (0x01010000ULL | outlen) : 0);          \
        h[i] = (x4_vec){w, w, w, w};                                              \
    }                                                                             \
    size_t off = 0;                                                               \
    while (len - off > CS_BLAKE2B_BLOCKBYTES) {                                   \
        const uint8_t *blocks[4] = {msgs[0] + off, msgs[1] + off, msgs[2] + off,  \
                                    msgs[3] + off};                               \
        off += CS_BLAKE2B_BLOCKBYTES;                                             \
        compress(h, blocks, (uint64_t)off, 0);                                    \
    }                                                                             \
    uint8_t tail[4][CS_BLAKE2B_BLOCKBYTES];                                       \
    const uint8_t *blocks[4];                                                     \
    for (int i = 0; i < 4; i++) {                                                 \
        memset(tail[i], 0, sizeof tail[i]);                                       \
        memcpy(tail[i], msgs[i] + off, len - off);                                \
        blocks[i] = tail[i];                                                      \
    }                                                                             \
    compress(h, blocks, (uint64_t)len, 1);                                        \
    for (int i = 0; i < 4; i++) {                                                 \
        uint8_t full[CS_BLAKE2B_OUTBYTES];                                        \
        for (int w = 0; w < 8; w++)                                               \
            for (int b = 0; b < 8; b++)                                           \
                full[8 * w + b] = (uint8_t)(h[w][i] >> (8 * b));                  \
        memcpy(outs[i], full, outlen);                                            \
    }

__attribute__((target("avx2"))) static void compress_avx2(x4_vec h[8],
                                                          const uint8_t *const blocks[4],
                                                          uint64_t t, int last)
{
    X4_COMPRESS_BODY
}

__attribute__((target("avx2"))) static void x4_avx2(const uint8_t *const msgs[4], size_t len,
                                                    size_t outlen, uint8_t *const outs[4])
{
    X4_HASH_BODY(compress_avx2)
}
#endif /* X4_HAVE_AVX2 */

/* Resolved implementation; 0 until first use.  Racing first calls all store
 * the same value. */
static cs_x4_impl x4_current = CS_X4_AUTO;

cs_x4_impl cs_blake2b_x4_select(cs_x4_impl want)
{
    cs_x4_impl impl = CS_X4_SCALAR;
#ifdef X4_HAVE_AVX2
    if (want != CS_X4_SCALAR) {
        __builtin_cpu_init();
        if (__builtin_cpu_supports("avx2"))
            impl = CS_X4_AVX2;
    }
#endif
    (void)want;
    x4_current = impl;
    return impl;
}

cs_status cs_blake2b_x4(const uint8_t *const msgs[4], size_t len, size_t outlen,
                        uint8_t *const outs[4])
{
    if (outlen < 1 || outlen > CS_BLAKE2B_OUTBYTES)
        return CS_ERR_PARAM;
    cs_x4_impl impl = x4_current ? x4_current : cs_blake2b_x4_select(CS_X4_AUTO);
#ifdef X4_HAVE_AVX2
    if (impl == CS_X4_AVX2) {
        x4_avx2(msgs, len, outlen, outs);
        return CS_OK;
    }
#endif
    (void)impl;
    x4_scalar(msgs, len, outlen, outs);
    return CS_OK;
}
