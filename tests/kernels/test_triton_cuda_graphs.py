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
