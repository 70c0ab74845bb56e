"""Run the Triton kernels in Triton's CPU interpreter when there is no GPU.

Triton decides interpreter-or-compiler when a @triton.jit function is defined, reading
TRITON_INTERPRET then, so the variable must be set before triton and our kernel modules are
imported: this conftest does it at import time, before pytest imports any test module of this
directory. bf16 is not supported by the interpreter: the CPU tests use float32.
"""
import os
import sys

import torch

ON_GPU = torch.cuda.is_available()

if not ON_GPU:
    os.environ["TRITON_INTERPRET"] = "1"
    # A module collected earlier in the session may already have defined the kernels compiled
    # (not interpreted); drop them so the tests here import fresh, interpreted copies.
    for name in [n for n in sys.modules if n.startswith("oci_engine.kernels") or n == "oci_engine.ops.triton_backend"]:
        del sys.modules[name]
