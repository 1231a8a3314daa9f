/* blake2b_x4.c -- four-way multi-buffer BLAKE2b (see blake2b_x4.h).
 *
 * The vector code is the scalar algorithm with every state word widened to
 * a 4-lane vector (GCC/Clang vector extensions), compiled with the AVX2
 * target attribute so the rest of the extension stays baseline x86-64.
 * Vector values never cross a function boundary by value. */
#include <string.h>

#include "blake2b.h"
#include "blake2b_rounds.h"
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

typedef uint64_t x4_vec __attribute__((vector_size(32)));

#define X4_SPLAT(w) ((x4_vec){(w), (w), (w), (w)})

/* Compress one 128-byte block of each message (blocks[i] is message i's).
 * t is the byte counter after this block, last marks the final block. */
#define X4_COMPRESS_BODY                                                          \
    x4_vec m[16];                                                                 \
    for (int w = 0; w < 16; w++)                                                  \
        m[w] = (x4_vec){cs_load64_le(blocks[0] + 8 * w), cs_load64_le(blocks[1] + 8 * w), \
                        cs_load64_le(blocks[2] + 8 * w), cs_load64_le(blocks[3] + 8 * w)}; \
    x4_vec v0 = h[0], v1 = h[1], v2 = h[2], v3 = h[3];                            \
    x4_vec v4 = h[4], v5 = h[5], v6 = h[6], v7 = h[7];                            \
    x4_vec v8 = X4_SPLAT(cs_blake2b_iv[0]), v9 = X4_SPLAT(cs_blake2b_iv[1]);      \
    x4_vec v10 = X4_SPLAT(cs_blake2b_iv[2]), v11 = X4_SPLAT(cs_blake2b_iv[3]);    \
    uint64_t t12 = cs_blake2b_iv[4] ^ t, t14 = last ? ~cs_blake2b_iv[6] : cs_blake2b_iv[6]; \
    x4_vec v12 = X4_SPLAT(t12), v13 = X4_SPLAT(cs_blake2b_iv[5]);                 \
    x4_vec v14 = X4_SPLAT(t14), v15 = X4_SPLAT(cs_blake2b_iv[7]);                 \
    CS_B2B_ROUNDS();                                                              \
    CS_B2B_FEED_FORWARD(h);

/* Whole hash: full blocks straight from the messages, the last (possibly
 * partial or empty) block copied and zero-padded, then the digests. */
#define X4_HASH_BODY(compress)                                                    \
    x4_vec h[8];                                                                  \
    for (int i = 0; i < 8; i++) {                                                 \
        uint64_t w = cs_blake2b_iv[i] ^ (i == 0 ? (0x01010000ULL | outlen) : 0);  \
        h[i] = X4_SPLAT(w);                                                       \
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
