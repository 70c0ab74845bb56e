"""Hugging Face directories: tensors equal transformers' own state dict, dtypes kept, memory-mapped,
and every way a directory can be broken gives a typed error."""
from __future__ import annotations

import json
import shutil
import sys

import pytest
import torch

from oci_engine.errors import ModelFormatError, ModelNotFoundError, UnsupportedModelError
from oci_engine.loader import load_checkpoint


def file_mapping_of(ptr: int) -> str | None:
    """The file a pointer's memory is mapped from (Linux), or None for anonymous memory."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            parts = line.split()
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            if lo <= ptr < hi:
                return parts[5] if len(parts) > 5 else None
    return None


def reference_state_dict(path, dtype):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype).state_dict()


@pytest.mark.parametrize("arch,dtype,shard,tied", [
    ("llama", torch.float32, None, False),
    ("llama", torch.float16, "40KB", False),
    ("llama", torch.bfloat16, None, True),
    ("qwen2", torch.float32, "40KB", False),
    ("qwen2", torch.bfloat16, None, True),
    ("mistral", torch.float16, None, False),
])
def test_tensors_equal_transformers(tiny_checkpoint, arch, dtype, shard, tied):
    path = tiny_checkpoint(arch, dtype=dtype, max_shard_size=shard, tie_word_embeddings=tied)
    if shard:
        assert (path / "model.safetensors.index.json").is_file()
    ck = load_checkpoint(path)
    ref = reference_state_dict(path, dtype)
    if tied:
        assert "lm_head.weight" not in ck.tensors
        ref.pop("lm_head.weight")
    assert ck.format == "hf" and ck.path == path
    assert set(ck.tensors) == set(ref)
    for name, t in ck.tensors.items():
        assert t.dtype == dtype, name
        assert torch.equal(t, ref[name]), name
    assert ck.config.tie_word_embeddings == tied
    assert ck.config.attention_bias == (arch == "qwen2")
    assert ck.generation_config.get("eos_token_id") == 2


def test_weights_are_memory_mapped(tiny_checkpoint):
    if not sys.platform.startswith("linux"):
        pytest.skip("reads /proc/self/maps")
    path = tiny_checkpoint()
    ck = load_checkpoint(path)
    t = ck.tensors["model.layers.1.mlp.down_proj.weight"]
    assert file_mapping_of(t.data_ptr()) == str(path / "model.safetensors")


@pytest.mark.parametrize("overrides,expect", [
    (dict(rope_scaling={"rope_type": "linear", "factor": 4.0}), {"rope_type": "linear", "factor": 4.0}),
    (dict(rope_theta=1e6), None),
    (dict(rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                        "original_max_position_embeddings": 64}),
     {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
      "original_max_position_embeddings": 64}),
])
def test_config_rope(tiny_checkpoint, overrides, expect):
    ck = load_checkpoint(tiny_checkpoint(**overrides))
    assert ck.config.rope_scaling == expect
    assert ck.config.rope_theta == overrides.get("rope_theta", 10000.0)
    c = ck.config
    assert (c.hidden_size, c.num_attention_heads, c.num_key_value_heads, c.head_dim, c.vocab_size) == (64, 4, 2, 16, 256)


@pytest.fixture
def broken(tiny_checkpoint, tmp_path):
    """A private copy of a tiny checkpoint to damage."""
    def copy(**kw):
        dst = tmp_path / "ckpt"
        shutil.copytree(tiny_checkpoint(**kw), dst)
        return dst
    return copy


def edit_config(path, **changes):
    cfg = json.loads((path / "config.json").read_text())
    cfg.update(changes)
    (path / "config.json").write_text(json.dumps(cfg))


def test_missing_directory(tmp_path):
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "nope")


def test_missing_config(broken):
    path = broken()
    (path / "config.json").unlink()
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        load_checkpoint(path)


def test_corrupt_config_json(broken):
    path = broken()
    (path / "config.json").write_text('{"architectures": ["LlamaForCausalLM"], ')
    with pytest.raises(ModelFormatError, match="config.json is not valid JSON"):
        load_checkpoint(path)


def test_missing_shard(broken):
    path = broken(max_shard_size="40KB")
    (path / "model-00003-of-00012.safetensors").unlink()
    with pytest.raises(ModelNotFoundError, match="model-00003-of-00012.safetensors"):
        load_checkpoint(path)


@pytest.mark.parametrize("keep", [0.5, 0.999, 0.0001])
def test_truncated_safetensors(broken, keep):
    path = broken()
    f = path / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[:max(4, int(len(data) * keep))])
    with pytest.raises(ModelFormatError, match="model.safetensors is truncated or corrupt"):
        load_checkpoint(path)


def test_truncated_shard(broken):
    path = broken(max_shard_size="40KB")
    f = path / "model-00012-of-00012.safetensors"
    f.write_bytes(f.read_bytes()[:-100])
    with pytest.raises(ModelFormatError, match="model-00012-of-00012.safetensors is truncated"):
        load_checkpoint(path)


def test_no_weights(broken):
    path = broken()
    (path / "model.safetensors").rename(path / "pytorch_model.bin")
    with pytest.raises(ModelNotFoundError, match="no \\*.safetensors.*pytorch_model.bin"):
        load_checkpoint(path)


def test_unsupported_architecture(broken):
    path = broken()
    edit_config(path, architectures=["GPT2LMHeadModel"])
    with pytest.raises(UnsupportedModelError, match="GPT2LMHeadModel"):
        load_checkpoint(path)


@pytest.mark.parametrize("changes,message", [
    (dict(hidden_size=128), r"shape \[256, 64\] but the config implies \[256, 128\]"),
    (dict(intermediate_size=96), r"mlp\.\w+_proj.weight has shape .* the config implies \[(96, 64|64, 96)\]"),
    (dict(num_key_value_heads=4), r"k_proj.weight has shape \[32, 64\] but the config implies \[64, 64\]"),
    (dict(vocab_size=300), r"(embed_tokens|lm_head).weight has shape \[256, 64\].*\[300, 64\]"),
    (dict(num_hidden_layers=3), r"lacks 9 tensor.*model.layers.2"),
    (dict(num_hidden_layers=1), r"does not account for.*model.layers.1"),
    (dict(tie_word_embeddings=False, attention_bias=True), r"lacks 6 tensor.*q_proj.bias"),
])
def test_config_that_does_not_match_weights(broken, changes, message):
    path = broken()
    edit_config(path, **changes)
    with pytest.raises(ModelFormatError, match=message):
        load_checkpoint(path)


def test_unsupported_dtype(broken):
    from safetensors.torch import load_file, save_file

    path = broken()
    f = path / "model.safetensors"
    tensors = load_file(f)
    tensors["model.norm.weight"] = tensors["model.norm.weight"].to(torch.float64)
    save_file(tensors, f, metadata={"format": "pt"})
    with pytest.raises(UnsupportedModelError, match="model.norm.weight is torch.float64"):
        load_checkpoint(path)


def test_tied_config_ignores_a_saved_head(broken):
    from safetensors.torch import load_file, save_file

    path = broken(tie_word_embeddings=True)
    f = path / "model.safetensors"
    tensors = load_file(f)
    tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"].clone()
    save_file(tensors, f, metadata={"format": "pt"})
    ck = load_checkpoint(path)
    assert "lm_head.weight" not in ck.tensors and ck.config.tie_word_embeddings


def test_config_without_architectures_uses_model_type(broken):
    path = broken(arch="qwen2")
    cfg = json.loads((path / "config.json").read_text())
    del cfg["architectures"]
    (path / "config.json").write_text(json.dumps(cfg))
    ck = load_checkpoint(path)
    assert ck.config.architecture == "Qwen2ForCausalLM" and ck.config.attention_bias
