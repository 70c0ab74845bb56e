"""oci_engine.kernels: Triton kernels for the GPU backend, each with a pure-torch reference beside it."""
