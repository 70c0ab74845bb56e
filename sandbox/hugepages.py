"""Back the zygote's heap with transparent huge pages before anything forks from it.

Every cell is a fork of the zygote (through the template or a session's parked state), and the
kernel's cost of a fork and of the child's exit grows with the number of page-table entries it
copies and later tears down: about 18k 4 KiB entries for a heap holding numpy, pandas and
matplotlib, several milliseconds per cell. A 2 MiB huge page is one entry. MADV_COLLAPSE turns
the already-populated heap into huge pages synchronously and without marking the regions
MADV_HUGEPAGE, so memory a child allocates later still comes in 4 KiB pages (no 2 MiB zeroing on
a cell's page faults). A child that writes into a huge page gets that one region split back to
4 KiB entries in its own page table only; the zygote's stays huge for the next fork.
"""
import ctypes
import errno

MADV_COLLAPSE = 25  # Linux 6.1+
HUGE = 2 << 20

_libc = ctypes.CDLL(None, use_errno=True)
_libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_libc.madvise.restype = ctypes.c_int


def _private_anon_ranges():
    """Writable private anonymous mappings (Python's arenas, malloc's heap, numpy's buffers)."""
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            path = parts[5] if len(parts) > 5 else ""
            if parts[1] != "rw-p" or (path and path != "[heap]"):
                continue
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            start, end = (lo + HUGE - 1) & ~(HUGE - 1), hi & ~(HUGE - 1)
            if end > start:
                yield start, end


def collapse_heap():
    """Collapse what can be collapsed; returns the bytes now backed by huge pages (0 where the
    kernel is too old or THP is off: that only costs speed, never correctness)."""
    done = 0
    try:
        ranges = list(_private_anon_ranges())
    except OSError:
        return 0
    for start, end in ranges:
        # One huge page at a time: a range that fails (a pinned page, no free 2 MiB block)
        # must not stop the rest.
        for addr in range(start, end, HUGE):
            if _libc.madvise(addr, HUGE, MADV_COLLAPSE) == 0:
                done += HUGE
            elif ctypes.get_errno() == errno.EINVAL:
                break  # this mapping cannot have huge pages (or the kernel has no MADV_COLLAPSE)
    return done
