/* delta.c -- streaming delta search (see delta.h for the theory). */
#include <stdlib.h>
#include <string.h>

#include "blake2b_x4.h"
#include "delta.h"
#include "emit.h"

enum { DELTA_HEADER, DELTA_SEARCH, DELTA_TAIL, DELTA_FLUSH, DELTA_DONE };

/* Output cursor. */
typedef struct outbuf {
    uint8_t *p;
    size_t cap;
    size_t len;
} outbuf;

static inline int room(const outbuf *o)
{
    return o->cap - o->len >= CS_DELTA_MIN_OUT;
}

cs_status cs_delta_new(const cs_sumset *sums, cs_delta **out)
{
    *out = NULL;
    if (!sums || !sums->indexed)
        return CS_ERR_STATE;
    cs_delta *d = calloc(1, sizeof *d);
    if (!d)
        return CS_ERR_NOMEM;
    size_t slab = sums->block_len > CS_DELTA_SLAB ? sums->block_len : CS_DELTA_SLAB;
    d->sums = sums;
    d->block_len = sums->block_len;
    d->cap = d->block_len + CS_LITERAL_FLUSH + slab;
    d->buf = malloc(d->cap);
    if (!d->buf) {
        free(d);
        return CS_ERR_NOMEM;
    }
    d->phase = DELTA_HEADER;
    d->last_block = -1;
    *out = d;
    return CS_OK;
}

void cs_delta_free(cs_delta *d)
{
    if (d) {
        free(d->buf);
        free(d);
    }
}

/* --- command output ---------------------------------------------------- */

static void put_header(cs_delta *d, outbuf *o)
{
    if (d->phase == DELTA_HEADER) {
        cs_put_be32(o->p + o->len, CS_MAGIC_DELTA);
        o->len += 4;
        d->phase = DELTA_SEARCH;
    }
}

static void flush_copy(cs_delta *d, outbuf *o)
{
    if (d->have_copy) {
        o->len += cs_emit_copy(o->p + o->len, d->copy_pos, d->copy_len);
        d->copy_bytes += d->copy_len;
        d->commands++;
        d->have_copy = 0;
    }
}

/* Emit buf[lit, lit+len) as one LITERAL (len <= CS_LITERAL_FLUSH) and move lit. */
static void emit_literal(cs_delta *d, outbuf *o, size_t len)
{
    flush_copy(d, o);
    o->len += cs_emit_literal_header(o->p + o->len, len);
    memcpy(o->p + o->len, d->buf + d->lit, len);
    o->len += len;
    d->lit += len;
    d->literal_bytes += len;
    d->commands++;
}

/* The window [pos, pos+len) equals basis block `block`. */
static void take_match(cs_delta *d, outbuf *o, int64_t block, size_t len)
{
    uint64_t bpos = (uint64_t)block * d->block_len;
    if (d->pos > d->lit)
        emit_literal(d, o, d->pos - d->lit);
    if (d->have_copy && d->copy_pos + d->copy_len == bpos) {
        d->copy_len += len;
    } else {
        flush_copy(d, o);
        d->have_copy = 1;
        d->copy_pos = bpos;
        d->copy_len = len;
    }
    d->pos += len;
    d->lit = d->pos;
    d->have_sum = 0;
    d->last_block = block;
}

/* --- weak sums ------------------------------------------------------------ */

static void start_sum(cs_delta *d, size_t len)
{
    if (d->sums->weak == CS_WEAK_ROLLSUM) {
        cs_rollsum_init(&d->rs);
        cs_rollsum_update(&d->rs, d->buf + d->pos, len);
    } else {
        cs_rabinkarp_init(&d->rk);
        cs_rabinkarp_update(&d->rk, d->buf + d->pos, len);
        d->rk_madj = d->rk.mult * CS_RK_ADJ;
    }
    d->have_sum = 1;
}

static inline uint32_t weak_digest(const cs_delta *d)
{
    return d->sums->weak == CS_WEAK_ROLLSUM ? cs_rollsum_digest_inline(&d->rs) : d->rk.hash;
}

static void slide_one(cs_delta *d)
{
    uint8_t out = d->buf[d->pos], in = d->buf[d->pos + d->block_len];
    if (d->sums->weak == CS_WEAK_ROLLSUM)
        cs_rollsum_rotate_inline(&d->rs, out, in);
    else
        cs_rabinkarp_rotate_inline(&d->rk, out, in);
    d->pos++;
}

/* The hot loops: slide from pos towards last (inclusive) until a window's
 * weak sum is in the signature.  Each byte costs a rotate, a multiply and a
 * filter test; only filter hits probe the table.  Returns the slot found
 * (pos is at that window) or NULL once the window at last was rejected. */
static const cs_slot *scan_rollsum(cs_delta *d, size_t last)
{
    const uint8_t *buf = d->buf;
    const size_t bl = d->block_len;
    const cs_sumset *s = d->sums;
    const uint32_t w = (uint32_t)bl, woff = w * CS_ROLLSUM_CHAR_OFFSET;
    uint32_t s1 = d->rs.s1, s2 = d->rs.s2;
    size_t pos = d->pos;
    const cs_slot *slot = NULL;
    for (;;) {
        uint32_t weak = (s2 << 16) | (s1 & 0xffffu);
        uint64_t h = cs_sum_hash(weak);
        if (cs_sumset_maybe(s, h) && (slot = cs_sumset_slot(s, weak, h)) != NULL)
            break;
        if (pos == last)
            break;
        uint32_t out = buf[pos], in = buf[pos + bl];
        s1 += in - out;
        s2 += s1 - w * out - woff;
        pos++;
    }
    d->rs.s1 = s1;
    d->rs.s2 = s2;
    d->pos = pos;
    return slot;
}

static const cs_slot *scan_rabinkarp(cs_delta *d, size_t last)
{
    const uint8_t *buf = d->buf;
    const size_t bl = d->block_len;
    const cs_sumset *s = d->sums;
    const uint32_t mult = d->rk.mult, madj = d->rk_madj;
    uint32_t h32 = d->rk.hash;
    size_t pos = d->pos;
    const cs_slot *slot = NULL;
    for (;;) {
        uint64_t h = cs_sum_hash(h32);
        if (cs_sumset_maybe(s, h) && (slot = cs_sumset_slot(s, h32, h)) != NULL)
            break;
        if (pos == last)
            break;
        h32 = h32 * CS_RK_MULT + buf[pos + bl] - mult * buf[pos] - madj;
        pos++;
    }
    d->rk.hash = h32;
    d->pos = pos;
    return slot;
}

/* --- matching ------------------------------------------------------------- */

static int strong_equal(const cs_sumset *s, size_t block, const uint8_t *strong)
{
    return memcmp(s->strong_sums + block * s->strong_len, strong, s->strong_len) == 0;
}

/* Basis block equal to buf[pos, pos+len), whose weak sum has table slot
 * `slot`, or -1.  The strong sum is computed at most once, and only here. */
static int64_t find_block(const cs_delta *d, const cs_slot *slot, size_t len)
{
    const cs_sumset *s = d->sums;
    uint8_t strong[CS_MAX_STRONG_LEN];
    cs_strong_block(s->strong, d->buf + d->pos, len, strong);
    if (d->last_block >= 0 && (size_t)d->last_block + 1 < s->count) {
        size_t next = (size_t)d->last_block + 1;
        if (s->weak_sums[next] == slot->weak && strong_equal(s, next, strong))
            return (int64_t)next;
    }
    return cs_sumset_search(s, slot, strong);
}

/* Fast path for long unchanged stretches: right after a match, the next
 * windows are usually the next basis blocks.  Check four at once -- weak sums
 * against the expected blocks, then BLAKE2b of all four in one multi-buffer
 * call -- and take the leading ones that match.  This makes exactly the
 * decisions the byte-by-byte path would (the successor block is what
 * find_block tries first); anything else is left to that path. */
static void extend_run(cs_delta *d, outbuf *o)
{
    const cs_sumset *s = d->sums;
    const size_t bl = d->block_len;
    if (s->strong != CS_STRONG_BLAKE2)
        return;
    while (d->last_block >= 0 && (size_t)d->last_block + 4 < s->count
           && d->pos + 4 * bl <= d->end && d->pos - d->lit == 0) {
        size_t next = (size_t)d->last_block + 1;
        const uint8_t *const msgs[4] = {d->buf + d->pos, d->buf + d->pos + bl,
                                        d->buf + d->pos + 2 * bl, d->buf + d->pos + 3 * bl};
        for (int i = 0; i < 4; i++)
            if (cs_weak_block(s->weak, msgs[i], bl) != s->weak_sums[next + i])
                return;
        uint8_t sums[4][CS_BLAKE2_SUM_LEN];
        uint8_t *const outs[4] = {sums[0], sums[1], sums[2], sums[3]};
        cs_blake2b_x4(msgs, bl, CS_BLAKE2_SUM_LEN, outs);
        for (int i = 0; i < 4; i++) {
            uint64_t bpos = (uint64_t)(next + i) * bl;
            /* Only extensions of the pending COPY: they emit nothing, so no
             * output space is needed here. */
            if (!strong_equal(s, next + i, sums[i]) || !d->have_copy
                || d->copy_pos + d->copy_len != bpos)
                return;
            take_match(d, o, (int64_t)(next + i), bl);
        }
    }
}

/* Search every full window held.  CS_NEED_INPUT when the next window is not
 * complete yet, CS_NEED_OUTPUT when the output buffer is nearly full. */
static cs_status search(cs_delta *d, outbuf *o)
{
    const size_t bl = d->block_len;
    for (;;) {
        if (!room(o))
            return CS_NEED_OUTPUT;
        if (d->pos - d->lit >= CS_LITERAL_FLUSH) {
            emit_literal(d, o, CS_LITERAL_FLUSH);
            continue;
        }
        if (d->sums->count == 0) {
            /* Nothing can match: pass bytes through as literals. */
            size_t lim = d->lit + CS_LITERAL_FLUSH;
            d->pos = d->end < lim ? d->end : lim;
            if (d->pos == d->end)
                return CS_NEED_INPUT;
            continue;
        }
        if (d->pos + bl > d->end)
            return CS_NEED_INPUT;
        if (!d->have_sum)
            start_sum(d, bl);
        size_t last = d->end - bl;
        if (last > d->lit + CS_LITERAL_FLUSH)
            last = d->lit + CS_LITERAL_FLUSH;
        const cs_slot *slot = d->sums->weak == CS_WEAK_ROLLSUM ? scan_rollsum(d, last)
                                                               : scan_rabinkarp(d, last);
        if (slot) {
            int64_t block = find_block(d, slot, bl);
            if (block >= 0) {
                take_match(d, o, block, bl);
                extend_run(d, o);
                continue;
            }
        }
        if (d->pos + bl >= d->end)
            return CS_NEED_INPUT;
        slide_one(d);
    }
}

/* End of input: shrink the window over the tail, trying the last block. */
static cs_status search_tail(cs_delta *d, outbuf *o)
{
    const cs_sumset *s = d->sums;
    for (;;) {
        if (!room(o))
            return CS_NEED_OUTPUT;
        if (d->pos - d->lit >= CS_LITERAL_FLUSH) {
            emit_literal(d, o, CS_LITERAL_FLUSH);
            continue;
        }
        if (d->pos == d->end || s->count == 0)
            return CS_OK;
        if (!d->have_sum)
            start_sum(d, d->end - d->pos);
        size_t last = s->count - 1;
        if (weak_digest(d) == s->weak_sums[last]) {
            uint8_t strong[CS_MAX_STRONG_LEN];
            cs_strong_block(s->strong, d->buf + d->pos, d->end - d->pos, strong);
            if (strong_equal(s, last, strong)) {
                take_match(d, o, (int64_t)last, d->end - d->pos);
                return CS_OK;
            }
        }
        if (s->weak == CS_WEAK_ROLLSUM)
            cs_rollsum_rollout(&d->rs, d->buf[d->pos]);
        else
            cs_rabinkarp_rollout(&d->rk, d->buf[d->pos]);
        d->pos++;
    }
}

static void compact(cs_delta *d)
{
    if (d->lit == 0)
        return;
    memmove(d->buf, d->buf + d->lit, d->end - d->lit);
    d->pos -= d->lit;
    d->end -= d->lit;
    d->lit = 0;
}

cs_status cs_delta_feed(cs_delta *d, const uint8_t *in, size_t in_len, size_t *in_used,
                        uint8_t *out, size_t out_cap, size_t *out_len)
{
    outbuf o = {out, out_cap, 0};
    cs_status st;
    *in_used = 0;
    *out_len = 0;
    if (d->phase != DELTA_HEADER && d->phase != DELTA_SEARCH)
        return CS_ERR_STATE;
    if (out_cap < CS_DELTA_MIN_OUT)
        return CS_ERR_PARAM;
    put_header(d, &o);
    for (;;) {
        st = search(d, &o);
        if (st == CS_NEED_OUTPUT || *in_used == in_len)
            break;
        if (d->cap - d->end < in_len - *in_used)
            compact(d);
        size_t n = d->cap - d->end;
        if (n > in_len - *in_used)
            n = in_len - *in_used;
        memcpy(d->buf + d->end, in + *in_used, n);
        d->end += n;
        *in_used += n;
    }
    *out_len = o.len;
    return st;
}

cs_status cs_delta_finish(cs_delta *d, uint8_t *out, size_t out_cap, size_t *out_len)
{
    outbuf o = {out, out_cap, 0};
    cs_status st;
    *out_len = 0;
    if (d->phase == DELTA_DONE)
        return CS_ERR_STATE;
    if (out_cap < CS_DELTA_MIN_OUT)
        return CS_ERR_PARAM;
    put_header(d, &o);
    if (d->phase == DELTA_SEARCH) {
        st = search(d, &o);
        if (st == CS_NEED_OUTPUT)
            goto out;
        d->phase = DELTA_TAIL;
        d->have_sum = 0;
    }
    if (d->phase == DELTA_TAIL) {
        st = search_tail(d, &o);
        if (st == CS_NEED_OUTPUT)
            goto out;
        d->phase = DELTA_FLUSH;
    }
    st = CS_NEED_OUTPUT;
    while (d->lit < d->end) {
        if (!room(&o))
            goto out;
        size_t n = d->end - d->lit;
        emit_literal(d, &o, n < CS_LITERAL_FLUSH ? n : CS_LITERAL_FLUSH);
    }
    if (!room(&o))
        goto out;
    flush_copy(d, &o);
    o.p[o.len++] = CS_OP_END;
    d->phase = DELTA_DONE;
    st = CS_DONE;
out:
    *out_len = o.len;
    return st;
}
