"""Helpers shared by the C++ kernel tests: run a test once per ISA path this CPU supports."""
from __future__ import annotations

import contextlib

import pytest

_C = pytest.importorskip("oci_engine._C", reason="the C++ extension is not built (pip install -e .)")

ISAS = list(_C.supported_isas())


@contextlib.contextmanager
def forced_isa(name: str):
    before = _C.isa()
    _C.set_isa(name)
    try:
        yield
    finally:
        _C.set_isa(before)
