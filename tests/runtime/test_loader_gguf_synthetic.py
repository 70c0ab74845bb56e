"""GGUF files written by the test with gguf.GGUFWriter: every supported tensor type (K-quants
included), both architectures, checked against transformers reading the same file."""
from __future__ import annotations

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")
from gguf import GGMLQuantizationType as T  # noqa: E402

from oci_engine.errors import ModelFormatError, UnsupportedModelError  # noqa: E402
from oci_engine.loader import QuantTensor, load_checkpoint  # noqa: E402

# hidden 256 so that rows are whole K-quant super-blocks (256 values)
CFG = dict(vocab_size=128, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
           rms_norm_eps=1e-5, rope_theta=10000.0)

HF_TO_GGUF = {
    "model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}
BLOCK = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
         "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
         "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
         "mlp.down_proj": "ffn_down"}


def gguf_name(hf: str) -> str:
    if hf in HF_TO_GGUF:
        return HF_TO_GGUF[hf]
    _, _, i, rest = hf.split(".", 3)
    mod, kind = rest.rsplit(".", 1)
    return f"blk.{i}.{BLOCK[mod]}.{kind}"


def llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """What llama.cpp's converter does to Llama q/k rows (its documented formula)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def random_kquant_blocks(qtype, rows: int, cols: int, rng) -> np.ndarray:
    """K-quants cannot be produced by gguf's Python quantizer: build valid blocks directly
    (random payload, finite fp16 scales at their documented offsets)."""
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    blocks = rng.integers(0, 256, size=(rows * cols // block, size), dtype=np.uint8)
    if qtype in (T.Q4_K, T.Q5_K, T.Q2_K):  # d, dmin at the start (Q2_K: at the end)
        pos = 0 if qtype != T.Q2_K else size - 4
        blocks[:, pos:pos + 4] = np.array([0.01, 0.004], dtype=np.float16).view(np.uint8)
    elif qtype in (T.Q6_K, T.Q3_K):  # d at the end
        blocks[:, size - 2:] = np.array([0.01], dtype=np.float16).view(np.uint8)
    elif qtype == T.Q8_1:  # d, s at the start
        blocks[:, 0:4] = np.array([0.01, 0.0], dtype=np.float16).view(np.uint8)
    return blocks.reshape(rows, -1)


def encode(w: np.ndarray, qtype, rng) -> np.ndarray:
    if qtype == T.F32:
        return w.astype(np.float32)
    if qtype == T.F16:
        return w.astype(np.float16)
    if qtype in (T.Q4_K, T.Q5_K, T.Q6_K, T.Q2_K, T.Q3_K, T.Q8_1):
        return random_kquant_blocks(qtype, w.shape[0], w.shape[1], rng)
    return gguf.quants.quantize(w.astype(np.float32), qtype)


def write_gguf(path, arch="llama", *, matrix_type=T.F32, types=None, tied=False, seed=0,
               skip=(), extra=None, extra_tensors=None, metadata=True, **cfg):
    """A tiny model written straight to GGUF. Returns the path."""
    cfg = {**CFG, **cfg}
    rng = np.random.default_rng(seed)
    h, inter, hd = cfg["hidden_size"], cfg["intermediate_size"], cfg["hidden_size"] // cfg["num_attention_heads"]
    nh, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    shapes = {"model.embed_tokens.weight": (cfg["vocab_size"], h), "model.norm.weight": (h,)}
    if not tied:
        shapes["lm_head.weight"] = (cfg["vocab_size"], h)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes.update({p + "input_layernorm.weight": (h,), p + "post_attention_layernorm.weight": (h,),
                       p + "self_attn.q_proj.weight": (nh * hd, h), p + "self_attn.k_proj.weight": (nkv * hd, h),
                       p + "self_attn.v_proj.weight": (nkv * hd, h), p + "self_attn.o_proj.weight": (h, nh * hd),
                       p + "mlp.gate_proj.weight": (inter, h), p + "mlp.up_proj.weight": (inter, h),
                       p + "mlp.down_proj.weight": (h, inter)})
        if arch == "qwen2":
            shapes.update({p + "self_attn.q_proj.bias": (nh * hd,), p + "self_attn.k_proj.bias": (nkv * hd,),
                           p + "self_attn.v_proj.bias": (nkv * hd,)})
    w = gguf.GGUFWriter(str(path), arch)
    if metadata:
        w.add_context_length(cfg["max_position_embeddings"])
        w.add_embedding_length(h)
        w.add_block_count(cfg["num_hidden_layers"])
        w.add_feed_forward_length(inter)
        w.add_head_count(nh)
        w.add_head_count_kv(nkv)
        w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
        w.add_rope_freq_base(cfg["rope_theta"])
        w.add_vocab_size(cfg["vocab_size"])
        w.add_bos_token_id(1)
        w.add_eos_token_id(2)
    for key, value in (extra or {}).items():
        if isinstance(value, str):
            w.add_string(key, value)
        elif isinstance(value, float):
            w.add_float32(key, value)
        else:
            w.add_uint32(key, value)
    for name, shape in shapes.items():
        if name in skip:
            continue
        dense = (rng.standard_normal(shape) * (0.1 if len(shape) == 1 else shape[-1] ** -0.5)).astype(np.float32)
        if len(shape) == 1:
            dense = dense + (1.0 if "norm" in name else 0.0)
        if arch == "llama" and (".q_proj." in name or ".k_proj." in name):
            dense = llama_cpp_permute(dense, nh if ".q_proj." in name else nkv)
        qtype = (types or {}).get(name, T.F32 if len(shape) == 1 else matrix_type)
        data = encode(dense, qtype, rng)
        w.add_tensor(gguf_name(name), data, raw_dtype=None if qtype in (T.F32, T.F16) else qtype)
    for name, data in (extra_tensors or {}).items():
        w.add_tensor(name, data)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def transformers_state_dict(path):
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    return m.state_dict()


def dense(t):
    return t.dequantize() if isinstance(t, QuantTensor) else t.float()


@pytest.mark.parametrize("arch,type_name", [
    ("llama", "Q4_K"), ("llama", "Q6_K"), ("llama", "Q8_0"), ("llama", "Q4_0"), ("llama", "Q4_1"),
    ("llama", "F16"), ("llama", "BF16"), ("qwen2", "Q5_K"), ("qwen2", "F32"),
])
def test_tensors_equal_transformers(tmp_path, arch, type_name):
    matrix_type = T[type_name]
    path = write_gguf(tmp_path / f"{arch}.gguf", arch, matrix_type=matrix_type,
                      types={"model.embed_tokens.weight": T.Q8_0})
    ck = load_checkpoint(path)
    ref = transformers_state_dict(path)
    assert ck.format == "gguf"
    assert set(ck.tensors) == set(ref)
    for name, t in ck.tensors.items():
        got = dense(t)
        assert got.shape == ref[name].shape, name
        torch.testing.assert_close(got, ref[name], rtol=0, atol=0, msg=name)
    q = ck.tensors["model.layers.0.self_attn.q_proj.weight"]
    if matrix_type not in (T.F32, T.F16, T.BF16):
        assert isinstance(q, QuantTensor) and q.type_name == matrix_type.name
        assert q.shape == (256, 256) and q.data.shape[0] == 256
    assert ck.config.attention_bias == (arch == "qwen2")
    assert ck.config.architecture == {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}[arch]


def test_unpermuted_q_differs_from_file_order(tmp_path):
    """The un-permutation is not a no-op: the file's q rows, read as stored, are not HF's."""
    path = write_gguf(tmp_path / "m.gguf", matrix_type=T.Q8_0)
    from oci_engine.loader.gguf_file import read_gguf

    gf = read_gguf(path)
    info = gf.tensors["blk.0.attn_q.weight"]
    raw = np.fromfile(path, dtype=np.uint8, count=info.n_bytes, offset=info.offset).reshape(256, -1)
    stored = QuantTensor(int(T.Q8_0), (256, 256), raw).dequantize()
    ours = load_checkpoint(path).tensors["model.layers.0.self_attn.q_proj.weight"].dequantize()
    assert not torch.equal(stored, ours)
    assert torch.equal(stored.sort(dim=0).values, ours.sort(dim=0).values)  # same rows, reordered


def test_config_from_metadata(tmp_path):
    path = write_gguf(tmp_path / "m.gguf", tied=True, rope_theta=1e6, max_position_embeddings=4096,
                      extra={"llama.rope.scaling.type": "linear", "llama.rope.scaling.factor": 4.0,
                             "tokenizer.ggml.eot_token_id": 7})
    ck = load_checkpoint(path)
    c = ck.config
    assert (c.hidden_size, c.intermediate_size, c.num_hidden_layers) == (256, 512, 2)
    assert (c.num_attention_heads, c.num_key_value_heads, c.head_dim) == (4, 2, 64)
    assert c.rope_theta == 1e6 and c.max_position_embeddings == 4096
    assert c.rope_scaling == {"rope_type": "linear", "factor": 4.0}
    assert c.tie_word_embeddings and "lm_head.weight" not in ck.tensors
    assert c.bos_token_id == 1 and c.eos_token_id == [2]
    assert ck.generation_config["eos_token_id"] == [2, 7]


def test_unsupported_tensor_type(tmp_path):
    # Q8_1 is an activation format: gguf knows its layout but no weight decoder exists
    path = write_gguf(tmp_path / "m.gguf", types={"model.layers.1.mlp.up_proj.weight": T.Q8_1})
    with pytest.raises(UnsupportedModelError, match=r"blk\.1\.ffn_up\.weight.*Q8_1"):
        load_checkpoint(path)


def test_unsupported_architecture(tmp_path):
    path = write_gguf(tmp_path / "m.gguf", arch="gpt2", metadata=False)
    with pytest.raises(UnsupportedModelError, match="'gpt2' is not supported"):
        load_checkpoint(path)


def test_missing_tensor(tmp_path):
    path = write_gguf(tmp_path / "m.gguf", skip={"model.layers.1.mlp.down_proj.weight"})
    with pytest.raises(ModelFormatError, match=r"lacks 1 tensor.*layers\.1\.mlp\.down_proj"):
        load_checkpoint(path)


def test_metadata_that_does_not_match_weights(tmp_path):
    path = write_gguf(tmp_path / "m.gguf")
    good = load_checkpoint(path)
    assert good.config.intermediate_size == 512
    bad = write_gguf(tmp_path / "bad.gguf", metadata=False, extra={
        "llama.context_length": 256, "llama.embedding_length": 256, "llama.block_count": 2,
        "llama.feed_forward_length": 1024, "llama.attention.head_count": 4, "llama.attention.head_count_kv": 2})
    with pytest.raises(ModelFormatError, match=r"shape \[512, 256\].*\[1024, 256\].*does not match"):
        load_checkpoint(bad)


def test_missing_metadata_key(tmp_path):
    path = write_gguf(tmp_path / "m.gguf", metadata=False, extra={"llama.embedding_length": 256})
    with pytest.raises(ModelFormatError, match="llama.attention.head_count"):
        load_checkpoint(path)


def test_llama3_rope_factors_reach_the_config(tmp_path):
    factors = np.linspace(1.0, 8.0, 32, dtype=np.float32)  # head_dim 64 -> 32 frequencies
    path = write_gguf(tmp_path / "m.gguf", extra_tensors={"rope_freqs.weight": factors})
    ck = load_checkpoint(path)
    assert ck.config.rope_scaling["rope_type"] == "gguf_freq_factors"
    assert ck.config.rope_scaling["freq_factors"] == factors.tolist()
    assert not any("rope" in name for name in ck.tensors)


def test_unknown_tensor_name(tmp_path):
    path = write_gguf(tmp_path / "m.gguf", extra_tensors={"blk.0.ffn_gate_exps.weight": np.zeros((2, 32), np.float32)})
    with pytest.raises(UnsupportedModelError, match="ffn_gate_exps"):
        load_checkpoint(path)
