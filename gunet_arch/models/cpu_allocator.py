"""Keep freed memory in the process during CPU training (glibc only).

PyTorch's CPU allocator takes every tensor from malloc. glibc serves blocks over its mmap
threshold (at most 32 MiB) with fresh mmaps and hands them back to the kernel on free, and trims
the heap's top above 128 KiB. A training step frees and re-allocates the same activations every
iteration, so each step faults all of them in again, page by page: gUNet-S at batch 16, 256²,
took 4.6 million minor page faults and 17 of its 42 CPU-seconds in the kernel per step on a
2-core Xeon. With mmap off and trimming off, malloc reuses the freed blocks; the step then runs in
about 40% of the time. The price is that the process keeps its peak heap (which training reaches
again every step anyway) until it exits.
"""
import ctypes
import ctypes.util
import platform

# From glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


def keep_freed_memory():
    """Tell glibc's malloc to reuse freed blocks instead of returning them to the kernel.

    Returns a short description of what was done, for the log. Other C libraries (musl, macOS,
    Windows) are left alone."""
    if platform.system() != 'Linux' or platform.libc_ver()[0] != 'glibc':
        return 'left as it is (not glibc)'
    libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6', use_errno=True)
    # mallopt returns 1 on success. A trim threshold of -1 turns trimming off (mallopt(3)); any
    # finite one that fits mallopt's int, 2 GiB at most, is below what a gUNet-S step at batch
    # 16 frees at once, and the heap would be trimmed and faulted in again every step.
    ok = libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, -1) == 1
    return 'freed memory kept for reuse (glibc malloc: no mmap, no trim)' if ok else 'glibc refused mallopt'
