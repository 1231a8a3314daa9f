/* rabinkarp.c -- Rabin-Karp rolling hash (see rabinkarp.h). */
#include "rabinkarp.h"

/* Powers of M used to fold four bytes per step, so the loop-carried chain is
 * one multiply per four bytes instead of one per byte. */
#define RK_M2 (CS_RK_MULT * CS_RK_MULT)
#define RK_M3 (RK_M2 * CS_RK_MULT)
#define RK_M4 (RK_M2 * RK_M2)

void cs_rabinkarp_init(cs_rabinkarp *sum)
{
    sum->count = 0;
    sum->hash = CS_RK_SEED;
    sum->mult = 1;
}

/* M^n mod 2^32 by square-and-multiply. */
uint32_t cs_rabinkarp_pow(uint64_t n)
{
    uint32_t result = 1, base = CS_RK_MULT;
    while (n) {
        if (n & 1)
            result *= base;
        base *= base;
        n >>= 1;
    }
    return result;
}

void cs_rabinkarp_update(cs_rabinkarp *sum, const uint8_t *buf, size_t len)
{
    uint32_t h = sum->hash;
    size_t i = 0;
    for (; i + 4 <= len; i += 4)
        h = h * (uint32_t)RK_M4 + buf[i] * (uint32_t)RK_M3 + buf[i + 1] * (uint32_t)RK_M2
            + buf[i + 2] * CS_RK_MULT + buf[i + 3];
    for (; i < len; i++)
        h = h * CS_RK_MULT + buf[i];
    sum->hash = h;
    sum->mult *= cs_rabinkarp_pow(len);
    sum->count += len;
}

void cs_rabinkarp_rotate(cs_rabinkarp *sum, uint8_t out, uint8_t in)
{
    cs_rabinkarp_rotate_inline(sum, out, in);
}

void cs_rabinkarp_rollin(cs_rabinkarp *sum, uint8_t in)
{
    sum->hash = sum->hash * CS_RK_MULT + in;
    sum->mult *= CS_RK_MULT;
    sum->count++;
}

/* Drop the first byte: h -= M^(n-1) * (out + (M-1)*seed). */
void cs_rabinkarp_rollout(cs_rabinkarp *sum, uint8_t out)
{
    sum->mult *= CS_RK_INVM;
    sum->hash -= sum->mult * ((uint32_t)out + CS_RK_ADJ);
    sum->count--;
}

void cs_rabinkarp_roll(cs_rabinkarp *sum, const uint8_t *outs, const uint8_t *ins, size_t n)
{
    uint32_t h = sum->hash;
    const uint32_t mult = sum->mult;
    const uint32_t madj = mult * CS_RK_ADJ;
    for (size_t i = 0; i < n; i++)
        h = h * CS_RK_MULT + ins[i] - mult * outs[i] - madj;
    sum->hash = h;
}

uint32_t cs_rabinkarp_digest(const cs_rabinkarp *sum)
{
    return sum->hash;
}

uint32_t cs_rabinkarp_oneshot(const uint8_t *buf, size_t len)
{
    cs_rabinkarp sum;
    cs_rabinkarp_init(&sum);
    cs_rabinkarp_update(&sum, buf, len);
    return sum.hash;
}
