"""Keeping the server's resident memory flat under concurrent load (glibc only; a no-op elsewhere).

Requests run on gradio's pool of up to 40 threads. Two things in glibc's malloc make resident
memory creep up there even though Python's own heap stays flat (measured with tracemalloc: a
steady object count while RSS grew):

- threads that allocate at the same moment get separate arenas, up to 8 per core, and each keeps
  the freed memory of the tensors it held: `cap_malloc_arenas` bounds them to two;
- memory freed in the middle of an arena is not given back to the OS: `release_free_memory`
  (malloc_trim) returns it after each request.

tests/test_load.py measures the effect (FM_LOAD_ARENAS=16 runs the server without the cap).
"""
from __future__ import annotations

import ctypes
import os
import sys

M_ARENA_MAX = -8  # from glibc's malloc.h


def _libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None  # not glibc (musl, say)


LIBC = _libc()


def cap_malloc_arenas(arenas: int = 2) -> None:
    """Bound glibc's heap arenas for this process, unless MALLOC_ARENA_MAX already does."""
    if LIBC is not None and not os.environ.get("MALLOC_ARENA_MAX"):
        LIBC.mallopt(M_ARENA_MAX, arenas)


def release_free_memory() -> None:
    """Give the heap's free pages back to the OS (a few milliseconds)."""
    if LIBC is not None and os.environ.get("FM_MALLOC_TRIM", "1") != "0":
        LIBC.malloc_trim(0)
