/* sigwriter.h -- streaming signature generation.
 *
 * Basis bytes go in through cs_sigwriter_feed in chunks of any size; the
 * writer emits the header once, then one record (weak sum, truncated strong
 * sum) per complete block.  Only a partial block is kept between calls, so
 * memory is one block whatever the basis size.  cs_sigwriter_finish emits the
 * short last block, if any.
 */
#ifndef CS_SIGWRITER_H
#define CS_SIGWRITER_H

#include <stddef.h>
#include <stdint.h>

#include "cs_status.h"
#include "rsync_format.h"

typedef struct cs_sigwriter {
    uint32_t magic;         /* signature magic written in the header */
    uint32_t block_len;     /* basis bytes per block */
    uint32_t strong_len;    /* strong-sum bytes kept per record */
    cs_weak_kind weak;      /* weak sum selected by magic */
    cs_strong_kind strong;  /* strong hash selected by magic */
    int header_done;        /* header already emitted */
    int finished;           /* finish() has run; no more input */
    size_t fill;            /* bytes of the partial block held in block */
    uint8_t *block;         /* partial block buffer, block_len bytes */
} cs_sigwriter;

cs_status cs_sigwriter_new(uint32_t magic, uint32_t block_len, uint32_t strong_len,
                           cs_sigwriter **out);
void cs_sigwriter_free(cs_sigwriter *w);
/* Output bytes the next feed of in_len bytes (or finish, in_len 0) may produce. */
size_t cs_sigwriter_bound(const cs_sigwriter *w, size_t in_len);
cs_status cs_sigwriter_feed(cs_sigwriter *w, const uint8_t *in, size_t in_len, uint8_t *out,
                            size_t out_cap, size_t *out_len);
cs_status cs_sigwriter_finish(cs_sigwriter *w, uint8_t *out, size_t out_cap, size_t *out_len);

#endif
