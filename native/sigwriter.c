/* sigwriter.c -- streaming signature generation (see sigwriter.h). */
#include <stdlib.h>
#include <string.h>

#include "blake2b_x4.h"
#include "sigwriter.h"

cs_status cs_sigwriter_new(uint32_t magic, uint32_t block_len, uint32_t strong_len,
                           cs_sigwriter **out)
{
    cs_weak_kind weak;
    cs_strong_kind strong;
    *out = NULL;
    cs_status st = cs_sig_check(magic, block_len, strong_len, &weak, &strong);
    if (st != CS_OK)
        return st;
    cs_sigwriter *w = calloc(1, sizeof *w);
    if (!w)
        return CS_ERR_NOMEM;
    w->block = malloc(block_len);
    if (!w->block) {
        free(w);
        return CS_ERR_NOMEM;
    }
    w->magic = magic;
    w->block_len = block_len;
    w->strong_len = strong_len;
    w->weak = weak;
    w->strong = strong;
    *out = w;
    return CS_OK;
}

void cs_sigwriter_free(cs_sigwriter *w)
{
    if (w) {
        free(w->block);
        free(w);
    }
}

size_t cs_sigwriter_bound(const cs_sigwriter *w, size_t in_len)
{
    size_t blocks = (w->fill + in_len) / w->block_len + 1;
    return (w->header_done ? 0 : CS_SIG_HEADER_LEN) + blocks * (4 + (size_t)w->strong_len);
}

static size_t put_header(cs_sigwriter *w, uint8_t *out)
{
    if (w->header_done)
        return 0;
    cs_put_be32(out, w->magic);
    cs_put_be32(out + 4, w->block_len);
    cs_put_be32(out + 8, w->strong_len);
    w->header_done = 1;
    return CS_SIG_HEADER_LEN;
}

static size_t put_record(const cs_sigwriter *w, const uint8_t *block, size_t len, uint8_t *out)
{
    uint8_t strong[CS_MAX_STRONG_LEN];
    cs_put_be32(out, cs_weak_block(w->weak, block, len));
    cs_strong_block(w->strong, block, len, strong);
    memcpy(out + 4, strong, w->strong_len);
    return 4 + (size_t)w->strong_len;
}

/* Records of n whole blocks at in.  BLAKE2b blocks go four at a time
 * through the multi-buffer hash. */
static size_t put_blocks(const cs_sigwriter *w, const uint8_t *in, size_t n, uint8_t *out)
{
    const size_t bl = w->block_len, rec = 4 + (size_t)w->strong_len;
    size_t written = 0;
    if (w->strong == CS_STRONG_BLAKE2) {
        for (; n >= 4; n -= 4, in += 4 * bl) {
            uint8_t sums[4][CS_BLAKE2_SUM_LEN];
            const uint8_t *const msgs[4] = {in, in + bl, in + 2 * bl, in + 3 * bl};
            uint8_t *const outs[4] = {sums[0], sums[1], sums[2], sums[3]};
            cs_blake2b_x4(msgs, bl, CS_BLAKE2_SUM_LEN, outs);
            for (int i = 0; i < 4; i++, written += rec) {
                cs_put_be32(out + written, cs_weak_block(w->weak, msgs[i], bl));
                memcpy(out + written + 4, sums[i], w->strong_len);
            }
        }
    }
    for (; n; n--, in += bl)
        written += put_record(w, in, bl, out + written);
    return written;
}

cs_status cs_sigwriter_feed(cs_sigwriter *w, const uint8_t *in, size_t in_len, uint8_t *out,
                            size_t out_cap, size_t *out_len)
{
    size_t n = 0;
    const size_t bl = w->block_len;
    *out_len = 0;
    if (w->finished)
        return CS_ERR_STATE;
    if (out_cap < cs_sigwriter_bound(w, in_len))
        return CS_ERR_PARAM;
    n += put_header(w, out);
    if (w->fill) {
        size_t take = bl - w->fill < in_len ? bl - w->fill : in_len;
        memcpy(w->block + w->fill, in, take);
        w->fill += take;
        in += take;
        in_len -= take;
        if (w->fill < bl) {
            *out_len = n;
            return CS_NEED_INPUT;
        }
        n += put_record(w, w->block, bl, out + n);
        w->fill = 0;
    }
    /* Whole blocks are hashed in place, without copying. */
    size_t whole = in_len / bl;
    n += put_blocks(w, in, whole, out + n);
    in += whole * bl;
    in_len -= whole * bl;
    memcpy(w->block, in, in_len);
    w->fill = in_len;
    *out_len = n;
    return CS_NEED_INPUT;
}

cs_status cs_sigwriter_finish(cs_sigwriter *w, uint8_t *out, size_t out_cap, size_t *out_len)
{
    size_t n = 0;
    *out_len = 0;
    if (w->finished)
        return CS_ERR_STATE;
    if (out_cap < cs_sigwriter_bound(w, 0))
        return CS_ERR_PARAM;
    n += put_header(w, out);
    if (w->fill)
        n += put_record(w, w->block, w->fill, out + n);
    w->fill = 0;
    w->finished = 1;
    *out_len = n;
    return CS_DONE;
}
