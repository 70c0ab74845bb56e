"""The model/engine flags shared by generate, chat, serve and eval."""
from __future__ import annotations


def add_engine_arguments(p) -> None:
    from oci_engine.model_cache import DEFAULT_MODEL

    p.add_argument("-m", "--model", default=DEFAULT_MODEL,
                   help="registry name (pulled on first use), a .gguf file, or a Hugging Face model directory")
    p.add_argument("--backend", choices=["torch", "cpu", "triton"], default=None,
                   help="compute backend (default: triton with CUDA, else cpu when built, else torch)")
    p.add_argument("--dtype", default=None, help="float32 | bfloat16 | float16 (default: fp32 on CPU, bf16 on GPU)")
    p.add_argument("--kv-cache-memory", type=float, default=None, metavar="GIB", help="KV cache pool size in GiB")
    p.add_argument("--kv-cache-dtype", default="auto",
                   help="auto | float32 | bfloat16: K/V element type (auto: bfloat16 on the cpu backend, "
                        "else the model's dtype)")
    p.add_argument("--max-model-len", type=int, default=None, help="cap the context length")
    p.add_argument("--no-prefix-caching", action="store_true", help="turn automatic prefix caching off")
    p.add_argument("--enforce-eager", action="store_true",
                   help="GPU: run decode steps eagerly instead of replaying captured CUDA graphs")


def engine_kwargs(args) -> dict:
    return dict(backend=args.backend, dtype=args.dtype, kv_cache_memory=args.kv_cache_memory,
                kv_cache_dtype=args.kv_cache_dtype,
                max_model_len=args.max_model_len, enable_prefix_caching=not args.no_prefix_caching,
                enforce_eager=args.enforce_eager)
