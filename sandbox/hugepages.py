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
import contextlib
import ctypes
import errno

MADV_COLLAPSE = 25  # Linux 6.1+
HUGE = 2 << 20

_libc = ctypes.CDLL(None, use_errno=True)
_libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_libc.madvise.restype = ctypes.c_int
_libc.malloc.restype = ctypes.c_void_p
_libc.malloc.argtypes = [ctypes.c_size_t]
_libc.free.argtypes = [ctypes.c_void_p]


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


class _ArenaAllocator(ctypes.Structure):  # PyObjectArenaAllocator
    _fields_ = [("ctx", ctypes.c_void_p), ("alloc", ctypes.c_void_p), ("free", ctypes.c_void_p)]


@contextlib.contextmanager
def arenas_on_heap():
    """While the zygote preloads, take Python's object arenas from malloc's heap instead of one
    mmap each.

    Left alone, each 1 MiB arena is its own mapping between the libraries loaded meanwhile, too
    small and misaligned for a huge page: some 30 MiB of the zygote that every fork copies entry
    by entry. From the heap they form one contiguous region that collapses into huge pages. The
    allocator is C functions only (no Python runs inside an allocation): calloc(1, size), which
    malloc serves from the heap once a freed 4 MiB block has raised its dynamic mmap threshold
    (the same adjustment any program that frees a large block triggers), and a free that keeps
    the arena. Arenas emptied during the preload stay allocated; the default allocator is back
    for everything after it, so cells behave exactly as in any interpreter."""
    api = ctypes.pythonapi
    old = _ArenaAllocator()
    try:
        api.PyObject_GetArenaAllocator(ctypes.byref(old))
        block = _libc.malloc(4 << 20)
        _libc.free(block)
        keep = _libc.getpagesize  # a C function without side effects: the arena stays allocated
        new = _ArenaAllocator(1, ctypes.cast(_libc.calloc, ctypes.c_void_p).value,
                              ctypes.cast(keep, ctypes.c_void_p).value)
        api.PyObject_SetArenaAllocator(ctypes.byref(new))
    except (AttributeError, OSError):
        old = None  # not CPython, or no such symbols: arenas stay where they were
    try:
        yield
    finally:
        if old is not None:
            api.PyObject_SetArenaAllocator(ctypes.byref(old))
