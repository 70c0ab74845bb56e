"""Reseeding the random generators (random, numpy) in every cell's process, cheaply.

A fork must not replay the stream of the process it was forked from. The seeding calls of both
libraries run Python-level machinery whose first use in a fresh fork copies a hundred pages or
more; the template prepares what it can once, so a one-shot child only writes fresh entropy.
"""
import _random
import os
import random
import sys


class _NumpySeeder:
    """Reseeds numpy's global (legacy) generator in a fresh fork.

    `fast()` writes OS entropy straight into the MT19937 state: 624 random words are exactly a
    state that seeding could produce, and it skips numpy's seeding machinery, which in a fresh
    fork copies some 150 pages (0.5 ms). It needs no pending Gaussian in the legacy generator,
    which holds where the state was just seeded and never drawn from (the template); elsewhere
    `full()` resets that too."""
    KEY_BYTES = 624 * 4

    def __init__(self):
        self.addr = None
        np = sys.modules.get("numpy")
        if np is None:
            return
        try:
            import ctypes
            bg = np.random.mtrand._rand._bit_generator
            if type(bg).__name__ != "MT19937":
                return
            addr = bg.ctypes.state_address
            probe = bytes(range(256)) * 9 + bytes(self.KEY_BYTES - 256 * 9)
            ctypes.memmove(addr, probe + (7).to_bytes(4, "little"), self.KEY_BYTES + 4)
            st = bg.state["state"]
            if st["key"].tobytes() == probe and st["pos"] == 7:  # the layout is what we think
                self.addr, self._memmove = addr, ctypes.memmove
        except Exception:
            self.addr = None
        np.random.seed()  # fresh entropy, no pending Gaussian, whatever the probe did

    def fast(self):
        if self.addr is None:
            return self.full()
        # pos = 624: the next draw regenerates the whole block from the new key
        self._memmove(self.addr, os.urandom(self.KEY_BYTES) + b"\x70\x02\x00\x00",
                      self.KEY_BYTES + 4)

    @staticmethod
    def full():
        """Fresh OS entropy as the whole state, through numpy's public set_state (which also drops
        a pending Gaussian): half the cost of seed(), whose SeedSequence path a fork pays in
        page copies, and the same kind of state."""
        np = sys.modules.get("numpy")
        if np is None:
            return
        try:
            key = np.frombuffer(os.urandom(_NumpySeeder.KEY_BYTES), dtype=np.uint32)
            np.random.set_state(("MT19937", key, 624, 0, 0.0))
        except Exception:
            np.random.seed()


def _random_state_address():
    """Where random's global Mersenne Twister keeps its index and 624 state words (CPython's
    RandomObject: the object header, an int index, the words), if a probe confirms it."""
    import ctypes
    import struct
    inst = random._inst
    try:
        words = tuple(range(1, 625))
        ctypes.memmove(id(inst) + 20, struct.pack("<624I", *words), 2496)
        ctypes.memmove(id(inst) + 16, struct.pack("<i", 7), 4)
        ok = inst.getstate()[1] == words + (7,)
    except Exception:
        ok = False
    random.seed()  # fresh entropy again, whatever the probe did
    return id(inst) + 16 if ok else None


_numpy_seeder = None
_random_index_addr = None


def prepare_template():
    """Once, in the template: seed both (dropping any cached Gaussian) and set up the fast path."""
    global _numpy_seeder, _random_index_addr
    random.seed()
    _random_index_addr = _random_state_address()
    _numpy_seeder = _NumpySeeder()


def c_targets():
    """For the template's C loop (_spawner.c), which fills each new child's generators with OS
    entropy before any Python runs there: ((fill address, bytes, index address, index value),
    ...) and whether that covers every generator reseed_fresh() would reseed. Index 624 makes
    the next draw regenerate the whole block from the new words."""
    targets = []
    if _random_index_addr is not None:
        targets.append((_random_index_addr + 4, 2496, _random_index_addr, 624))
    if _numpy_seeder is not None and _numpy_seeder.addr is not None:
        addr = _numpy_seeder.addr
        targets.append((addr, _NumpySeeder.KEY_BYTES, addr + _NumpySeeder.KEY_BYTES, 624))
    numpy_covered = "numpy" not in sys.modules or (
        _numpy_seeder is not None and _numpy_seeder.addr is not None)
    return tuple(targets), _random_index_addr is not None and numpy_covered


def reseed_fresh():
    """In a fork of the template: its generators were seeded and never drawn from (so no cached
    Gaussian to drop either, which is all random.seed() adds to the C seeding it wraps)."""
    _random.Random.seed(random._inst)
    if _numpy_seeder is not None:
        _numpy_seeder.fast()
    else:
        _NumpySeeder.full()


def reseed():
    """In any process (a session's next cell): its generators may have been drawn from."""
    random.seed()
    _NumpySeeder.full()
