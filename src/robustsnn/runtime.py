"""Process-wide settings that make CPU training and attacks faster.

A time-folded SNN works on tensors T times larger than its ANN, megabytes to tens of megabytes
each. With its default settings glibc serves such blocks with ``mmap`` and gives them back on
free (or trims them off the heap), so every step touches fresh pages again: on a virtual
machine these page faults can cost more than the arithmetic. :func:`keep_freed_memory` serves
blocks up to 32 MiB (glibc's limit) from the heap and keeps freed heap memory for reuse;
larger blocks still come from ``mmap``. The price is memory: what a step freed stays with the
process, and heap fragmentation can raise the peak resident set by about a tenth
(``benchmarks/snn_speed.py --allocator keep|default`` measures both). The command line does
this for every job; Python users call it once.
"""

from __future__ import annotations

import ctypes
import ctypes.util

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_MAX = 32 * 2**20  # glibc's upper limit on 64-bit systems
_INT_MAX = 2**31 - 1


def keep_freed_memory() -> bool:
    """Serve blocks up to 32 MiB from the heap and keep freed memory for reuse (glibc only).

    Returns True when the allocator accepted the settings, False where there is no glibc
    ``mallopt`` (macOS, musl): nothing changes there.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)) and bool(
        mallopt(_M_TRIM_THRESHOLD, _INT_MAX)
    )
