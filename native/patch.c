/* patch.c -- delta command decoder (see patch.h). */
#include "patch.h"
#include "rsync_format.h"

enum { PATCH_MAGIC, PATCH_OPCODE, PATCH_PARAMS, PATCH_LITERAL, PATCH_DONE, PATCH_FAILED };

void cs_patch_init(cs_patch *p)
{
    p->state = PATCH_MAGIC;
    p->op = 0;
    p->have = 0;
    p->need = 0;
    p->remaining = 0;
    p->offset = 0;
}

static uint64_t get_be(const uint8_t *p, uint32_t n)
{
    uint64_t v = 0;
    for (uint32_t i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

/* Parameter bytes for an opcode, or 0 for reserved opcodes. */
static uint32_t param_len(uint8_t op)
{
    if (op >= CS_OP_LITERAL_N1 && op <= CS_OP_LITERAL_N8)
        return 1u << (op - CS_OP_LITERAL_N1);
    if (op >= CS_OP_COPY_N1_N1 && op <= CS_OP_COPY_N8_N8) {
        unsigned i = op - CS_OP_COPY_N1_N1;
        return (1u << (i / 4)) + (1u << (i % 4));
    }
    return 0;
}

static cs_status fail(cs_patch *p, cs_status st)
{
    p->state = PATCH_FAILED;
    return st;
}

/* All parameters are in: turn the command into an event or a literal run. */
static cs_status finish_params(cs_patch *p, uint64_t *a, uint64_t *b)
{
    if (p->op <= CS_OP_LITERAL_N8) {
        uint64_t len = get_be(p->param, p->need);
        if (len == 0)
            return fail(p, CS_ERR_CORRUPT);
        p->remaining = len;
        p->state = PATCH_LITERAL;
        return CS_OK;
    }
    unsigned i = p->op - CS_OP_COPY_N1_N1;
    uint32_t wpos = 1u << (i / 4), wlen = 1u << (i % 4);
    uint64_t pos = get_be(p->param, wpos), len = get_be(p->param + wpos, wlen);
    /* librsync reads these as signed 64-bit and rejects negatives and zero. */
    if (len == 0 || len >> 63 || pos >> 63)
        return fail(p, CS_ERR_CORRUPT);
    *a = pos;
    *b = len;
    p->state = PATCH_OPCODE;
    return CS_COPY;
}

cs_status cs_patch_next(cs_patch *p, const uint8_t *in, size_t in_len, size_t *in_used,
                        uint64_t *a, uint64_t *b)
{
    size_t i = 0;
    cs_status st = CS_NEED_INPUT;
    *a = *b = 0;
    *in_used = 0;
    if (p->state == PATCH_FAILED)
        return CS_ERR_STATE;
    if (p->state == PATCH_DONE)
        return CS_DONE;
    while (i < in_len) {
        if (p->state == PATCH_MAGIC) {
            static const uint8_t magic[4] = {0x72, 0x73, 0x02, 0x36};
            if (in[i] != magic[p->have]) {
                st = fail(p, CS_ERR_MAGIC);
                break;
            }
            i++;
            if (++p->have == 4)
                p->state = PATCH_OPCODE;
        } else if (p->state == PATCH_OPCODE) {
            uint8_t op = in[i++];
            p->op = op;
            p->have = 0;
            if (op == CS_OP_END) {
                p->state = PATCH_DONE;
                st = CS_DONE;
                break;
            }
            if (op <= CS_OP_LITERAL_64) {
                p->remaining = op;
                p->state = PATCH_LITERAL;
            } else if ((p->need = param_len(op)) != 0) {
                p->state = PATCH_PARAMS;
            } else {
                i--; /* point the offset at the bad opcode */
                st = fail(p, CS_ERR_CORRUPT);
                break;
            }
        } else if (p->state == PATCH_PARAMS) {
            p->param[p->have++] = in[i++];
            if (p->have == p->need) {
                st = finish_params(p, a, b);
                if (st != CS_OK)
                    break;
                st = CS_NEED_INPUT;
            }
        } else { /* PATCH_LITERAL, remaining > 0 */
            size_t avail = in_len - i;
            uint64_t n = p->remaining < avail ? p->remaining : avail;
            *a = i;
            *b = n;
            i += (size_t)n;
            p->remaining -= n;
            if (p->remaining == 0)
                p->state = PATCH_OPCODE;
            st = CS_LITERAL;
            break;
        }
    }
    p->offset += i;
    *in_used = i;
    return st;
}
