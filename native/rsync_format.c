/* rsync_format.c -- dispatch from a signature magic to its weak and strong sums. */
#include "rsync_format.h"

#include "blake2b.h"
#include "md4.h"
#include "rabinkarp.h"
#include "rollsum.h"

cs_status cs_sig_magic_kinds(uint32_t magic, cs_weak_kind *weak, cs_strong_kind *strong)
{
    switch (magic) {
    case CS_MAGIC_MD4_SIG:
        *weak = CS_WEAK_ROLLSUM;
        *strong = CS_STRONG_MD4;
        return CS_OK;
    case CS_MAGIC_BLAKE2_SIG:
        *weak = CS_WEAK_ROLLSUM;
        *strong = CS_STRONG_BLAKE2;
        return CS_OK;
    case CS_MAGIC_RK_MD4_SIG:
        *weak = CS_WEAK_RABINKARP;
        *strong = CS_STRONG_MD4;
        return CS_OK;
    case CS_MAGIC_RK_BLAKE2_SIG:
        *weak = CS_WEAK_RABINKARP;
        *strong = CS_STRONG_BLAKE2;
        return CS_OK;
    default:
        return CS_ERR_MAGIC;
    }
}

cs_status cs_sig_check(uint32_t magic, uint32_t block_len, uint32_t strong_len,
                       cs_weak_kind *weak, cs_strong_kind *strong)
{
    if (cs_sig_magic_kinds(magic, weak, strong) != CS_OK)
        return CS_ERR_MAGIC;
    if (block_len < 1 || block_len > CS_MAX_BLOCK_LEN)
        return CS_ERR_PARAM;
    if (strong_len < 1 || strong_len > cs_strong_max(*strong))
        return CS_ERR_PARAM;
    return CS_OK;
}

uint32_t cs_strong_max(cs_strong_kind strong)
{
    return strong == CS_STRONG_MD4 ? CS_MD4_SUM_LEN : CS_BLAKE2_SUM_LEN;
}

uint32_t cs_weak_block(cs_weak_kind weak, const uint8_t *buf, size_t len)
{
    return weak == CS_WEAK_ROLLSUM ? cs_rollsum_oneshot(buf, len) : cs_rabinkarp_oneshot(buf, len);
}

void cs_strong_block(cs_strong_kind strong, const uint8_t *buf, size_t len,
                     uint8_t out[CS_MAX_STRONG_LEN])
{
    if (strong == CS_STRONG_MD4)
        cs_md4_oneshot(out, buf, len);
    else
        cs_blake2b_oneshot(out, CS_BLAKE2_SUM_LEN, buf, len);
}
