"""End-to-end decode throughput on the GPU: our engine, a CUDA-graph decode loop over our model, and
Hugging Face transformers' generate, all greedy over the same prompt tokens (part of bench/gpu.py)."""
from __future__ import annotations

import statistics
import time

PROMPTS = ["def fibonacci(n):", "# Sort a list of dictionaries by a key\n", "class LRUCache:",
           "import numpy as np\n\ndef moving_average(x, w):", "def is_prime(n: int) -> bool:",
           "Write a function that parses a CSV line.", "SELECT name FROM users WHERE", "async def fetch(url):"]


def _timed(fn, repeats):
    import torch

    fn()  # warm-up: compilation, autotuning, allocator
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _prompt_ids(tokenizer, batch):
    ids = [tokenizer.encode(PROMPTS[i % len(PROMPTS)]) for i in range(batch)]
    n = min(map(len, ids))  # equal lengths: the transformers peer needs no padding
    return [p[:n] for p in ids]


def _graph_loop(path, batch_ids, tokens, block_size=16):
    """Prefill eagerly, then decode with captured CUDA graphs; returns a callable running it all."""
    import torch

    from oci_engine.attention_metadata import AttentionMetadata
    from oci_engine.cuda_graphs import model_decode_graphs
    from oci_engine.loader import load_checkpoint
    from oci_engine.models import allocate_kv_cache, build_model

    ckpt = load_checkpoint(path)
    model = build_model(ckpt.config, ckpt.tensors, backend="triton", dtype=torch.bfloat16, device="cuda")
    B, P = len(batch_ids), len(batch_ids[0])
    per_seq = -(-(P + tokens) // block_size)
    kv = allocate_kv_cache(ckpt.config, B * per_seq, block_size, torch.bfloat16, device="cuda")
    dev = dict(device="cuda")
    tables = torch.arange(B * per_seq, dtype=torch.int32, **dev).view(B, per_seq)
    ids = torch.tensor(batch_ids, **dev).view(-1)
    pos = torch.arange(P, **dev).repeat(B)
    slots = (tables.long() * block_size).repeat_interleave(block_size, 1)[:, :P] + torch.arange(P, **dev) % block_size
    prefill = AttentionMetadata(slots.view(-1), torch.arange(0, B * P + 1, P, dtype=torch.int32, **dev),
                                torch.full((B,), P, dtype=torch.int32, **dev), tables, P, P, False)
    graphs = model_decode_graphs(model, kv, per_seq, batch_sizes=[B])
    rows = torch.arange(B, **dev)

    def run():
        hidden = model.forward(ids, pos, kv, prefill)
        nxt = model.compute_logits(hidden.view(B, P, -1)[:, -1]).argmax(-1)
        out = [nxt]
        for step in range(tokens - 1):
            p = torch.full((B,), P + step, **dev)
            slot = tables[rows, p // block_size].long() * block_size + p % block_size
            nxt = graphs(dict(input_ids=nxt, positions=p, slot_mapping=slot, seq_lens=(p + 1).to(torch.int32),
                              block_tables=tables)).argmax(-1)
            out.append(nxt)
        return torch.stack(out, 1)

    return run


def bench_e2e(model_name, batches, tokens, repeats):
    import torch
    from transformers import AutoModelForCausalLM

    from oci_engine import LLM, SamplingParams
    from oci_engine.model_cache import resolve_model

    path = resolve_model(model_name)
    llm = LLM(str(path), backend="triton", device="cuda", dtype="bfloat16")
    params = SamplingParams(temperature=0.0, max_tokens=tokens, ignore_eos=True)
    if path.is_file():  # transformers dequantizes the GGUF (to fp32) itself
        hf = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    else:
        hf = AutoModelForCausalLM.from_pretrained(str(path))
    hf = hf.to("cuda", torch.bfloat16).eval()
    rows = []
    print(f"\ne2e decode, {model_name}, {tokens} new tokens per sequence, greedy, median of {repeats}")
    print(f"{'batch':>5} {'engine tok/s':>13} {'graph loop tok/s':>17} {'transformers tok/s':>19} "
          f"{'engine/hf':>9} {'graphs/hf':>9} {'same greedy tokens':>19}")
    for B in batches:
        batch_ids = _prompt_ids(llm.tokenizer, B)
        ours = _timed(lambda: llm.generate(prompt_token_ids=batch_ids, sampling_params=params, use_tqdm=False),
                      repeats)
        loop = _graph_loop(path, batch_ids, tokens)
        graph_t = _timed(loop, repeats)
        inp = torch.tensor(batch_ids, device="cuda")

        def hf_generate():
            with torch.no_grad():
                return hf.generate(inp, attention_mask=torch.ones_like(inp), max_new_tokens=tokens,
                                   min_new_tokens=tokens, do_sample=False, pad_token_id=0)

        hf_t = _timed(hf_generate, repeats)
        ours_tokens = llm.generate(prompt_token_ids=batch_ids[:1], sampling_params=params, use_tqdm=False)[0].token_ids
        hf_tokens = hf_generate()[0, inp.shape[1]:].tolist()
        same = next((i for i, (a, b) in enumerate(zip(ours_tokens, hf_tokens)) if a != b), len(hf_tokens))
        n = B * tokens
        row = dict(batch=B, engine_tps=n / ours, graph_loop_tps=n / graph_t, transformers_tps=n / hf_t,
                   engine_vs_hf=hf_t / ours, graphs_vs_hf=hf_t / graph_t, greedy_prefix_match=same)
        print(f"{B:5d} {row['engine_tps']:13.0f} {row['graph_loop_tps']:17.0f} {row['transformers_tps']:19.0f} "
              f"{row['engine_vs_hf']:8.2f}x {row['graphs_vs_hf']:8.2f}x {same:12d}/{len(hf_tokens)}")
        rows.append(row)
    return rows
