/* delta.h -- streaming delta search against an indexed signature.
 *
 * New-file bytes are fed in chunks and copied into a window buffer.  The
 * search keeps the weak sum of the block-sized window at `pos` and slides it
 * one byte at a time; each byte costs one rotate and one filter-bit test
 * (sumset.h).  Only when the filter says "maybe" is the hash table probed,
 * and only when the table has that exact weak sum is the strong sum of the
 * window computed -- the expensive hash stays lazy.  Right after a match, the
 * block following the matched one is tried first, so runs of identical
 * blocks map to consecutive basis blocks and merge into one COPY.
 *
 * Output: the delta magic, then COPY commands (adjacent copies merged) and
 * LITERAL commands (runs cut every CS_LITERAL_FLUSH bytes), then END.  The
 * pending literal never exceeds CS_LITERAL_FLUSH bytes, so the buffer holds
 * at most one literal piece, one window and one input slab: memory is the
 * signature plus O(block_len), whatever the file size.
 *
 * At end of input the window shrinks from the front (rollout) across the
 * remaining tail, comparing each shrinking window with the last signature
 * block -- the only one that may be shorter than block_len.
 */
#ifndef CS_DELTA_H
#define CS_DELTA_H

#include <stddef.h>
#include <stdint.h>

#include "cs_status.h"
#include "rabinkarp.h"
#include "rollsum.h"
#include "sumset.h"

/* Output space every feed/finish call needs: one literal piece plus the
 * longest command headers, END and the magic. */
#define CS_DELTA_MIN_OUT (CS_LITERAL_FLUSH + 64)
/* Input taken per buffer refill (at least one block more). */
#define CS_DELTA_SLAB (256u * 1024u)

typedef struct cs_delta {
    const cs_sumset *sums;  /* indexed signature, owned by the caller */
    size_t block_len;       /* window length (signature block length) */
    uint8_t *buf;           /* window buffer: [lit, pos) literal, [pos, end) unsearched */
    size_t cap;             /* bytes allocated for buf */
    size_t lit;             /* start of the pending literal */
    size_t pos;             /* start of the current window */
    size_t end;             /* end of the bytes held */
    int phase;              /* where the stream is (DELTA_* in delta.c) */
    int have_sum;           /* the weak state below describes the window at pos */
    cs_rollsum rs;          /* weak state when the signature uses rollsum */
    cs_rabinkarp rk;        /* weak state when it uses Rabin-Karp */
    uint32_t rk_madj;       /* M^block_len * ADJ, constant while the window is full */
    int have_copy;          /* a COPY is pending (may still grow) */
    uint64_t copy_pos;      /* pending COPY's basis offset */
    uint64_t copy_len;      /* pending COPY's length */
    int64_t last_block;     /* block matched last, -1 if none: its successor is tried first */
    uint64_t literal_bytes; /* statistics: bytes sent as literals */
    uint64_t copy_bytes;    /* statistics: bytes sent as copies */
    uint64_t commands;      /* statistics: commands emitted, END excluded */
} cs_delta;

cs_status cs_delta_new(const cs_sumset *sums, cs_delta **out);
void cs_delta_free(cs_delta *d);
/* Consume up to in_len bytes (*in_used says how many), write up to out_cap
 * bytes.  Returns CS_NEED_INPUT when all input was taken, CS_NEED_OUTPUT when
 * it must be called again (with the rest of the input) for more output. */
cs_status cs_delta_feed(cs_delta *d, const uint8_t *in, size_t in_len, size_t *in_used,
                        uint8_t *out, size_t out_cap, size_t *out_len);
/* End of input: CS_NEED_OUTPUT (call again) or CS_DONE once END is written. */
cs_status cs_delta_finish(cs_delta *d, uint8_t *out, size_t out_cap, size_t *out_len);

#endif
