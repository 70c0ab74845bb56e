"""oci-engine: an open code interpreter built for speed.

`import oci_engine` stays cheap: torch, triton and the C++ extension load on first use of the
names below (PEP 562 module __getattr__).
"""
from oci_engine import _source_tree

__version__ = "0.1.0"

_source_tree.install()

_LAZY = {
    "LLM": "oci_engine.llm",
    "SamplingParams": "oci_engine.sampling_params",
    "RequestOutput": "oci_engine.outputs",
    "CompletionOutput": "oci_engine.outputs",
    "Interpreter": "oci_engine.interpreter",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'oci_engine' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
