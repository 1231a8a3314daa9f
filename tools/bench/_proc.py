"""Reading a process's memory figures from ``/proc``, shared by the benchmarks
here that watch a daemon's resident memory (imported as ``_proc``, as
``_timing`` is)."""

from __future__ import annotations


def vm_status(pid: int) -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` (peak) of process ``pid``, in bytes."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) * 1024
    return out
