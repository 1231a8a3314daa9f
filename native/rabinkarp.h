/* rabinkarp.h -- librsync's Rabin-Karp rolling hash (signature magics ...46/...47).
 *
 * A polynomial hash modulo 2^32: starting from the seed 1, each byte does
 * h = h * M + b.  So h = M^n + sum(b[i] * M^(n-1-i)) for an n-byte window; the
 * seed term keeps windows of zeros of different lengths apart.  Rolling uses
 * M^n, which the state carries as `mult`.
 */
#ifndef CS_RABINKARP_H
#define CS_RABINKARP_H

#include <stddef.h>
#include <stdint.h>

/* Initial hash value (librsync RABINKARP_SEED). */
#define CS_RK_SEED 1u
/* Multiplier M (librsync RABINKARP_MULT), an odd constant with good bit mixing. */
#define CS_RK_MULT 0x08104225u
/* M^-1 mod 2^32, needed to shrink the window (checked: M * INVM == 1). */
#define CS_RK_INVM 0x98F009ADu
/* (M - 1) * seed: removing a byte also removes its share of the seed term. */
#define CS_RK_ADJ 0x08104224u

typedef struct cs_rabinkarp {
    uint64_t count; /* number of bytes in the window */
    uint32_t hash;  /* current hash value */
    uint32_t mult;  /* M^count mod 2^32 */
} cs_rabinkarp;

void cs_rabinkarp_init(cs_rabinkarp *sum);
void cs_rabinkarp_update(cs_rabinkarp *sum, const uint8_t *buf, size_t len);
void cs_rabinkarp_rotate(cs_rabinkarp *sum, uint8_t out, uint8_t in);
void cs_rabinkarp_rollin(cs_rabinkarp *sum, uint8_t in);
void cs_rabinkarp_rollout(cs_rabinkarp *sum, uint8_t out);
void cs_rabinkarp_roll(cs_rabinkarp *sum, const uint8_t *outs, const uint8_t *ins, size_t n);
uint32_t cs_rabinkarp_digest(const cs_rabinkarp *sum);
uint32_t cs_rabinkarp_oneshot(const uint8_t *buf, size_t len);
uint32_t cs_rabinkarp_pow(uint64_t n);

static inline void cs_rabinkarp_rotate_inline(cs_rabinkarp *sum, uint8_t out, uint8_t in)
{
    sum->hash = sum->hash * CS_RK_MULT + in - sum->mult * ((uint32_t)out + CS_RK_ADJ);
}

#endif
