"""Loading weights into the model: bf16, GGUF-quantized weights (fused or not), and checkpoints
that do not match their config."""
from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch

from oci_engine.errors import ModelFormatError
from oci_engine.loader.quant_tensor import QuantTensor
from oci_engine.models import build_model
from paged_runner import PagedRunner, hf_model, load_tiny, make_model, single_torch_thread  # noqa: F401 (autouse)


def _ids(n=60, seed=0):
    return torch.randint(3, 256, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_bf16_runs_and_stays_close_to_fp32_transformers(tiny_checkpoint, arch):
    path = tiny_checkpoint(arch)
    ours, config = make_model(path, dtype=torch.bfloat16)
    ids = _ids()
    runner = PagedRunner(ours, config, kv_dtype=torch.bfloat16)
    got = torch.cat([runner.step([(0, ids[:25])])[0], runner.step([(0, ids[25:])])[0]])
    with torch.no_grad():
        ref = hf_model(path)(torch.tensor([ids])).logits[0]
    assert got.dtype == torch.float32  # logits come back in fp32 whatever the model dtype
    assert (got - ref).abs().max().item() < 0.25
    assert torch.nn.functional.cosine_similarity(got, ref, dim=-1).min().item() > 0.999
    assert (got.argmax(-1) == ref.argmax(-1)).float().mean().item() >= 0.85
    assert ours.layers[0]["qkv"].handles[0].dtype == torch.bfloat16


def _quantize(t: torch.Tensor, kind: str) -> QuantTensor:
    qtype = gguf.GGMLQuantizationType[kind]
    data = gguf.quants.quantize(t.float().numpy(), qtype)
    return QuantTensor(int(qtype), tuple(t.shape), data)


@pytest.mark.parametrize("mixed", [False, True], ids=["same-type-fused", "mixed-types-separate"])
def test_quantized_weights_equal_their_dequantized_dense_form(tiny_checkpoint, mixed):
    config, tensors = load_tiny(tiny_checkpoint())
    quant = dict(tensors)
    for name, t in tensors.items():
        if t.ndim == 2 and "embed" not in name:
            kind = "Q4_1" if mixed and ("v_proj" in name or "up_proj" in name) else "Q8_0"
            quant[name] = _quantize(t, kind)
    dense = {k: (v.dequantize() if isinstance(v, QuantTensor) else v) for k, v in quant.items()}
    mq, md = build_model(config, quant), build_model(config, dense)
    assert len(mq.layers[0]["qkv"].handles) == (3 if mixed else 1)
    ids = _ids()
    a = PagedRunner(mq, config).step([(0, ids)])[0]
    b = PagedRunner(md, config).step([(0, ids)])[0]
    assert (a - b).abs().max().item() <= 1e-4
    # and the quantization really happened (the weights differ from the originals)
    c = PagedRunner(build_model(config, tensors), config).step([(0, ids)])[0]
    assert (a - c).abs().max().item() > 1e-3


def test_weight_of_wrong_shape_names_the_tensor(tiny_checkpoint):
    config, tensors = load_tiny(tiny_checkpoint())
    bad = dict(tensors)
    bad["model.layers.1.mlp.up_proj.weight"] = torch.zeros(100, config.hidden_size)
    with pytest.raises(ModelFormatError, match=r"model\.layers\.1\.mlp\.up_proj\.weight.*does not match"):
        build_model(config, bad)


def test_missing_weight_is_reported(tiny_checkpoint):
    config, tensors = load_tiny(tiny_checkpoint())
    bad = {k: v for k, v in tensors.items() if k != "model.layers.0.self_attn.k_proj.weight"}
    with pytest.raises(ModelFormatError, match="k_proj.weight.*missing"):
        build_model(config, bad)


def test_untied_checkpoint_without_lm_head_is_reported(tiny_checkpoint):
    config, tensors = load_tiny(tiny_checkpoint())
    assert not config.tie_word_embeddings
    with pytest.raises(ModelFormatError, match="lm_head"):
        build_model(config, {k: v for k, v in tensors.items() if k != "lm_head.weight"})


def test_tied_checkpoint_uses_the_embedding_as_head(tiny_checkpoint):
    path = tiny_checkpoint(tie_word_embeddings=True)
    ours, config = make_model(path)
    assert ours.lm_head is ours.embed
    ids = _ids(20)
    with torch.no_grad():
        ref = hf_model(path)(torch.tensor([ids])).logits[0]
    assert (PagedRunner(ours, config).step([(0, ids)])[0] - ref).abs().max().item() <= 1e-4


def test_allocate_kv_cache_shapes(tiny_checkpoint):
    from oci_engine.models import allocate_kv_cache

    config, _ = load_tiny(tiny_checkpoint())
    kv = allocate_kv_cache(config, num_blocks=5, block_size=16, dtype=torch.bfloat16)
    assert len(kv) == config.num_hidden_layers
    for k, v in kv:
        assert k.shape == v.shape == (5, 16, config.num_key_value_heads, config.head_dim)
        assert k.dtype == torch.bfloat16 and k.data_ptr() != v.data_ptr()
    assert np.isclose(float(kv[0][0].abs().sum()), 0.0)
