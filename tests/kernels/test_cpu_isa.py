"""Run-time ISA selection and OpenMP coexistence of the C++ extension, each in a fresh process
(the choice is made once per process, and the OpenMP runtime is bound at import)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from cpu_isa import ISAS


def _run(code: str, **env) -> subprocess.CompletedProcess:
    full = {**os.environ, **env}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full, timeout=120)


@pytest.mark.parametrize("isa", ISAS)
def test_env_var_forces_a_path(isa):
    r = _run("import torch; from oci_engine.ops import get_ops; get_ops('cpu'); "
             "from oci_engine import _C; print(_C.isa())", OCI_ENGINE_ISA=isa)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == isa


def test_default_is_the_fastest_supported_path():
    env = {k: v for k, v in os.environ.items() if k != "OCI_ENGINE_ISA"}
    r = subprocess.run([sys.executable, "-c", "from oci_engine import _C; print(_C.isa(), _C.supported_isas()[-1])"],
                       capture_output=True, text=True, env=env, timeout=120)
    got, best = r.stdout.split()
    assert got == best


def test_unknown_isa_is_a_typed_error():
    r = _run("import torch\nfrom oci_engine.errors import BackendError\nfrom oci_engine.ops import get_ops\n"
             "try:\n    get_ops('cpu')\nexcept BackendError as e:\n    print('BackendError:', e)",
             OCI_ENGINE_ISA="sse9")
    assert "BackendError:" in r.stdout and "scalar, avx2 or avx512" in r.stdout, r.stdout + r.stderr


def test_one_openmp_runtime_shared_with_torch():
    code = ("import torch\nfrom oci_engine.ops import get_ops\nfrom oci_engine import _C\nget_ops('cpu')\n"
            "libs = {l.split()[-1] for l in open('/proc/self/maps') if 'gomp' in l or 'libiomp' in l}\n"
            "torch.set_num_threads(1)\nprint(len(libs), _C.max_threads())")
    r = _run(code)
    assert r.returncode == 0, r.stderr
    n_runtimes, threads_after = map(int, r.stdout.split())
    assert n_runtimes == 1, "torch and oci_engine._C loaded two OpenMP runtimes (oversubscription)"
    assert threads_after == 1, "torch.set_num_threads must govern the C++ kernels too"
