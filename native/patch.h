/* patch.h -- streaming decoder for librsync deltas.
 *
 * The decoder only parses; the caller owns the basis and the output.  Each
 * call consumes delta bytes until one event is ready:
 *
 *   CS_LITERAL   literal data: bytes [*a, *a + *b) of this call's input
 *                (a literal split across input chunks comes out in pieces);
 *   CS_COPY      copy *b bytes from basis offset *a;
 *   CS_DONE      the END command was read (later bytes are ignored);
 *   CS_NEED_INPUT  all input consumed, no event yet.
 *
 * Errors: CS_ERR_MAGIC (not a delta), CS_ERR_CORRUPT (reserved opcode, zero
 * length, negative offset).  Lengths are never allocated: a literal is
 * streamed straight from the input, so an absurd length just means the
 * delta ends early, which the caller reports as truncation.
 */
#ifndef CS_PATCH_H
#define CS_PATCH_H

#include <stddef.h>
#include <stdint.h>

#include "cs_status.h"

typedef struct cs_patch {
    int state;          /* PATCH_* in patch.c */
    uint8_t op;         /* opcode of the command being read */
    uint8_t param[16];  /* parameter bytes gathered so far */
    uint32_t have;      /* bytes in param (or magic bytes seen) */
    uint32_t need;      /* parameter bytes the opcode takes */
    uint64_t remaining; /* literal bytes still to pass through */
    uint64_t offset;    /* delta bytes consumed so far (for error messages) */
} cs_patch;

void cs_patch_init(cs_patch *p);
cs_status cs_patch_next(cs_patch *p, const uint8_t *in, size_t in_len, size_t *in_used,
                        uint64_t *a, uint64_t *b);

#endif
