"""The C allocator of a long-running, threaded server: cap glibc's malloc arenas and hand the
memory it keeps free back to the OS, in-process."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
from functools import cache
from pathlib import Path

M_ARENA_MAX = -8  # glibc's mallopt parameter number
DEFAULT_ARENAS = 2


def limit_malloc_arenas(arenas: int = DEFAULT_ARENAS) -> bool:
    """Cap glibc's malloc arenas (what ``MALLOC_ARENA_MAX`` does), from inside the process.

    Every thread that meets a locked arena gets a new one (up to 8 per core) and freed memory
    stays spread over them, so a threaded server's RSS creeps up. The environment variable is
    read only when the process starts, so a Gradio-SDK Space (which runs our file, not our
    launcher) needs this call, made before the worker threads exist. No-op off glibc.
    """
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False  # the launcher already chose
    libc = _libc()
    try:
        return bool(libc and libc.mallopt(M_ARENA_MAX, arenas) == 1)
    except AttributeError:
        return False


def release_free_memory() -> bool:
    """Give the free pages inside glibc's heaps back to the OS (``malloc_trim(0)``).

    glibc returns memory on its own only from the top of a heap: a buffer freed below a
    still-live object stays resident, so a server's RSS grows while its live heap does not
    (measured: see ``app.ui.serving.HeapTrim``). True when pages were released; False when none
    were, or off glibc.
    """
    libc = _libc()
    try:
        return bool(libc and libc.malloc_trim(0))
    except AttributeError:
        return False


class _MallInfo2(ctypes.Structure):
    """glibc's ``struct mallinfo2`` (2.33+): ten ``size_t`` counters."""

    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd",
            "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost",
        )
    ]  # fmt: skip


def heap_statistics() -> dict[str, int]:
    """What glibc's heaps hold, in bytes: ``in_use`` (allocated), ``free`` (kept, not returned),
    ``mmapped`` (large blocks mapped on their own). Empty off glibc or before glibc 2.33.

    Tells apart the two ways a server's RSS grows: live objects (``in_use`` rises) or
    fragmentation (``free`` rises while ``in_use`` stays).
    """
    libc = _libc()
    try:
        mallinfo2 = libc.mallinfo2 if libc else None
    except AttributeError:
        return {}
    if mallinfo2 is None:
        return {}
    mallinfo2.restype = _MallInfo2
    info = mallinfo2()
    return {"in_use": info.uordblks, "free": info.fordblks, "mmapped": info.hblkhd}


def resident_bytes(pid: int | str = "self") -> int:
    """Resident set size of process ``pid`` (this one by default) from /proc; 0 when it is gone
    or off Linux."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    match = re.search(r"^VmRSS:\s+(\d+)\s+kB", status, re.MULTILINE)
    return int(match.group(1)) * 1024 if match else 0


@cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None
