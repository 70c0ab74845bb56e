"""The `cpu` backend's fused decoder stack (one C++ call per step) against the per-op `cpu` path it
replaces (bit for bit) and against the torch reference backend (fp32 on dequantized weights), on
every ISA path, for a small Llama with every GGUF block format, q/k/v bias (Qwen2), fp32 and bf16
KV caches, decode and short-chunk steps of several sequences over shuffled cache blocks."""
from __future__ import annotations

import dataclasses
import random
import sys

import gguf
import numpy as np
import pytest
import torch
from cpu_isa import ISAS, forced_isa
from test_cpu_qgemm import SCALE_FIELDS, random_blocks

from oci_engine.attention_metadata import AttentionMetadata
from oci_engine.config import ModelConfig
from oci_engine.loader.quant_tensor import QuantTensor
from oci_engine.models import allocate_kv_cache, build_model
from oci_engine.ops import cpu_linear
from oci_engine.ops.cpu_backend import PREFILL_MIN_NEW_TOKENS

Q = gguf.GGMLQuantizationType
FORMATS = [Q.Q4_0, Q.Q4_1, Q.Q8_0, Q.Q4_K, Q.Q6_K]
CONFIG = ModelConfig(architecture="Qwen2ForCausalLM", vocab_size=96, hidden_size=256, intermediate_size=512,
                     num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, head_dim=64,
                     max_position_embeddings=256, rms_norm_eps=1e-5)
BLOCK = 4


# K-quant super-scales scaled down from random_blocks' range so every format's weights are ~0.05 in
# size: with weights tens of times larger the random model's attention is a near-argmax whose
# winner flips on bf16 rounding, and no tolerance separates a bug from that chaos.
K_SCALE = {Q.Q4_K: 0.01, Q.Q6_K: 0.002}


def _weight(qtype, rows: int, cols: int, seed: int) -> QuantTensor:
    if qtype in K_SCALE:  # gguf cannot quantize K-quants: random blocks, every code pattern
        qt = random_blocks(qtype, rows, cols, seed)
        raw = qt.data.reshape(rows, cols // 256, -1)
        for off in SCALE_FIELDS[qtype]:
            f = raw[:, :, off:off + 2].copy().view(np.float16) * np.float16(K_SCALE[qtype])
            raw[:, :, off:off + 2] = f.view(np.uint8)
        return qt
    w = np.random.default_rng(seed).standard_normal((rows, cols)).astype(np.float32) * 0.05
    return QuantTensor(int(qtype), (rows, cols), gguf.quants.quantize(w, qtype))


def _tensors(bias: bool) -> dict:
    g = torch.Generator().manual_seed(1)
    c, H, I = CONFIG, CONFIG.hidden_size, CONFIG.intermediate_size
    kv = c.num_key_value_heads * c.head_dim
    t = {"model.embed_tokens.weight": torch.randn(c.vocab_size, H, generator=g),
         "model.norm.weight": 1 + 0.1 * torch.randn(H, generator=g),
         "lm_head.weight": torch.randn(c.vocab_size, H, generator=g) / 16}
    seed = 0
    for i in range(c.num_hidden_layers):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = 1 + 0.1 * torch.randn(H, generator=g)
        t[p + "post_attention_layernorm.weight"] = 1 + 0.1 * torch.randn(H, generator=g)
        shapes = {"self_attn.q_proj": (H, H), "self_attn.k_proj": (kv, H), "self_attn.v_proj": (kv, H),
                  "self_attn.o_proj": (H, H), "mlp.gate_proj": (I, H), "mlp.up_proj": (I, H), "mlp.down_proj": (H, I)}
        groups = {"self_attn.q_proj": 0, "self_attn.k_proj": 0, "self_attn.v_proj": 0, "self_attn.o_proj": 1,
                  "mlp.gate_proj": 2, "mlp.up_proj": 2, "mlp.down_proj": 3}  # a fused group shares a format
        for name, shape in shapes.items():
            seed += 1
            t[p + name + ".weight"] = _weight(FORMATS[(4 * i + groups[name]) % 5], *shape, seed=seed)
        if bias:
            for n, rows in (("q", H), ("k", kv), ("v", kv)):
                t[p + f"self_attn.{n}_proj.bias"] = 0.1 * torch.randn(rows, generator=g)
    return t


class Runner:
    """Paged cache with blocks handed out in shuffled order; step() -> final hidden states."""

    def __init__(self, model, kv_dtype, num_blocks=48):
        self.model, self.kv = model, allocate_kv_cache(CONFIG, num_blocks, BLOCK, kv_dtype)
        self.free = list(range(num_blocks))
        random.Random(0).shuffle(self.free)
        self.blocks: dict[int, list[int]] = {}
        self.lens: dict[int, int] = {}

    def step(self, chunks, fused: bool) -> torch.Tensor:
        ids, pos, slots, starts, lens = [], [], [], [0], []
        for sid, toks in chunks:
            blocks, start = self.blocks.setdefault(sid, []), self.lens.get(sid, 0)
            while len(blocks) * BLOCK < start + len(toks):
                blocks.append(self.free.pop())
            slots += [blocks[p // BLOCK] * BLOCK + p % BLOCK for p in range(start, start + len(toks))]
            ids += toks
            pos += range(start, start + len(toks))
            starts.append(starts[-1] + len(toks))
            lens.append(start + len(toks))
            self.lens[sid] = start + len(toks)
        width = max(len(self.blocks[s]) for s, _ in chunks)
        bt = torch.tensor([self.blocks[s] + [0] * (width - len(self.blocks[s])) for s, _ in chunks], dtype=torch.int32)
        meta = AttentionMetadata(torch.tensor(slots), torch.tensor(starts, dtype=torch.int32),
                                 torch.tensor(lens, dtype=torch.int32), bt, max(len(t) for _, t in chunks), max(lens),
                                 all(len(t) == 1 for _, t in chunks), starts, lens)
        saved = self.model.fused
        if not fused:
            self.model.fused = None
        try:
            return self.model.forward(torch.tensor(ids), torch.tensor(pos), self.kv, meta)
        finally:
            self.model.fused = saved


def _plan(rng: random.Random):
    """Prefill chunks of three sequences, then mixed chunk + decode steps, then batched decode."""
    tok = lambda n: [rng.randrange(CONFIG.vocab_size) for _ in range(n)]  # noqa: E731
    return [[(0, tok(5)), (1, tok(3))], [(0, tok(1)), (1, tok(1)), (2, tok(9))], [(0, tok(1))],
            [(1, tok(2)), (2, tok(1))], [(0, tok(1)), (1, tok(1)), (2, tok(1))], [(2, tok(7)), (0, tok(1))]]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("kv_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("bias", [False, True])
def test_fused_stack_equals_per_op_path_and_tracks_torch(isa, kv_dtype, bias):
    tensors = _tensors(bias)
    with forced_isa(isa):
        cpu = build_model(CONFIG, tensors, backend="cpu")
        assert cpu.fused is not None, "every weight is a kernel-backed GGUF block matrix: the stack must fuse"
        ref = build_model(CONFIG, tensors, backend="torch")
        assert ref.fused is None
        a, b, r = Runner(cpu, kv_dtype), Runner(cpu, kv_dtype), Runner(ref, kv_dtype)
        for chunks in _plan(random.Random(2)):
            got, per_op, want = a.step(chunks, True), b.step(chunks, False), r.step(chunks, False)
            assert torch.equal(got, per_op), f"{isa}: fused stack differs from the per-op cpu path"
            err = (got - want).norm() / want.norm()
            assert err < 1e-2, f"{isa}: relative error {err:.2e} vs torch"
        for (k1, v1), (k2, v2) in zip(a.kv, b.kv):  # the K/V the stack wrote are the per-op path's
            assert torch.equal(k1, k2) and torch.equal(v1, v2)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("kv_dtype", [torch.float32, torch.bfloat16])
def test_long_decode_contexts_cut_into_parts(isa, kv_dtype):
    """A decode token with more than 1024 keys of context is attended in parts that are merged
    afterwards (csrc/attention_items.h): the stack and the per-op path cut and merge alike, the
    result tracks torch, and a sequence gets the same output batched or alone."""
    config = dataclasses.replace(CONFIG, max_position_embeddings=2048)
    tensors = _tensors(False)
    rng = random.Random(7)
    tok = lambda n: [rng.randrange(CONFIG.vocab_size) for _ in range(n)]  # noqa: E731
    long_a, long_b, short = tok(600), tok(530), tok(6)  # 1,130 keys: two parts, the second partly filled
    with forced_isa(isa):
        cpu = build_model(config, tensors, backend="cpu")
        ref = build_model(config, tensors, backend="torch")
        runners = [Runner(m, kv_dtype, num_blocks=400) for m in (cpu, cpu, ref, cpu)]
        for rn in runners[:3]:
            rn.step([(0, long_a)], False), rn.step([(0, long_b), (1, short)], False)
        alone = runners[3]
        alone.step([(0, long_a)], False), alone.step([(0, long_b)], False)
        for _ in range(3):
            t0, t1 = tok(1), tok(1)
            got = runners[0].step([(0, t0), (1, t1)], True)
            per_op = runners[1].step([(0, t0), (1, t1)], False)
            want = runners[2].step([(0, t0), (1, t1)], False)
            assert torch.equal(got, per_op), f"{isa}: fused stack differs from the per-op cpu path"
            err = (got - want).norm() / want.norm()
            assert err < 1e-2, f"{isa}: relative error {err:.2e} vs torch"
            assert torch.equal(alone.step([(0, t0)], True)[0], got[0]), "batched and alone differ"


@pytest.mark.parametrize("isa", ISAS)
def test_fused_stack_with_heads_not_whole_activation_blocks(isa, monkeypatch):
    """Heads of 16 dims, one per KV head: an attention item's output slice (16 floats) is not a whole
    32-element int8 activation block, so the stack converts the o-projection's input row by row
    instead of per item; still the per-op path bit for bit."""
    monkeypatch.setattr(sys.modules[__name__], "CONFIG", dataclasses.replace(
        CONFIG, num_attention_heads=16, num_key_value_heads=16, head_dim=16))
    tensors = _tensors(False)
    with forced_isa(isa):
        cpu = build_model(CONFIG, tensors, backend="cpu")
        assert cpu.fused is not None
        a, b = Runner(cpu, torch.float32), Runner(cpu, torch.float32)
        for chunks in _plan(random.Random(3)):
            assert torch.equal(a.step(chunks, True), b.step(chunks, False)), f"{isa}: fused stack differs"


def test_steps_the_stack_does_not_cover_fall_back(monkeypatch):
    """Prefill-sized steps (DENSE_MIN_ROWS rows, or one chunk long enough for torch SDPA) return None
    and the model runs op by op; batch-invariant mode keeps many-row steps in the stack, on the int8
    kernel, equal to the per-op path."""
    model = build_model(CONFIG, _tensors(False), backend="cpu")
    a, b = Runner(model, torch.float32), Runner(model, torch.float32)
    n_seqs = -(-cpu_linear.DENSE_MIN_ROWS // 4) + 1
    many = lambda first: [(s, list(range(first, first + 4))) for s in range(n_seqs)]  # noqa: E731
    calls = []
    fused = model.fused
    model.fused = lambda *args: calls.append(fused(*args)) or calls[-1]
    try:
        a.step(many(0), True)
        a.step([(n_seqs, list(range(PREFILL_MIN_NEW_TOKENS)))], True)
        assert calls == [None, None]
        b.step(many(0), False)
        monkeypatch.setattr(cpu_linear, "BATCH_INVARIANT", True)
        got, per_op = a.step(many(4), True), b.step(many(4), False)
        assert calls[-1] is not None and torch.equal(got, per_op)
    finally:
        model.fused = fused


def test_steps_the_per_op_path_sends_big_weights_to_torch_fall_back(monkeypatch):
    """A model whose layer weights reach DENSE_BIG_ELEMS (a 1B+ model's MLP) has them multiplied by
    torch's GEMM from DENSE_BIG_MIN_ROWS rows on the per-op path: the stack leaves such steps to it
    (so fused and per-op results stay equal), and still runs smaller steps."""
    model = build_model(CONFIG, _tensors(False), backend="cpu")
    smallest = min(h.out_features * h.in_features for ly in model.layers for n in ("qkv", "o", "gate_up", "down")
                   for h in ly[n].handles)
    monkeypatch.setattr(cpu_linear, "DENSE_BIG_ELEMS", smallest)
    monkeypatch.setattr(cpu_linear, "DENSE_BIG_MIN_K", 0)  # the tiny model's rows count as long
    a, b = Runner(model, torch.float32), Runner(model, torch.float32)
    rows = cpu_linear.DENSE_BIG_MIN_ROWS
    assert rows < cpu_linear.DENSE_MIN_ROWS
    step = [(s, [s]) for s in range(rows)]  # `rows` sequences decoding one token each
    calls = []
    fused = model.fused
    model.fused = lambda *args: calls.append(fused(*args)) or calls[-1]
    try:
        got, per_op = a.step(step, True), b.step(step, False)
        assert calls == [None] and torch.equal(got, per_op)
        a.step([(s, [s + 1]) for s in range(rows - 1)], True)
        assert calls[-1] is not None
    finally:
        model.fused = fused


def test_bad_positions_and_slots_raise():
    model = build_model(CONFIG, _tensors(False), backend="cpu")
    r = Runner(model, torch.float32)
    r.step([(0, [1, 2, 3])], True)
    kv = r.kv
    with pytest.raises(IndexError, match="outside the cos/sin table"):
        model.fused(torch.zeros(1, CONFIG.hidden_size), torch.tensor([CONFIG.max_position_embeddings]), kv,
                    AttentionMetadata(torch.tensor([0]), torch.tensor([0, 1], dtype=torch.int32),
                                      torch.tensor([1], dtype=torch.int32), torch.zeros(1, 1, dtype=torch.int32),
                                      1, 1, True, [0, 1], [1]))
    with pytest.raises(IndexError, match="outside the KV cache"):
        model.fused(torch.zeros(1, CONFIG.hidden_size), torch.tensor([0]), kv,
                    AttentionMetadata(torch.tensor([48 * BLOCK]), torch.tensor([0, 1], dtype=torch.int32),
                                      torch.tensor([1], dtype=torch.int32), torch.zeros(1, 1, dtype=torch.int32),
                                      1, 1, True, [0, 1], [1]))
