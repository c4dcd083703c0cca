"""Process-wide settings that make CPU training and attacks faster.

A time-folded SNN works on tensors T times larger than its ANN, tens of megabytes each. glibc
hands such blocks out with ``mmap`` and returns them on free, so every step touches fresh pages
again: on a virtual machine the page faults can cost more than the arithmetic. Keeping freed
memory in the heap for reuse removes them (the resident set stays at its peak instead of
shrinking between steps). The command line does this for every job; Python users call
:func:`keep_freed_memory` once.
"""

from __future__ import annotations

import ctypes
import ctypes.util

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_INT_MAX = 2**31 - 1


def keep_freed_memory() -> bool:
    """Serve large blocks from the heap and keep freed memory for reuse (glibc only).

    Returns True when the allocator accepted the settings, False where there is no glibc
    ``mallopt`` (macOS, musl): nothing changes there.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _INT_MAX))
