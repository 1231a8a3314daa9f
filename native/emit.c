/* emit.c -- delta command encoding (see emit.h). */
#include "emit.h"
#include "rsync_format.h"

/* Index 0..3 of the narrowest width (1, 2, 4, 8 bytes) holding v. */
static unsigned width_index(uint64_t v)
{
    if (v <= 0xFFu)
        return 0;
    if (v <= 0xFFFFu)
        return 1;
    if (v <= 0xFFFFFFFFu)
        return 2;
    return 3;
}

static size_t put_be(uint8_t *out, uint64_t v, unsigned idx)
{
    size_t n = (size_t)1 << idx;
    for (size_t i = 0; i < n; i++)
        out[i] = (uint8_t)(v >> (8 * (n - 1 - i)));
    return n;
}

size_t cs_emit_literal_header(uint8_t *out, uint64_t len)
{
    if (len <= CS_OP_LITERAL_64) {
        out[0] = (uint8_t)len;
        return 1;
    }
    unsigned w = width_index(len);
    out[0] = (uint8_t)(CS_OP_LITERAL_N1 + w);
    return 1 + put_be(out + 1, len, w);
}

size_t cs_emit_copy(uint8_t *out, uint64_t pos, uint64_t len)
{
    unsigned wp = width_index(pos), wl = width_index(len);
    size_t n = 1;
    out[0] = (uint8_t)(CS_OP_COPY_N1_N1 + 4 * wp + wl);
    n += put_be(out + n, pos, wp);
    n += put_be(out + n, len, wl);
    return n;
}
