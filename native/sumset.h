/* sumset.h -- a loaded signature and the index the delta search uses.
 *
 * Records are appended in chunks (cs_sumset_add) while a signature streams
 * in, then cs_sumset_index builds three read-only structures:
 *
 *  - order: block numbers sorted by (weak, strong, block), keeping only the
 *    lowest block of each identical (weak, strong) pair, so a lookup is a
 *    binary search and a hostile signature full of equal weak sums costs
 *    O(log n) per lookup, never a linear scan;
 *  - slots: an open-addressing table from weak sum to its run in order;
 *  - filter: a blocked Bloom filter, two bits per distinct weak sum in one
 *    64-bit word, 16 bits of filter per sum (false positives about 2%),
 *    tested once per byte by the rolling search so that the common miss
 *    costs one L1/L2 load instead of a table probe.
 *
 * Filter and table are addressed by the bits of one multiplicative hash of
 * the weak sum (cs_sum_hash): the top bits pick the filter word and the slot,
 * two middle 6-bit fields pick the bits inside the word.
 *
 * After indexing the set is immutable and may be shared by several delta
 * searches, including concurrently.
 */
#ifndef CS_SUMSET_H
#define CS_SUMSET_H

#include <stddef.h>
#include <stdint.h>

#include "cs_status.h"
#include "rsync_format.h"

/* One hash-table slot: the run of `order` entries sharing one weak sum. */
typedef struct cs_slot {
    uint32_t weak;  /* weak sum of every entry in the run */
    uint32_t first; /* index of the run's first entry in order */
    uint32_t count; /* entries in the run; 0 marks an empty slot */
} cs_slot;

typedef struct cs_sumset {
    uint32_t magic;         /* signature magic */
    uint32_t block_len;     /* basis bytes per block */
    uint32_t strong_len;    /* strong-sum bytes per record */
    cs_weak_kind weak;      /* weak sum selected by magic */
    cs_strong_kind strong;  /* strong hash selected by magic */
    size_t count;           /* records loaded */
    size_t capacity;        /* records the arrays can hold */
    uint32_t *weak_sums;    /* count weak sums, in block order */
    uint8_t *strong_sums;   /* count * strong_len bytes, in block order */
    int indexed;            /* index built; no more records accepted */
    uint32_t *order;        /* unique entries, see above */
    size_t unique;          /* entries in order */
    cs_slot *slots;         /* hash table, slot_mask + 1 slots */
    uint32_t slot_mask;     /* table size - 1 (a power of two) */
    unsigned slot_shift;    /* hash >> slot_shift gives the home slot */
    uint64_t *filter;       /* Bloom filter words */
    size_t filter_words;    /* number of words (a power of two, >= 16) */
    unsigned filter_shift;  /* hash >> filter_shift gives the word */
} cs_sumset;

cs_status cs_sumset_new(uint32_t magic, uint32_t block_len, uint32_t strong_len, cs_sumset **out);
void cs_sumset_free(cs_sumset *s);
/* Append n whole records (4 + strong_len bytes each). */
cs_status cs_sumset_add(cs_sumset *s, const uint8_t *records, size_t n);
cs_status cs_sumset_index(cs_sumset *s);
size_t cs_sumset_count(const cs_sumset *s);
/* Bytes held by the set and its index (for memory accounting). */
size_t cs_sumset_memory(const cs_sumset *s);

/* Fibonacci hashing: one multiply spreads every weak-sum bit upwards (rollsum
 * values are far from uniform); the product's high bits are used. */
static inline uint64_t cs_sum_hash(uint32_t weak)
{
    return (uint64_t)weak * 0x9E3779B97F4A7C15ull;
}

/* Is the weak sum with this hash possibly in the set?  No false negatives. */
static inline int cs_sumset_maybe(const cs_sumset *s, uint64_t h)
{
    uint64_t mask = ((uint64_t)1 << ((h >> 20) & 63)) | ((uint64_t)1 << ((h >> 26) & 63));
    return (s->filter[h >> s->filter_shift] & mask) == mask;
}

/* The slot of weak (hash h), or NULL. */
static inline const cs_slot *cs_sumset_slot(const cs_sumset *s, uint32_t weak, uint64_t h)
{
    uint32_t i = (uint32_t)(h >> s->slot_shift);
    while (s->slots[i].count) {
        if (s->slots[i].weak == weak)
            return &s->slots[i];
        i = (i + 1) & s->slot_mask;
    }
    return NULL;
}

/* Lowest block of the slot's run whose strong sum equals strong, or -1. */
int64_t cs_sumset_search(const cs_sumset *s, const cs_slot *slot, const uint8_t *strong);

#endif
