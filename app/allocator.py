"""The C allocator of a long-running, threaded server: cap glibc's malloc arenas in-process."""

from __future__ import annotations

import ctypes
import ctypes.util
import os

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
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        return bool(libc and libc.mallopt(M_ARENA_MAX, arenas) == 1)
    except (OSError, AttributeError):
        return False
