"""oci_engine.kernels: Triton kernels for the GPU backend, each with a pure-torch reference beside it.

One module per kernel, holding the @triton.jit kernel and its launcher (grid and tile sizes chosen
there): write_kv, paged_prefill_attention, paged_decode_attention, rms_norm (and add_rms_norm),
rotary, silu_and_mul. reference.py holds the torch reference of each. Importing a kernel module
imports triton; set TRITON_INTERPRET=1 before that to run the kernels on the CPU (slowly, float32).
"""
