"""CUDA graphs for decode: bucket choice everywhere; capture and replay only where CUDA exists."""
import pytest
import torch
from paged_batch import make_paged_batch

from oci_engine.cuda_graphs import DEFAULT_BATCH_SIZES, DecodeGraphs, pick_batch_size
from oci_engine.errors import BackendError


def cuda(test):
    skip = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU")
    return pytest.mark.gpu(skip(test))


def test_pick_batch_size():
    assert pick_batch_size(1, DEFAULT_BATCH_SIZES) == 1
    assert pick_batch_size(3, DEFAULT_BATCH_SIZES) == 4
    assert pick_batch_size(17, [1, 2, 4, 8, 16, 32]) == 32
    assert pick_batch_size(16, [16, 1, 8]) == 16
    assert pick_batch_size(200, [1, 2, 4]) is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_without_cuda_is_a_typed_error():
    with pytest.raises(BackendError, match="CUDA"):
        DecodeGraphs(lambda views: None, {})


@cuda
def test_decode_attention_graph_replays_like_eager():
    """A captured write-KV + decode-attention step gives the eager result for batches of every
    size, including padded buckets, as the contexts grow between replays."""
    from oci_engine.kernels.paged_decode_attention import paged_decode_attention
    from oci_engine.ops import get_ops

    ops = get_ops("triton")
    B, nh, nkv, d, bs = 5, 8, 2, 128, 16
    b = make_paged_batch([30, 100, 7, 64, 200], [1] * B, num_heads=nh, num_kv_heads=nkv, head_dim=d,
                         block_size=bs, dtype=torch.bfloat16, device="cuda", extra_blocks=40)
    width = 32
    tables = torch.zeros(B, width, dtype=torch.int32, device="cuda")
    tables[:, :b.block_tables.shape[1]] = b.block_tables
    kc, vc = b.k_cache.nan_to_num(0.0), b.v_cache.nan_to_num(0.0)
    max_bs = 8
    buffers = dict(q=torch.zeros(max_bs, nh, d, dtype=torch.bfloat16, device="cuda"),
                   k=torch.zeros(max_bs, nkv, d, dtype=torch.bfloat16, device="cuda"),
                   v=torch.zeros(max_bs, nkv, d, dtype=torch.bfloat16, device="cuda"),
                   slot_mapping=torch.zeros(max_bs, dtype=torch.int64, device="cuda"),
                   seq_lens=torch.zeros(max_bs, dtype=torch.int32, device="cuda"),
                   block_tables=torch.zeros(max_bs, width, dtype=torch.int32, device="cuda"))

    def step(x):
        ops.write_kv(x["k"], x["v"], kc, vc, x["slot_mapping"])
        return paged_decode_attention(x["q"], kc, vc, x["seq_lens"], x["block_tables"], d ** -0.5)

    graphs = DecodeGraphs(step, buffers, pad={"slot_mapping": -1}, batch_sizes=[1, 2, 4, 8]).capture()
    for n in (5, 3, 1):  # buckets 8, 4, 1
        inputs = dict(q=b.q[:n], k=b.k_new[:n], v=b.v_new[:n], slot_mapping=b.slot_mapping[:n],
                      seq_lens=b.seq_lens[:n], block_tables=tables[:n])
        out = graphs(inputs).clone()
        eager = step(inputs)
        assert out.shape == (n, nh, d)
        assert (out.float() - eager.float()).abs().max().item() <= 1e-2
    # replays follow the live inputs, not the values seen at capture: other context lengths
    shorter = dict(inputs, seq_lens=inputs["seq_lens"] - 3)
    out = graphs(shorter).clone()
    assert (out.float() - step(shorter).float()).abs().max().item() <= 1e-2
    assert (out.float() - eager.float()).abs().max().item() > 1e-3


@cuda
def test_model_decode_graphs_match_eager_decode(tiny_checkpoint):
    """A tiny Llama's captured decode step gives the eager step's logits for a padded batch."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runtime"))
    from paged_runner import load_tiny

    from oci_engine.attention_metadata import AttentionMetadata
    from oci_engine.cuda_graphs import model_decode_graphs
    from oci_engine.models import allocate_kv_cache, build_model

    config, tensors = load_tiny(tiny_checkpoint("llama", hidden_size=256, num_attention_heads=4,
                                                num_key_value_heads=1))
    model = build_model(config, tensors, backend="triton", dtype=torch.bfloat16, device="cuda")
    bs, width = 16, 8
    kv = allocate_kv_cache(config, 32, bs, torch.bfloat16, device="cuda")
    lens = [20, 37, 5]
    tables = torch.tensor([[0, 1, 0], [2, 3, 4], [5, 0, 0]], dtype=torch.int32, device="cuda")
    ids = torch.randint(3, 256, (sum(lens),), device="cuda")
    pos = torch.cat([torch.arange(n) for n in lens]).cuda()
    slots = torch.cat([tables[i, torch.arange(n) // bs].long().cpu() * bs + torch.arange(n) % bs
                       for i, n in enumerate(lens)]).cuda()
    starts = torch.tensor([0, 20, 57, 62], dtype=torch.int32, device="cuda")
    seq_lens = torch.tensor(lens, dtype=torch.int32, device="cuda")
    model.forward(ids, pos, kv, AttentionMetadata(slots, starts, seq_lens, tables, 37, 37, False))

    graphs = model_decode_graphs(model, kv, max_blocks_per_seq=width, batch_sizes=[1, 4])
    new_pos = seq_lens.long()
    dec = dict(input_ids=torch.tensor([7, 8, 9], device="cuda"), positions=new_pos,
               slot_mapping=torch.stack([tables[i, p // bs].long() * bs + p % bs for i, p in enumerate(new_pos)]),
               seq_lens=seq_lens + 1, block_tables=tables)
    logits = graphs(dec).clone()
    meta = AttentionMetadata(dec["slot_mapping"], starts.new_tensor([0, 1, 2, 3]), dec["seq_lens"], tables, 1, 38,
                             True)
    eager = model.compute_logits(model.forward(dec["input_ids"], dec["positions"], kv, meta))
    assert logits.shape == eager.shape
    assert (logits - eager).abs().max().item() <= 1e-2 * eager.abs().max().item()


def _prefilled_tiny(tiny_checkpoint, device, dtype):
    """A tiny Llama on the triton backend with three sequences (20, 37, 5 tokens) prefilled into its cache."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runtime"))
    from paged_runner import load_tiny

    from oci_engine.attention_metadata import AttentionMetadata
    from oci_engine.models import allocate_kv_cache, build_model

    config, tensors = load_tiny(tiny_checkpoint("llama", hidden_size=256, num_attention_heads=4,
                                                num_key_value_heads=1))
    model = build_model(config, tensors, backend="triton", dtype=dtype, device=device)
    bs = 16
    kv = allocate_kv_cache(config, 32, bs, dtype, device=device)
    lens = [20, 37, 5]
    tables = torch.tensor([[0, 1, 0], [2, 3, 4], [5, 0, 0]], dtype=torch.int32, device=device)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 256, (sum(lens),), generator=g).to(device)
    pos = torch.cat([torch.arange(n) for n in lens]).to(device)
    slots = torch.cat([tables[i, torch.arange(n) // bs].long().cpu() * bs + torch.arange(n) % bs
                       for i, n in enumerate(lens)]).to(device)
    starts = torch.tensor([0, 20, 57, 62], dtype=torch.int32, device=device)
    seq_lens = torch.tensor(lens, dtype=torch.int32, device=device)
    model.forward(ids, pos, kv, AttentionMetadata(slots, starts, seq_lens, tables, 37, 37, False))
    new_pos = seq_lens.long()
    dec = dict(input_ids=torch.tensor([7, 8, 9], device=device), positions=new_pos,
               slot_mapping=torch.stack([tables[i, p // bs].long() * bs + p % bs for i, p in enumerate(new_pos)]),
               seq_lens=seq_lens + 1, block_tables=tables)
    meta = AttentionMetadata(dec["slot_mapping"], starts.new_tensor([0, 1, 2, 3]), dec["seq_lens"], tables, 1, 38,
                             True)
    return model, kv, dec, meta


@pytest.mark.skipif(torch.cuda.is_available(), reason="the interpreter path; on a GPU the captured graph is tested")
def test_padded_static_decode_step_matches_eager(tiny_checkpoint):
    """The step a CUDA graph captures, run here in the interpreter: a live batch of 3 copied into
    static buffers of a wider block table, padded to a bucket of 8 (pad rows: slot -1, seq_len 0),
    gives the eager decode step's logits for the live rows and writes the KV cache only where eager does."""
    from oci_engine.cuda_graphs import fill_static, model_decode_step

    model, kv, dec, meta = _prefilled_tiny(tiny_checkpoint, "cpu", torch.float32)
    kv_before = [(k.clone(), v.clone()) for k, v in kv]
    step, buffers, pad = model_decode_step(model, kv, max_blocks_per_seq=6, rows=8, device="cpu")
    for name, buf in buffers.items():
        buf.fill_(5)  # stale values from an earlier replay must not leak into this one
    fill_static(buffers, dec, 8, pad)
    assert buffers["slot_mapping"][3:].eq(-1).all() and buffers["seq_lens"][3:].eq(0).all()
    padded = step({name: buf[:8] for name, buf in buffers.items()})[:3].clone()
    kv_graph = [(k.clone(), v.clone()) for k, v in kv]

    for (k, v), (k0, v0) in zip(kv, kv_before):
        k.copy_(k0)
        v.copy_(v0)
    eager = model.compute_logits(model.forward(dec["input_ids"], dec["positions"], kv, meta))
    assert torch.isfinite(padded).all()
    assert (padded - eager).abs().max().item() <= 1e-4
    written = dec["slot_mapping"].tolist()
    for (kg, vg), (k, v), (k0, v0) in zip(kv_graph, kv, kv_before):
        for got, want, before in ((kg, k, k0), (vg, v, v0)):
            # the live rows' K/V as eager writes them (the padded GEMM may round differently), and
            # nothing else touched: padding rows wrote nowhere
            assert (got - want).abs().max().item() <= 1e-5
            flat_got, flat_before = got.flatten(0, 1), before.flatten(0, 1)
            untouched = torch.ones(flat_got.shape[0], dtype=torch.bool)
            untouched[written] = False
            assert torch.equal(flat_got[untouched], flat_before[untouched])


@cuda
def test_engine_decode_through_graphs_matches_enforce_eager(tiny_checkpoint):
    """LLM on the triton backend replays captured decode graphs by default; its greedy tokens for a
    batch of mixed lengths equal those of enforce_eager=True."""
    from oci_engine import LLM, SamplingParams

    path = tiny_checkpoint("llama", hidden_size=256, num_attention_heads=4, num_key_value_heads=1)
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(3, 256, (n,), generator=g).tolist() for n in (5, 17, 40, 3, 64)]
    sp = SamplingParams(temperature=0.0, max_tokens=24, ignore_eos=True)
    outs = {}
    for eager in (False, True):
        llm = LLM(str(path), backend="triton", dtype="float32", max_num_seqs=8, kv_cache_memory=0.05,
                  enforce_eager=eager)
        assert (llm.engine.runner.graphs is None) == eager
        outs[eager] = [o.outputs[0].token_ids for o in llm.generate(prompt_token_ids=prompts, sampling_params=sp,
                                                                     use_tqdm=False)]
    assert outs[False] == outs[True]


class _StaticReplay:
    """DecodeGraphs without the capture: the live batch goes through the same static buffers and
    padding (fill_static) and the captured step function runs on them eagerly. Only CUDA's replay
    itself is missing, which the GPU tests above cover."""

    def __init__(self, step, buffers, pad, batch_sizes):
        self.step, self.buffers, self.pad, self.sizes = step, buffers, pad, batch_sizes
        self.calls = 0

    def __call__(self, inputs):
        from oci_engine.cuda_graphs import fill_static, pick_batch_size

        n = inputs["input_ids"].shape[0]
        bs = pick_batch_size(n, self.sizes)
        fill_static(self.buffers, inputs, bs, self.pad)
        self.calls += 1
        return self.step({name: buf[:bs] for name, buf in self.buffers.items()})[:n]


@pytest.mark.skipif(torch.cuda.is_available(), reason="the interpreter path; on a GPU the real graphs are tested")
def test_engine_decode_steps_through_static_buffers_match_eager(tiny_checkpoint):
    """The engine's graph path on the CPU: ModelRunner hands decode steps to a DecodeGraphRunner, which
    takes the step's inputs as the runner describes them and pads them into a bucket; greedy tokens of a mixed batch, some finishing early, equal the eager run's."""
    from oci_engine import LLM, SamplingParams
    from oci_engine.cuda_graphs import model_decode_step
    from oci_engine.decode_graph_runner import DecodeGraphRunner

    path = tiny_checkpoint("llama", hidden_size=256, num_attention_heads=4, num_key_value_heads=1)
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(3, 256, (n,), generator=g).tolist() for n in (5, 17, 40)]
    params = [SamplingParams(temperature=0.0, max_tokens=m, ignore_eos=True) for m in (12, 20, 6)]
    outs = []
    for static in (False, True):
        llm = LLM(str(path), backend="triton", dtype="float32", device="cpu", max_num_seqs=4, kv_cache_memory=0.01)
        if static:
            runner = DecodeGraphRunner.__new__(DecodeGraphRunner)
            engine = llm.engine
            runner.max_batch = 4
            runner.width = -(-engine.max_seq_len // engine.kv.block_size)
            runner.graphs = _StaticReplay(*model_decode_step(engine.runner.model, engine.runner.kv_caches,
                                                             runner.width, 4, device="cpu"), [1, 2, 4])
            engine.runner.graphs = runner
        res = llm.generate(prompt_token_ids=prompts, sampling_params=params, use_tqdm=False)
        outs.append([o.outputs[0].token_ids for o in res])
    assert runner.graphs.calls >= 19  # every decode step after the prefills went through the static path
    assert outs[0] == outs[1]
    assert [len(t) for t in outs[1]] == [12, 20, 6]
