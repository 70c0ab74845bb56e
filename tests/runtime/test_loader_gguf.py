"""The real SmolLM2-135M-Instruct GGUF: our tensors are transformers' tensors, the raw blocks stay
memory-mapped, and damaged copies of the file give typed errors."""
from __future__ import annotations

import os
import shutil
import sys

import numpy as np
import pytest
import torch

from oci_engine.errors import ModelFormatError, ModelNotFoundError
from oci_engine.loader import QuantTensor, load_checkpoint


@pytest.fixture(scope="module")
def smollm2(smollm2_gguf):
    return load_checkpoint(smollm2_gguf)


def test_tensors_equal_transformers(smollm2, smollm2_hf_model):
    ref = smollm2_hf_model.state_dict()
    assert smollm2.config.tie_word_embeddings
    ref.pop("lm_head.weight")  # tied: transformers' head is the embedding
    assert set(smollm2.tensors) == set(ref)
    for name, t in smollm2.tensors.items():
        dense = t.dequantize() if isinstance(t, QuantTensor) else t.float()
        assert torch.equal(dense, ref[name]), name


def test_config_equals_transformers(smollm2, smollm2_hf_model):
    ours, ref = smollm2.config, smollm2_hf_model.config
    for field in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                  "num_key_value_heads", "head_dim", "max_position_embeddings", "rms_norm_eps",
                  "tie_word_embeddings", "bos_token_id"):
        assert getattr(ours, field) == getattr(ref, field), field
    assert ours.rope_theta == ref.rope_parameters["rope_theta"] == 100000.0
    assert ours.rope_scaling is None
    assert ours.architecture == "LlamaForCausalLM"
    assert ours.eos_token_id == [ref.eos_token_id] == [2]


def test_weight_formats(smollm2):
    t = smollm2.tensors
    emb = t["model.embed_tokens.weight"]
    assert isinstance(emb, QuantTensor) and emb.type_name == "Q8_0" and emb.shape == (49152, 576)
    assert emb.data.shape == (49152, 576 // 32 * 34)
    down = t["model.layers.7.mlp.down_proj.weight"]
    assert isinstance(down, QuantTensor) and down.type_name == "Q4_1" and down.shape == (576, 1536)
    assert down.data.shape == (576, 1536 // 32 * 20)
    norm = t["model.layers.7.input_layernorm.weight"]
    assert isinstance(norm, torch.Tensor) and norm.dtype == torch.float32 and norm.shape == (576,)
    # rows are whole blocks, so picking rows (an embedding lookup) decodes exactly
    ids = np.array([0, 1, 2, 49151, 1234])
    assert torch.equal(emb.select_rows(ids).dequantize(), emb.dequantize()[torch.from_numpy(ids)])


def test_blocks_stay_memory_mapped(smollm2, smollm2_gguf):
    if not sys.platform.startswith("linux"):
        pytest.skip("reads /proc/self/maps")
    down = smollm2.tensors["model.layers.7.mlp.down_proj.weight"]
    norm = smollm2.tensors["model.norm.weight"]
    mapped = set()
    with open("/proc/self/maps") as maps:
        for line in maps:
            parts = line.split()
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            for ptr in (down.data.ctypes.data, norm.data_ptr()):
                if lo <= ptr < hi and len(parts) > 5:
                    mapped.add(parts[5])
    assert mapped == {str(smollm2_gguf)}


def test_tokenizer_metadata_is_available(smollm2):
    md = smollm2.metadata
    assert md["tokenizer.ggml.model"] == "gpt2"
    assert len(md["tokenizer.ggml.tokens"]) == 49152 and md["tokenizer.ggml.tokens"][2] == "<|im_end|>"
    assert len(md["tokenizer.ggml.merges"]) == 48900
    assert "<|im_start|>" in md["tokenizer.chat_template"]
    assert smollm2.generation_config["eos_token_id"] == [2]


@pytest.fixture
def damaged(smollm2_gguf, tmp_path):
    def copy(size: int):
        dst = tmp_path / "damaged.gguf"
        shutil.copyfile(smollm2_gguf, dst)
        os.truncate(dst, size)
        return dst
    return copy


@pytest.mark.parametrize("size,message", [
    (10, "too short to be a GGUF file"),
    (100, "truncated or corrupt"),  # inside the metadata keys
    (1_000_000, "truncated or corrupt"),  # inside the vocabulary
    (1_780_000, "truncated or corrupt"),  # inside the tensor descriptors
    (50_000_000, "is truncated: tensor"),  # inside the weights
    (98362432 - 1, "is truncated: tensor"),  # one byte short
])
def test_truncated_file(damaged, size, message):
    with pytest.raises(ModelFormatError, match=message) as e:
        load_checkpoint(damaged(size))
    assert "download it again" in str(e.value)


def test_not_a_gguf_file(tmp_path):
    f = tmp_path / "model.gguf"
    f.write_bytes(b"PK\x03\x04" + bytes(200))
    with pytest.raises(ModelFormatError, match="not a GGUF file"):
        load_checkpoint(f)


def test_missing_file(tmp_path):
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.gguf")


def test_corrupt_header_counts(smollm2_gguf, tmp_path):
    f = tmp_path / "corrupt.gguf"
    head = bytearray(open(smollm2_gguf, "rb").read(4096))
    head[8:16] = (2**40).to_bytes(8, "little")  # absurd tensor count
    f.write_bytes(bytes(head))
    with pytest.raises(ModelFormatError, match="corrupt"):
        load_checkpoint(f)
