"""Errors raised by the native layer and the rsync engine built on it.

:class:`RsyncError` is the one family for everything that can be wrong with a
signature, a delta or the parameters used to make them. Both backends (C and
pure Python) raise exactly the same classes with the same messages, so callers
and tests never care which backend ran. Misuse of the hash primitives (a digest
size out of range, mismatched roll buffers) raises :class:`ValueError` like
:mod:`hashlib` does.
"""

from __future__ import annotations

from csembed.errors import CsembedError


class RsyncError(CsembedError):
    """A signature, delta or rsync parameter is unusable.

    ``exit_code`` is the status ``rdiff`` (librsync's ``rs_result``) exits with
    for the same kind of failure, so ``csembed rdiff`` can be a drop-in.
    """

    exit_code = 108  # RS_PARAM_ERROR


class RsyncParamError(RsyncError):
    """A block length, strong length or magic number was rejected."""

    exit_code = 108  # RS_PARAM_ERROR


class BadMagicError(RsyncError):
    """The stream does not start with a signature or delta magic number."""

    exit_code = 104  # RS_BAD_MAGIC


class CorruptError(RsyncError):
    """The stream violates the format (reserved opcode, zero length, COPY past EOF...)."""

    exit_code = 106  # RS_CORRUPT


class TruncatedError(RsyncError):
    """The stream ended before it was complete (no END command, partial record...)."""

    exit_code = 103  # RS_INPUT_ENDED


class LimitError(RsyncError):
    """A size in the stream exceeds a limit the caller set."""

    exit_code = 106  # RS_CORRUPT
