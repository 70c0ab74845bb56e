"""GGUF files: metadata -> ModelConfig, llama.cpp tensor names -> Hugging Face names, weights as
memory-mapped views (dense types) or QuantTensor (block formats), q/k rows back in HF order."""
from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import numpy as np

from oci_engine.config import ModelConfig
from oci_engine.errors import ModelFormatError, UnsupportedModelError
from oci_engine.loader.checkpoint import Checkpoint, check_tensors
from oci_engine.loader.gguf_file import GGUFFile, GGUFTensorInfo, read_gguf
from oci_engine.loader.quant_tensor import QuantTensor

# general.architecture -> (HF architecture, q/k rows permuted by llama.cpp's converter).
# The converter permutes q/k only for the Llama family (rotary on interleaved pairs there);
# Qwen2 uses the NeoX rotary layout, as HF does, and is stored as is.
GGUF_ARCHITECTURES = {
    "llama": ("LlamaForCausalLM", True),
    "qwen2": ("Qwen2ForCausalLM", False),
}

_GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_BLOCK_NAMES = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_BLOCK_RE = re.compile(r"blk\.(\d+)\.([a-z_]+)\.(weight|bias)")
_DENSE = {"F32": np.float32, "F16": np.float16, "F64": np.float64}
_DENSE_TYPES = frozenset({0, 1, 28, 30})  # GGMLQuantizationType F32, F16, F64, BF16


def load_gguf(path: Path) -> Checkpoint:
    gf = read_gguf(path)
    arch = gf.metadata.get("general.architecture")
    if arch not in GGUF_ARCHITECTURES:
        raise UnsupportedModelError(
            f"{path}: GGUF architecture {arch!r} is not supported; supported: "
            f"{', '.join(sorted(GGUF_ARCHITECTURES))} (Llama, Mistral, CodeLlama, DeepSeek-Coder, Qwen2 conversions)")
    config = gguf_config(gf)
    mm = gf.memmap()
    tensors: dict[str, Any] = {}
    for info in gf.tensors.values():
        if info.name == "rope_freqs.weight":
            # llama.cpp stores Llama-3 style rope scaling as per-frequency divisors, not as the
            # HF parameters: pass them on exactly (inv_freq[i] / freq_factors[i]).
            factors = _dense(mm, info, path).float()
            config.rope_scaling = {"rope_type": "gguf_freq_factors", "freq_factors": factors.tolist()}
            continue
        tensors[_hf_name(info.name, path)] = _weight(mm, info, path)
    if GGUF_ARCHITECTURES[arch][1]:
        _unpermute_qk(tensors, config)
    check_tensors(config, tensors, path)
    return Checkpoint(config=config, tensors=tensors, path=path, format="gguf",
                      generation_config=_generation_config(gf.metadata, config), metadata=gf.metadata)


def gguf_config(gf: GGUFFile) -> ModelConfig:
    md = gf.metadata
    arch = md["general.architecture"]

    def get(key: str, default: Any = None, *, required: bool = False):
        full = f"{arch}.{key}"
        if full not in md:
            if required:
                raise ModelFormatError(f"{gf.path} lacks the metadata key {full!r}; the file was not written "
                                       "by a complete llama.cpp conversion, convert it again")
            return default
        v = md[full]
        return v.item() if isinstance(v, np.generic) else v

    hidden = int(get("embedding_length", required=True))
    heads = int(get("attention.head_count", required=True))
    kv_heads = get("attention.head_count_kv", heads)
    if isinstance(kv_heads, np.ndarray):  # per-layer head counts: not a plain Llama
        raise UnsupportedModelError(f"{gf.path}: per-layer attention head counts are not supported")
    embd = gf.tensors.get("token_embd.weight")
    # the embedding's rows are the truth (vocabularies are often padded past the token list)
    vocab = get("vocab_size") or (embd.shape[0] if embd is not None else len(md.get("tokenizer.ggml.tokens", ())))
    eos = [int(md["tokenizer.ggml.eos_token_id"])] if "tokenizer.ggml.eos_token_id" in md else []
    bos = md.get("tokenizer.ggml.bos_token_id")
    return ModelConfig(
        architecture=GGUF_ARCHITECTURES[arch][0],
        vocab_size=int(vocab or 0),
        hidden_size=hidden,
        intermediate_size=int(get("feed_forward_length", required=True)),
        num_hidden_layers=int(get("block_count", required=True)),
        num_attention_heads=heads,
        num_key_value_heads=int(kv_heads),
        head_dim=int(get("attention.key_length") or hidden // heads),
        max_position_embeddings=int(get("context_length", 4096)),
        rms_norm_eps=float(get("attention.layer_norm_rms_epsilon", 1e-6)),
        rope_theta=float(get("rope.freq_base", 10000.0)),
        rope_scaling=_rope_scaling(get, gf),
        tie_word_embeddings="output.weight" not in gf.tensors,
        attention_bias=arch == "qwen2" or "blk.0.attn_q.bias" in gf.tensors,
        sliding_window=None,
        bos_token_id=None if bos is None else int(bos),
        eos_token_id=eos,
        torch_dtype="float32",
    )


def _rope_scaling(get, gf: GGUFFile) -> dict[str, Any] | None:
    kind = get("rope.scaling.type") or get("rope_scaling.type")
    factor = get("rope.scaling.factor")
    if kind in (None, "none") or factor in (None, 0, 1.0):
        return None
    if kind == "linear":
        return {"rope_type": "linear", "factor": float(factor)}
    if kind == "yarn":
        out = {"rope_type": "yarn", "factor": float(factor)}
        if get("rope.scaling.original_context_length"):
            out["original_max_position_embeddings"] = int(get("rope.scaling.original_context_length"))
        return out
    raise UnsupportedModelError(f"{gf.path}: rope scaling type {kind!r} is not supported (linear, yarn)")


def _generation_config(md: dict[str, Any], config: ModelConfig) -> dict[str, Any]:
    # llama.cpp stops on every end-of-generation token, not only eos
    stops = list(config.eos_token_id)
    for key in ("tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"):
        if key in md and int(md[key]) not in stops:
            stops.append(int(md[key]))
    out: dict[str, Any] = {"eos_token_id": stops}
    if config.bos_token_id is not None:
        out["bos_token_id"] = config.bos_token_id
    if "tokenizer.ggml.padding_token_id" in md:
        out["pad_token_id"] = int(md["tokenizer.ggml.padding_token_id"])
    return out


def _hf_name(name: str, path: Path) -> str:
    if name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[name]
    m = _BLOCK_RE.fullmatch(name)
    if m and m.group(2) in _BLOCK_NAMES:
        return f"model.layers.{m.group(1)}.{_BLOCK_NAMES[m.group(2)]}.{m.group(3)}"
    raise UnsupportedModelError(
        f"{path}: tensor {name!r} has no counterpart in a Llama/Qwen2 model (a mixture-of-experts or "
        "other architecture stored under a Llama name?); this file cannot be run")


def _dense(mm: np.ndarray, info: GGUFTensorInfo, path: Path):
    import gguf
    import torch

    name = gguf.GGMLQuantizationType(info.ggml_type).name
    raw = mm[info.offset:info.offset + info.n_bytes]
    if name == "BF16":
        return torch.from_numpy(raw.view(np.int16).reshape(info.shape)).view(torch.bfloat16)
    if name in _DENSE:
        return torch.from_numpy(raw.view(_DENSE[name]).reshape(info.shape))
    # A quantized 1-D tensor (norms are never quantized in practice): small, dequantize it now.
    return QuantTensor(info.ggml_type, (1, info.shape[-1]), raw.reshape(1, -1)).dequantize().reshape(info.shape)


def _weight(mm: np.ndarray, info: GGUFTensorInfo, path: Path):
    import gguf

    qtype = gguf.GGMLQuantizationType(info.ggml_type)
    if info.ggml_type in _DENSE_TYPES:
        return _dense(mm, info, path)
    if info.ggml_type not in _dequantizable():
        raise UnsupportedModelError(
            f"{path}: tensor {info.name} is stored as {qtype.name}, a type this runtime cannot decode; "
            "use a file quantized to F16/BF16/Q8_0/Q4_0/Q4_1/Q5_*/Q2_K..Q6_K/IQ*")
    if len(info.shape) == 1:
        return _dense(mm, info, path)
    if len(info.shape) != 2:
        raise UnsupportedModelError(f"{path}: tensor {info.name} has {len(info.shape)} dimensions; "
                                    "only matrices may be quantized in a Llama/Qwen2 model")
    rows = info.shape[0]
    data = mm[info.offset:info.offset + info.n_bytes].reshape(rows, info.n_bytes // rows)
    return QuantTensor(int(qtype), (rows, info.shape[1]), data)


@functools.cache
def _dequantizable() -> frozenset[int]:
    """Block formats gguf can decode (its registry of quant classes; every format if that moves)."""
    import gguf
    import gguf.quants

    traits = getattr(gguf.quants, "_type_traits", None)
    if traits is None:
        return frozenset(int(t) for t in gguf.GGMLQuantizationType)
    return frozenset(int(t) for t in traits if t != gguf.GGMLQuantizationType.BF16)


def _unpermute_qk(tensors: dict[str, Any], config: ModelConfig) -> None:
    """llama.cpp's converter reorders each head's q/k rows from HF's [first half | second half]
    rotary layout to interleaved pairs; put them back so the weights are transformers' own."""
    import torch

    for i in range(config.num_hidden_layers):
        for proj, heads in (("q_proj", config.num_attention_heads), ("k_proj", config.num_key_value_heads)):
            for kind in ("weight", "bias"):
                name = f"model.layers.{i}.self_attn.{proj}.{kind}"
                t = tensors.get(name)
                if t is None:
                    continue
                rows = t.shape[0]
                if rows % (2 * heads):
                    raise ModelFormatError(f"{name} has {rows} rows, not a whole number of heads ({heads})")
                # gguf row j holds HF row order[j]; HF row order[j] is gguf row j
                order = np.arange(rows).reshape(heads, 2, rows // heads // 2).swapaxes(1, 2).reshape(-1)
                inverse = np.argsort(order)
                if isinstance(t, QuantTensor):
                    tensors[name] = t.select_rows(inverse)
                else:
                    tensors[name] = t[torch.from_numpy(inverse)]
