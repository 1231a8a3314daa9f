/* md4.h -- MD4 message digest (RFC 1320), used by librsync's older signature
 * formats (magics ...36/...46).  Cryptographically broken; here it is only a
 * block fingerprint for compatibility.  OpenSSL 3 moved MD4 to its legacy
 * provider, so csembed carries its own. */
#ifndef CS_MD4_H
#define CS_MD4_H

#include <stddef.h>
#include <stdint.h>

#define CS_MD4_BLOCKBYTES 64
#define CS_MD4_OUTBYTES 16

typedef struct cs_md4 {
    uint32_t state[4];                  /* A, B, C, D */
    uint64_t length;                    /* message bytes seen so far */
    uint8_t buf[CS_MD4_BLOCKBYTES];     /* pending partial block */
    size_t buflen;                      /* bytes used in buf */
} cs_md4;

void cs_md4_init(cs_md4 *S);
void cs_md4_update(cs_md4 *S, const uint8_t *in, size_t inlen);
/* Writes 16 bytes; S is left unchanged so hashing can go on. */
void cs_md4_final(const cs_md4 *S, uint8_t *out);
void cs_md4_oneshot(uint8_t *out, const uint8_t *in, size_t inlen);

#endif
