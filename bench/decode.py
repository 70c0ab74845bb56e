"""`python -m bench decode`: the cpu backend (C++ kernels on the GGUF blocks) against llama.cpp
(llama-cpp-python, built from source) and transformers fp32/bf16 on the same SmolLM2 GGUF.

Measured, each as the median over --repeats runs interleaved across engines (so load on a shared
machine hits every engine alike), all with --threads threads:
  decode tok/s at batch 1; aggregate decode tok/s of --batch sequences decoded together;
  prefill tok/s of a --prefill-tokens prompt (to the last token's logits).
Then one decode step of ours profiled: the fraction of its wall time spent outside C++ kernels.
Ratios are ours / peer. On a shared machine whose cores are busy with other work, every engine's
spin-waiting thread pool collapses at --threads 2 (decode drops 10-30x for all of them); compare
--threads 1 runs there. Build the peer with AMX off where its AMX path crashes:
  CMAKE_ARGS="-DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF -DGGML_NATIVE=OFF
  -DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON" pip install llama-cpp-python
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from oci_engine.attention_metadata import AttentionMetadata

PROMPT = "def quicksort(items):\n    \"\"\"Sort a list of numbers.\"\"\"\n"


class OursPaged:
    """The model over a paged cache with contiguous block tables: the smallest driver of a step."""

    def __init__(self, model, config, max_seqs: int, max_len: int, block_size: int = 16):
        from oci_engine.models import allocate_kv_cache

        self.model, self.bs = model, block_size
        self.per_seq = -(-max_len // block_size)
        self.kv = allocate_kv_cache(config, max_seqs * self.per_seq, block_size)
        self.tables = torch.arange(max_seqs * self.per_seq, dtype=torch.int32).view(max_seqs, self.per_seq)

    def step(self, seq_ids: list[int], tokens: list[list[int]], starts: list[int]) -> torch.Tensor:
        """New tokens of several sequences (each continuing at `starts`) -> last-token logits [B, V]."""
        ids, pos, slots, qsl, lens = [], [], [], [0], []
        for s, toks, st in zip(seq_ids, tokens, starts):
            ids += toks
            pos += range(st, st + len(toks))
            slots += [int(self.tables[s, p // self.bs]) * self.bs + p % self.bs for p in range(st, st + len(toks))]
            qsl.append(qsl[-1] + len(toks))
            lens.append(st + len(toks))
        meta = AttentionMetadata(
            slot_mapping=torch.tensor(slots), query_start_loc=torch.tensor(qsl, dtype=torch.int32),
            seq_lens=torch.tensor(lens, dtype=torch.int32), block_tables=self.tables[seq_ids],
            max_query_len=max(len(t) for t in tokens), max_seq_len=max(lens),
            is_decode=all(len(t) == 1 for t in tokens), query_start_loc_list=qsl, seq_lens_list=lens)
        hidden = self.model.forward(torch.tensor(ids), torch.tensor(pos), self.kv, meta)
        return self.model.compute_logits(hidden[torch.tensor(qsl[1:]) - 1])


def ours_engine(path, args):
    from oci_engine.loader import load_checkpoint
    from oci_engine.models import build_model

    ckpt = load_checkpoint(path)
    model = build_model(ckpt.config, ckpt.tensors, backend="cpu")
    runner = OursPaged(model, ckpt.config, max(args.batch, 1), args.prefill_tokens + args.decode_tokens + 64)

    def decode(prompt, batch, n):
        seqs = list(range(batch))
        logits = runner.step(seqs, [prompt] * batch, [0] * batch)
        t0 = time.perf_counter()
        for i in range(n):
            nxt = logits.argmax(-1).tolist()
            logits = runner.step(seqs, [[t] for t in nxt], [len(prompt) + i] * batch)
        return batch * n / (time.perf_counter() - t0)

    def prefill(ids):
        t0 = time.perf_counter()
        runner.step([0], [ids], [0])
        return len(ids) / (time.perf_counter() - t0)

    return {"decode": decode, "prefill": prefill, "runner": runner}


def llamacpp_engine(path, args):
    from llama_cpp import Llama

    llm = Llama(model_path=str(path), n_threads=args.threads, n_threads_batch=args.threads,
                n_ctx=args.prefill_tokens + args.decode_tokens + 64, n_batch=args.prefill_tokens, verbose=False)

    def decode(prompt, batch, n):
        assert batch == 1
        llm.reset()
        llm.eval(prompt)
        t0 = time.perf_counter()
        for _ in range(n):
            tok = int(llm.scores[llm.n_tokens - 1].argmax())
            llm.eval([tok])
        return n / (time.perf_counter() - t0)

    def prefill(ids):
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(ids)
        return len(ids) / (time.perf_counter() - t0)

    return {"decode": decode, "prefill": prefill}


def hf_engine(path, args, dtype=torch.float32):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()
    model = model.to(dtype)

    @torch.inference_mode()
    def decode(prompt, batch, n):
        out = model(torch.tensor([prompt] * batch), use_cache=True, logits_to_keep=1)
        t0 = time.perf_counter()
        for _ in range(n):
            nxt = out.logits[:, -1].argmax(-1, keepdim=True)
            out = model(nxt, past_key_values=out.past_key_values, use_cache=True)
        return batch * n / (time.perf_counter() - t0)

    @torch.inference_mode()
    def prefill(ids):
        t0 = time.perf_counter()
        model(torch.tensor([ids]), use_cache=True, logits_to_keep=1)
        return len(ids) / (time.perf_counter() - t0)

    return {"decode": decode, "prefill": prefill}


def profile_decode_step(runner, prompt, steps: int = 20) -> tuple[float, dict[str, float]]:
    """Fraction of a batch-1 decode step's wall time spent outside oci_engine._C calls, and the
    per-kernel time shares. Each _C entry point is wrapped with a timer for the measurement; with the
    fused decoder stack (cpu_decoder.py) the layers are one decoder_stack_run call, so the per-op
    shares then cover only the embedding (dequant) and the LM head (gemm)."""
    from oci_engine import _C

    names = ["gemm", "dequant", "rms_norm", "add_rms_norm", "rotary", "silu_mul", "write_kv", "attention",
             "decoder_stack_run"]
    spent = dict.fromkeys(names, 0.0)
    originals = {n: getattr(_C, n) for n in names}

    def timed(n, fn):
        def wrapper(*a):
            t = time.perf_counter()
            try:
                return fn(*a)
            finally:
                spent[n] += time.perf_counter() - t
        return wrapper

    for n in names:
        setattr(_C, n, timed(n, originals[n]))
    try:
        logits = runner.step([0], [prompt], [0])
        for n in names:
            spent[n] = 0.0
        t0 = time.perf_counter()
        for i in range(steps):
            logits = runner.step([0], [[int(logits[0].argmax())]], [len(prompt) + i])
        wall = time.perf_counter() - t0
    finally:
        for n in names:
            setattr(_C, n, originals[n])
    inside = sum(spent.values())
    return 1 - inside / wall, {n: v / wall for n, v in spent.items() if v}


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench decode", description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m", help="registry name or .gguf path")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--decode-tokens", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--prefill-tokens", type=int, default=1000)
    ap.add_argument("--engines", default="ours,llamacpp,hf,hf-bf16")
    ap.add_argument("--tasks", default="decode,batch,prefill",
                    help="comma-separated subset of decode (batch 1), batch (--batch sequences), prefill")
    args = ap.parse_args(argv)

    from oci_engine import _C
    from oci_engine.model_cache import resolve_model
    from oci_engine.tokenizer import Tokenizer

    torch.set_num_threads(args.threads)
    path = resolve_model(args.model)
    tok = Tokenizer.from_pretrained(path)
    prompt = tok.encode(PROMPT)
    long_ids = (tok.encode(PROMPT * 200) * 2)[:args.prefill_tokens]
    makers = {"ours": ours_engine, "llamacpp": llamacpp_engine, "hf": hf_engine,
              "hf-bf16": lambda p, a: hf_engine(p, a, torch.bfloat16)}
    engines = {}
    for name in args.engines.split(","):
        print(f"loading {name} ...", flush=True)
        engines[name] = makers[name](path, args)
    every = {"decode": ("decode b=1 tok/s", lambda e: e["decode"](prompt, 1, args.decode_tokens)),
             "batch": (f"decode b={args.batch} aggregate tok/s",
                       lambda e: e["decode"](prompt, args.batch, args.decode_tokens // 2)),
             "prefill": (f"prefill {len(long_ids)} tok/s", lambda e: e["prefill"](long_ids))}
    wanted = args.tasks.split(",")
    if unknown := set(wanted) - set(every):
        ap.error(f"--tasks: unknown {', '.join(sorted(unknown))}; choose from {', '.join(every)}")
    tasks = dict(every[k] for k in every if k in wanted)
    skip = {("llamacpp", f"decode b={args.batch} aggregate tok/s"), ("hf-bf16", "decode b=1 tok/s"),
            ("hf-bf16", f"decode b={args.batch} aggregate tok/s")}
    results: dict[tuple[str, str], list[float]] = {}
    for task, run in tasks.items():
        for name, eng in engines.items():  # warm-up, not timed
            if (name, task) not in skip:
                run(eng)
        for r in range(args.repeats):
            for name, eng in engines.items():
                if (name, task) not in skip:
                    results.setdefault((name, task), []).append(run(eng))
        print(f"  {task}: " + ", ".join(f"{n} {statistics.median(results[(n, task)]):.1f}"
                                        for n in engines if (n, task) in results), flush=True)

    print(f"\nmachine: {torch.backends.cpu.get_cpu_capability()} (torch), our ISA path {_C.isa()}, "
          f"{args.threads} threads, model {path.name}, medians of {args.repeats}")
    print(f"{'task':34s}" + "".join(f"{n:>12s}" for n in engines) + "   ratios (ours / peer)")
    for task in tasks:
        med = {n: statistics.median(results[(n, task)]) for n in engines if (n, task) in results}
        cells = "".join(f"{med[n]:12.1f}" if n in med else f"{'-':>12s}" for n in engines)
        ratios = ", ".join(f"/{n} {med['ours'] / med[n]:.2f}x" for n in med if n != "ours") if "ours" in med else ""
        print(f"{task:34s}{cells}   {ratios}")
    if "ours" in engines and "decode" in wanted:
        outside, shares = profile_decode_step(engines["ours"]["runner"], prompt)
        print(f"\nprofile of a batch-1 decode step: {outside:.1%} of wall time outside C++ kernels; "
              + ", ".join(f"{n} {v:.1%}" for n, v in sorted(shares.items(), key=lambda kv: -kv[1])))
    return 0
