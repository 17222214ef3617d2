"""Giving freed memory back to the system.

glibc's malloc keeps freed memory in its arenas for reuse, and its mmap
threshold grows after large blocks are freed, so that later large bodies come
from the heap too: after a burst of large fills the process stayed hundreds of
MiB above its live data with an empty cache (bench/memory.py). ``malloc_trim(0)``
returns the free pages of every arena. Elsewhere (macOS, musl) this is a no-op.
Must not import aiohttp.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys
from collections.abc import Callable

log = logging.getLogger(__name__)


def _find_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    return trim


_TRIM = _find_trim()


def release_memory() -> bool:
    """Return free heap memory to the system; False where that is not possible."""
    if _TRIM is None:
        return False
    _TRIM(0)
    log.debug("freed memory returned to the system (malloc_trim)")
    return True
