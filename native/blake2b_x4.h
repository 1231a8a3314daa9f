/* blake2b_x4.h -- BLAKE2b of four equal-length messages at once.
 *
 * Signature generation hashes many independent blocks of the same length,
 * which suits "multi-buffer" hashing: each 64-bit state word becomes a
 * vector of four words, one per message, and every BLAKE2b step is done on
 * all four together.  On x86-64 with GCC or Clang the vector code is
 * compiled for AVX2 (four 64-bit lanes per register) and used when the CPU
 * has AVX2, checked once at run time; elsewhere, and on older CPUs, four
 * calls of the scalar code are made instead (the same code on narrower
 * 128-bit vectors -- SSE2, NEON -- measured slower than scalar).  The
 * digests are exactly those of cs_blake2b_oneshot.
 */
#ifndef CS_BLAKE2B_X4_H
#define CS_BLAKE2B_X4_H

#include <stddef.h>
#include <stdint.h>

#include "cs_status.h"

/* Which implementation cs_blake2b_x4 uses (for tests and benchmarks). */
typedef enum cs_x4_impl {
    CS_X4_AUTO = 0,    /* best available (the default) */
    CS_X4_SCALAR = 1,  /* four scalar hashes */
    CS_X4_AVX2 = 2     /* vector code compiled for AVX2 (x86-64 only) */
} cs_x4_impl;

/* Hash msgs[0..3], each len bytes, into outs[0..3] (outlen bytes each). */
cs_status cs_blake2b_x4(const uint8_t *const msgs[4], size_t len, size_t outlen,
                        uint8_t *const outs[4]);
/* Select an implementation; returns the one now in use (AUTO resolves).
 * A request the build or CPU cannot honour falls back to the next best. */
cs_x4_impl cs_blake2b_x4_select(cs_x4_impl want);

#endif
