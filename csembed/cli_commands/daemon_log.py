"""The daemon's log: one line per event, plain words, repeated failures collapsed.

Theory of operation
-------------------
:func:`setup_logging` sends the root logger to stderr (journald adds its own
time stamps) and, with ``--log-file``, also to a file (appended, one line per
event). Every record passes through :class:`CollapsingHandler`, which:

* keeps each event on **one line**: a message or traceback with newlines is
  joined with `` | ``; below ``debug`` level a traceback shrinks to its last
  line (``ConnectionResetError: [Errno 104] Connection reset by peer``);
* shows **no Python reprs**: an exception or an object whose repr is the
  default ``<...>`` given as a logging argument is written as plain text;
* **collapses repeats**: the same message from the same logger -- compared
  with its numbers blanked, so that one host failing from ever new source
  ports is one message -- is written at most ``BURST`` times in ``WINDOW``
  seconds; the rest are counted and, once the window is over (at the next
  record or at close), summed up in one line:
  ``connection 10.0.0.5:40312 ended: authentication failed ×12 more in 60 s``.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from csembed.errors import CsembedError

__all__ = ["BURST", "WINDOW", "CollapsingHandler", "LogFileError", "setup_logging"]

WINDOW: Final = 60.0  #: seconds over which repeats are counted
BURST: Final = 3  #: occurrences of one message written in full per window
FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_NUMBERS: Final = re.compile(r"\d+")


class LogFileError(CsembedError):
    """The log file cannot be opened."""


class _Plain:
    """A logging argument shown as plain text whether formatted with %s or %r."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __str__(self) -> str:
        return self.text

    __repr__ = __str__


def _plain(value: Any) -> Any:
    if isinstance(value, BaseException):
        text = str(value)
        return _Plain(f"{type(value).__name__}: {text}" if text else type(value).__name__)
    if isinstance(value, str | int | float | bytes | type(None)):
        return value
    if repr(value).startswith("<"):
        return _Plain(str(value) if type(value).__str__ is not object.__str__
                      else type(value).__name__)
    return value


class _OneLine(logging.Formatter):
    def __init__(self, verbose: bool) -> None:
        super().__init__(FORMAT)
        self.verbose = verbose

    def formatException(self, ei: Any) -> str:  # noqa: N802 (logging's name)
        if self.verbose:
            return super().formatException(ei)
        _, exc, _ = ei
        return f"{type(exc).__name__}: {exc}" if exc is not None else ""

    def format(self, record: logging.LogRecord) -> str:
        return " | ".join(part for part in super().format(record).splitlines() if part.strip())


class CollapsingHandler(logging.Handler):
    """Writes to ``targets`` one line per event, repeats collapsed (module docstring)."""

    def __init__(self, targets: list[logging.Handler], *,
                 clock: Callable[[], float] = time.monotonic,
                 window: float = WINDOW, burst: int = BURST) -> None:
        super().__init__()
        self.targets = targets
        self.clock = clock
        self.window = window
        self.burst = burst
        # (logger, level, message without numbers) -> [window start, written, suppressed,
        # last record]
        self._seen: dict[tuple[str, int, str], list[Any]] = {}

    def _summarise(self, now: float, *, everything: bool = False) -> None:
        for key, entry in list(self._seen.items()):
            start, _, suppressed, last = entry
            if not everything and now - start < self.window:
                continue
            del self._seen[key]
            if suppressed:
                summary = logging.makeLogRecord(last.__dict__)
                summary.msg = f"{last.getMessage()} ×{suppressed} more in {self.window:g} s"
                summary.args = None
                summary.exc_info = summary.exc_text = None
                self._write(summary)

    def _write(self, record: logging.LogRecord) -> None:
        for target in self.targets:
            if record.levelno >= target.level:
                target.handle(record)

    def emit(self, record: logging.LogRecord) -> None:
        if isinstance(record.args, tuple):
            record.args = tuple(_plain(a) for a in record.args)
        now = self.clock()
        self._summarise(now)
        try:
            text = record.getMessage()
        except Exception:  # a bad format string: let the target report it
            text = str(record.msg)
        key = (record.name, record.levelno, _NUMBERS.sub("#", text))
        entry = self._seen.setdefault(key, [now, 0, 0, record])
        entry[3] = record
        if entry[1] < self.burst:
            entry[1] += 1
            self._write(record)
        else:
            entry[2] += 1

    def close(self) -> None:
        self._summarise(self.clock(), everything=True)
        for target in self.targets:
            target.flush()
            target.close()
        super().close()


def setup_logging(level: str, log_file: Path | None) -> CollapsingHandler:
    """Configure the root logger for ``csembed daemon``; returns the handler (close it)."""
    numeric = getattr(logging, level.upper())
    formatter = _OneLine(verbose=numeric <= logging.DEBUG)
    targets: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file is not None:
        try:
            log_file.parent.mkdir(parents=True, exist_ok=True)
            targets.append(logging.FileHandler(log_file, encoding="utf-8"))
        except OSError as exc:
            raise LogFileError(f"--log-file {log_file}: {exc.strerror or exc}") from None
    for target in targets:
        target.setFormatter(formatter)
    handler = CollapsingHandler(targets)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    return handler
