"""Hugging Face model directories: config.json, generation_config.json, and *.safetensors (single
file or shards listed in model.safetensors.index.json), memory-mapped, dtypes kept."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from oci_engine.config import ModelConfig
from oci_engine.errors import ModelFormatError, ModelNotFoundError, UnsupportedModelError
from oci_engine.loader.checkpoint import Checkpoint, check_tensors

INDEX_FILE = "model.safetensors.index.json"
# Buffers some exporters save that are recomputed from the config
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


def load_hf_directory(path: Path) -> Checkpoint:
    raw = _read_json(path / "config.json", required=True)
    config = ModelConfig.from_hf_dict(raw)
    generation_config = _read_json(path / "generation_config.json", required=False) or {}
    tensors = {}
    for shard, names in _shards(path).items():
        tensors.update(_load_shard(shard, names))
    tensors = {n: t for n, t in tensors.items() if not n.endswith(_IGNORED_SUFFIXES)}
    if config.tie_word_embeddings:
        # Some exporters write the tied head too; it is the embedding by definition.
        tensors.pop("lm_head.weight", None)
    check_tensors(config, tensors, path)
    return Checkpoint(config=config, tensors=tensors, path=path, format="hf",
                      generation_config=generation_config, metadata=raw)


def _read_json(file: Path, *, required: bool) -> dict[str, Any] | None:
    try:
        text = file.read_text()
    except FileNotFoundError:
        if required:
            raise ModelNotFoundError(
                f"{file.parent} has no {file.name}; a Hugging Face model directory needs config.json "
                "next to its *.safetensors (copy the whole checkpoint directory)") from None
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ModelFormatError(f"{file} is not valid JSON ({e}); restore it from the original checkpoint") from e
    if not isinstance(data, dict):
        raise ModelFormatError(f"{file} must hold a JSON object; restore it from the original checkpoint")
    return data


def _shards(path: Path) -> dict[Path, list[str] | None]:
    """shard file -> the tensor names the index assigns to it (None: take all it holds)."""
    index = _read_json(path / INDEX_FILE, required=False)
    if index is not None:
        weight_map = index.get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise ModelFormatError(f"{path / INDEX_FILE} has no weight_map; restore it from the original checkpoint")
        shards: dict[Path, list[str]] = {}
        for name, file in weight_map.items():
            shards.setdefault(path / file, []).append(name)
        absent = [p.name for p in shards if not p.is_file()]
        if absent:
            raise ModelNotFoundError(
                f"{path} is missing shard(s) {', '.join(sorted(absent))} listed in {INDEX_FILE}; "
                "download the complete checkpoint")
        return dict(shards)
    files = sorted(path.glob("*.safetensors"))
    if not files:
        legacy = sorted(p.name for p in path.glob("*.bin")) + sorted(p.name for p in path.glob("*.pt*"))
        hint = (f" (found {', '.join(legacy[:3])}: pickled PyTorch weights are not loaded, convert them with "
                "transformers' save_pretrained(safe_serialization=True))") if legacy else ""
        raise ModelNotFoundError(f"{path} has no *.safetensors weights{hint}")
    return {f: None for f in files}


def _load_shard(file: Path, names: list[str] | None) -> dict:
    import torch
    from safetensors import SafetensorError, safe_open

    keep = (torch.float32, torch.float16, torch.bfloat16)
    out = {}
    try:
        # framework="pt" maps the file; get_tensor returns views of the mapping, not copies.
        with safe_open(str(file), framework="pt") as f:
            keys = set(f.keys())
            wanted = keys if names is None else names
            absent = [n for n in wanted if n not in keys]
            if absent:
                raise ModelFormatError(
                    f"{file.name} lacks {', '.join(absent[:4])} that {INDEX_FILE} places in it; "
                    "the shard or the index is from another checkpoint: download it again")
            for name in wanted:
                t = f.get_tensor(name)
                if t.dtype not in keep:
                    raise UnsupportedModelError(
                        f"{file.name}: tensor {name} is {t.dtype}; supported weight dtypes are float32, "
                        "float16 and bfloat16 (convert the checkpoint, or use a GGUF quantization)")
                out[name] = t
    except SafetensorError as e:
        raise ModelFormatError(
            f"{file} is truncated or corrupt ({e}); download it again") from e
    except OSError as e:
        raise ModelFormatError(f"{file} could not be read ({e}); download it again") from e
    return out
