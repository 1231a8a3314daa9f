/* emit.h -- encoding of delta commands, librsync style.
 *
 * Every integer takes the smallest of 1, 2, 4 or 8 big-endian bytes that
 * holds it.  Literals of 1..64 bytes use the immediate opcodes 0x01..0x40;
 * longer ones LITERAL_N1/N2/N4/N8 with the length after the opcode.  A copy
 * is opcode 0x45 + 4*i(position width) + i(length width), i(1,2,4,8) = 0..3.
 */
#ifndef CS_EMIT_H
#define CS_EMIT_H

#include <stddef.h>
#include <stdint.h>

/* Longest command header: opcode + 8-byte position + 8-byte length. */
#define CS_EMIT_MAX_HEADER 17

/* Bytes written for a literal's opcode and length (data not included). */
size_t cs_emit_literal_header(uint8_t *out, uint64_t len);
size_t cs_emit_copy(uint8_t *out, uint64_t pos, uint64_t len);

#endif
