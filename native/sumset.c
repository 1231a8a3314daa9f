/* sumset.c -- signature storage and lookup index (see sumset.h). */
#include <stdlib.h>
#include <string.h>

#include "sumset.h"

/* Records are numbered with 32-bit integers; the cap keeps the hash table
 * size (twice the distinct sums, a power of two) within 32 bits too. */
#define SUMSET_MAX_BLOCKS ((1u << 30) - 1)
/* Filter sizing: 16 bits per distinct weak sum, within these bounds. */
#define FILTER_BITS_PER_SUM 16
#define FILTER_MIN_WORDS 16
#define FILTER_MAX_WORDS (1u << 22) /* 32 MiB; reached only past 16M distinct sums */

cs_status cs_sumset_new(uint32_t magic, uint32_t block_len, uint32_t strong_len, cs_sumset **out)
{
    cs_weak_kind weak;
    cs_strong_kind strong;
    *out = NULL;
    cs_status st = cs_sig_check(magic, block_len, strong_len, &weak, &strong);
    if (st != CS_OK)
        return st;
    cs_sumset *s = calloc(1, sizeof *s);
    if (!s)
        return CS_ERR_NOMEM;
    s->magic = magic;
    s->block_len = block_len;
    s->strong_len = strong_len;
    s->weak = weak;
    s->strong = strong;
    *out = s;
    return CS_OK;
}

void cs_sumset_free(cs_sumset *s)
{
    if (!s)
        return;
    free(s->weak_sums);
    free(s->strong_sums);
    free(s->order);
    free(s->slots);
    free(s->filter);
    free(s);
}

/* *out = a * b; 0 if the product does not fit in size_t.  With a 32-bit
 * size_t, SUMSET_MAX_BLOCKS records of up to 36 bytes would not. */
static int mul_fits(size_t a, size_t b, size_t *out)
{
    if (b != 0 && a > SIZE_MAX / b)
        return 0;
    *out = a * b;
    return 1;
}

/* Bytes of the two record arrays for cap records; 0 if that overflows. */
static int record_bytes(const cs_sumset *s, size_t cap, size_t *weak, size_t *strong)
{
    return mul_fits(cap, sizeof(uint32_t), weak) && mul_fits(cap, s->strong_len, strong);
}

static cs_status grow(cs_sumset *s, size_t need)
{
    size_t cap = s->capacity ? s->capacity : 1024;
    while (cap < need)
        cap = cap > SUMSET_MAX_BLOCKS / 2 ? SUMSET_MAX_BLOCKS : cap * 2;
    if (cap > SUMSET_MAX_BLOCKS)
        cap = SUMSET_MAX_BLOCKS;
    size_t weak_bytes, strong_bytes;
    if (!record_bytes(s, cap, &weak_bytes, &strong_bytes)) {
        cap = need; /* doubling overshot what size_t can address; try the exact need */
        if (!record_bytes(s, cap, &weak_bytes, &strong_bytes))
            return CS_ERR_LIMIT;
    }
    uint32_t *w = realloc(s->weak_sums, weak_bytes);
    if (!w)
        return CS_ERR_NOMEM;
    s->weak_sums = w;
    uint8_t *st = realloc(s->strong_sums, strong_bytes);
    if (!st)
        return CS_ERR_NOMEM;
    s->strong_sums = st;
    s->capacity = cap;
    return CS_OK;
}

cs_status cs_sumset_add(cs_sumset *s, const uint8_t *records, size_t n)
{
    const size_t rec = 4 + (size_t)s->strong_len;
    if (s->indexed)
        return CS_ERR_STATE;
    if (n > SUMSET_MAX_BLOCKS - s->count)
        return CS_ERR_LIMIT;
    if (s->count + n > s->capacity) {
        cs_status st = grow(s, s->count + n);
        if (st != CS_OK)
            return st;
    }
    for (size_t i = 0; i < n; i++, records += rec) {
        s->weak_sums[s->count + i] = cs_get_be32(records);
        memcpy(s->strong_sums + (s->count + i) * s->strong_len, records + 4, s->strong_len);
    }
    s->count += n;
    return CS_OK;
}

size_t cs_sumset_count(const cs_sumset *s)
{
    return s->count;
}

static inline const uint8_t *strong_of(const cs_sumset *s, uint32_t block)
{
    return s->strong_sums + (size_t)block * s->strong_len;
}

/* Order of two blocks: by weak sum, then strong sum, then block number. */
static int block_cmp(const cs_sumset *s, uint32_t a, uint32_t b)
{
    if (s->weak_sums[a] != s->weak_sums[b])
        return s->weak_sums[a] < s->weak_sums[b] ? -1 : 1;
    int c = memcmp(strong_of(s, a), strong_of(s, b), s->strong_len);
    if (c)
        return c;
    return a < b ? -1 : (a > b);
}

/* Bottom-up merge sort: O(n log n) on any input, and unlike qsort it can
 * carry the set as context without a global variable.  The passes alternate
 * between the two arrays; the one holding the result is returned. */
static uint32_t *sort_blocks(const cs_sumset *s, uint32_t *a, uint32_t *tmp, size_t n)
{
    for (size_t width = 1; width < n; width *= 2) {
        for (size_t lo = 0; lo < n; lo += 2 * width) {
            size_t mid = lo + width < n ? lo + width : n;
            size_t hi = lo + 2 * width < n ? lo + 2 * width : n;
            size_t i = lo, j = mid, k = lo;
            while (i < mid && j < hi)
                tmp[k++] = block_cmp(s, a[i], a[j]) <= 0 ? a[i++] : a[j++];
            while (i < mid)
                tmp[k++] = a[i++];
            while (j < hi)
                tmp[k++] = a[j++];
        }
        uint32_t *swap = a;
        a = tmp;
        tmp = swap;
    }
    return a;
}

/* Smallest power of two >= n; 0 if that does not fit in size_t. */
static size_t pow2_at_least(size_t n)
{
    size_t p = 1;
    while (p < n) {
        if (p > SIZE_MAX / 2)
            return 0;
        p *= 2;
    }
    return p;
}

static unsigned log2_exact(size_t p)
{
    unsigned k = 0;
    while (((size_t)1 << k) < p)
        k++;
    return k;
}

/* Drop repeats of an identical (weak, strong) pair from the sorted array,
 * keeping the lowest block; returns the new length, counts distinct weaks. */
static size_t dedupe(const cs_sumset *s, uint32_t *a, size_t n, size_t *distinct)
{
    size_t unique = 0;
    *distinct = 0;
    for (size_t i = 0; i < n; i++) {
        if (unique && s->weak_sums[a[unique - 1]] == s->weak_sums[a[i]]) {
            if (memcmp(strong_of(s, a[unique - 1]), strong_of(s, a[i]), s->strong_len) == 0)
                continue;
        } else {
            (*distinct)++;
        }
        a[unique++] = a[i];
    }
    return unique;
}

static void fill_index(cs_sumset *s)
{
    const uint32_t *a = s->order;
    for (size_t i = 0; i < s->unique;) {
        uint32_t weak = s->weak_sums[a[i]];
        size_t j = i + 1;
        while (j < s->unique && s->weak_sums[a[j]] == weak)
            j++;
        uint64_t h = cs_sum_hash(weak);
        s->filter[h >> s->filter_shift] |= ((uint64_t)1 << ((h >> 20) & 63))
                                           | ((uint64_t)1 << ((h >> 26) & 63));
        uint32_t slot = (uint32_t)(h >> s->slot_shift);
        while (s->slots[slot].count)
            slot = (slot + 1) & s->slot_mask;
        s->slots[slot].weak = weak;
        s->slots[slot].first = (uint32_t)i;
        s->slots[slot].count = (uint32_t)(j - i);
        i = j;
    }
}

cs_status cs_sumset_index(cs_sumset *s)
{
    const size_t n = s->count;
    if (s->indexed)
        return CS_ERR_STATE;
    /* n * 4 bytes fit: grow() checked as much for the weak sums */
    uint32_t *a = malloc((n ? n : 1) * sizeof *a);
    uint32_t *tmp = malloc((n ? n : 1) * sizeof *tmp);
    if (!a || !tmp) {
        free(a);
        free(tmp);
        return CS_ERR_NOMEM;
    }
    for (size_t i = 0; i < n; i++)
        a[i] = (uint32_t)i;
    uint32_t *sorted = sort_blocks(s, a, tmp, n);
    free(sorted == a ? tmp : a);

    size_t distinct;
    s->order = sorted;
    s->unique = dedupe(s, sorted, n, &distinct);

    /* slot_mask and the run fields are 32-bit: the table may not exceed 2^32 slots */
    size_t nslots = distinct <= (SIZE_MAX - 4) / 2 ? pow2_at_least(2 * distinct + 4) : 0;
    if (nslots == 0 || (uint64_t)nslots - 1 > UINT32_MAX)
        return CS_ERR_LIMIT;
    size_t nwords = distinct / (64 / FILTER_BITS_PER_SUM); /* no product to overflow */
    nwords = nwords > FILTER_MAX_WORDS ? FILTER_MAX_WORDS : pow2_at_least(nwords);
    if (nwords < FILTER_MIN_WORDS)
        nwords = FILTER_MIN_WORDS;
    s->slots = calloc(nslots, sizeof *s->slots);
    s->filter = calloc(nwords, sizeof *s->filter);
    if (!s->slots || !s->filter)
        return CS_ERR_NOMEM; /* cs_sumset_free releases what was allocated */
    s->slot_mask = (uint32_t)(nslots - 1);
    s->slot_shift = 64 - log2_exact(nslots);
    s->filter_words = nwords;
    s->filter_shift = 64 - log2_exact(nwords);
    fill_index(s);
    s->indexed = 1;
    return CS_OK;
}

/* a + b * c, saturating at SIZE_MAX (memory figures must not wrap to small). */
static size_t add_product(size_t a, size_t b, size_t c)
{
    size_t product;
    if (!mul_fits(b, c, &product) || product > SIZE_MAX - a)
        return SIZE_MAX;
    return a + product;
}

size_t cs_sumset_memory(const cs_sumset *s)
{
    size_t bytes = add_product(sizeof *s, s->capacity, 4 + (size_t)s->strong_len);
    if (s->indexed) {
        bytes = add_product(bytes, s->unique, sizeof *s->order);
        bytes = add_product(bytes, (size_t)s->slot_mask + 1, sizeof *s->slots);
        bytes = add_product(bytes, s->filter_words, sizeof *s->filter);
    }
    return bytes;
}

int64_t cs_sumset_search(const cs_sumset *s, const cs_slot *slot, const uint8_t *strong)
{
    size_t lo = slot->first, hi = (size_t)slot->first + slot->count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = memcmp(strong_of(s, s->order[mid]), strong, s->strong_len);
        if (c == 0)
            return s->order[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}
