/* blake2b.h -- BLAKE2b (RFC 7693), unkeyed, any digest length 1..64.
 *
 * The digest length is a parameter of the hash (it is mixed into the initial
 * state), so BLAKE2b-256 is not a truncated BLAKE2b-512.  librsync's strong
 * sums are BLAKE2b-256 truncated to the signature's strong length.
 */
#ifndef CS_BLAKE2B_H
#define CS_BLAKE2B_H

#include <stddef.h>
#include <stdint.h>

#include "cs_status.h"

#define CS_BLAKE2B_BLOCKBYTES 128 /* compression function input size */
#define CS_BLAKE2B_OUTBYTES 64    /* largest digest */

typedef struct cs_blake2b {
    uint64_t h[8];                         /* chaining value */
    uint64_t t[2];                         /* bytes compressed so far (128-bit counter) */
    uint8_t buf[CS_BLAKE2B_BLOCKBYTES];    /* pending input, never compressed early:
                                              the last block must get the final flag */
    size_t buflen;                         /* bytes used in buf */
    size_t outlen;                         /* digest length chosen at init */
} cs_blake2b;

cs_status cs_blake2b_init(cs_blake2b *S, size_t outlen);
void cs_blake2b_update(cs_blake2b *S, const uint8_t *in, size_t inlen);
/* Writes S->outlen bytes; S itself is left unchanged so hashing can go on. */
void cs_blake2b_final(const cs_blake2b *S, uint8_t *out);
cs_status cs_blake2b_oneshot(uint8_t *out, size_t outlen, const uint8_t *in, size_t inlen);

#endif
