"""`python -m bench serve [--clients 64] [--disconnect 0.25] [--max-tokens 32] [--repeats 3]`

`oci-engine serve` under load: N streaming chat clients at once over HTTP, a share of them hanging
up after a few tokens. Reported: errors (non-200, malformed or missing [DONE]; must be 0), the KV
pool after the burst (must be back to all free, no request running), and time to first token as
the client sees it over HTTP against the engine's own measure of the same requests (the overhead
is the HTTP layer: routing, chat template, tokenizing, SSE framing), both for requests sent one at
a time and within the burst (where it includes waiting for the event loop). Medians over repeats.
The server runs in this process (uvicorn in a thread) on a free port, the clients in another.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import platform
import socket
import statistics
import threading
import time


def _serve(model: str, max_model_len: int):
    import uvicorn

    from oci_engine.commands import serve
    from oci_engine.server.app import create_app

    p = argparse.ArgumentParser()
    serve.add_arguments(p)
    state = serve.build_state(p.parse_args(["--model", model, "--max-model-len", str(max_model_len)]))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(state), host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return server, state, f"http://127.0.0.1:{port}"


def _engine_ttfts(state) -> list:
    """Engine-side TTFT of each finished request, collected by wrapping generate (bench only)."""
    engine, seen = state.engine, []
    original = engine.generate

    async def generate(*a, **k):
        async for out in original(*a, **k):
            if out.finished and out.metrics is not None and out.metrics.time_to_first_token is not None:
                seen.append((out.request_id, out.metrics.time_to_first_token))
            yield out

    engine.generate = generate
    return seen


async def _client(http, i: int, max_tokens: int, hang_up_after: int | None) -> dict:
    body = {"messages": [{"role": "user", "content": f"Task {i}: write a Python function that adds two numbers."}],
            "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True, "stream": True}
    t0 = time.perf_counter()
    ttft, chunks, done, error = None, 0, False, None
    try:
        async with http.stream("POST", "/v1/chat/completions", json=body) as r:
            if r.status_code != 200:
                return {"error": f"HTTP {r.status_code}"}
            async for line in r.aiter_lines():
                if not line.startswith("data: "):
                    continue
                if line == "data: [DONE]":
                    done = True
                    break
                msg = json.loads(line[6:])
                if "error" in msg:
                    error = msg["error"]["message"]
                if msg["choices"] and msg["choices"][0]["delta"].get("content"):
                    chunks += 1
                    if ttft is None:
                        ttft = time.perf_counter() - t0
                if hang_up_after is not None and chunks >= hang_up_after:
                    return {"ttft": ttft, "hung_up": True}
    except Exception as e:  # noqa: BLE001 - every failure is counted
        error = f"{type(e).__name__}: {e}"
    if error is None and not done:
        error = "stream ended without [DONE]"
    return {"ttft": ttft, "error": error, "hung_up": False}


async def _burst(url: str, clients: int, disconnect: float, max_tokens: int) -> list[dict]:
    import httpx

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as http:
        every = max(1, round(1 / disconnect)) if disconnect > 0 else 0
        return await asyncio.gather(*[
            _client(http, i, max_tokens, 3 if every and i % every == 0 else None) for i in range(clients)])


def _run_burst(url, clients, disconnect, max_tokens):
    return asyncio.run(_burst(url, clients, disconnect, max_tokens))


async def _sequential(url: str, n: int, max_tokens: int) -> list[dict]:
    import httpx

    async with httpx.AsyncClient(base_url=url, timeout=300) as http:
        return [await _client(http, 1000 + i, max_tokens, None) for i in range(n)]


def _run_sequential(url, n, max_tokens):
    return asyncio.run(_sequential(url, n, max_tokens))


def _idle_stats(state, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while True:
        st = state.engine.stats()
        if (st.num_running == 0 and st.num_blocks_used == 0) or time.monotonic() > deadline:
            return st
        time.sleep(0.05)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench serve", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--disconnect", type=float, default=0.25, help="share of clients that hang up early")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-model-len", type=int, default=2048)
    args = ap.parse_args(argv)

    import multiprocessing

    server, state, url = _serve(args.model, args.max_model_len)
    engine_ttfts = _engine_ttfts(state)
    # clients run in another process, so they do not share the server's interpreter lock
    pool = multiprocessing.get_context("spawn").Pool(1)
    rows, alone = [], []
    try:
        for rep in range(args.repeats):
            engine_ttfts.clear()
            seq = pool.apply(_run_sequential, (url, 10, 4))
            eng = [t for _, t in engine_ttfts]
            alone += [1e3 * (r["ttft"] - e) for r, e in zip(seq, eng)]
            engine_ttfts.clear()
            t0 = time.perf_counter()
            results = pool.apply(_run_burst, (url, args.clients, args.disconnect, args.max_tokens))
            wall = time.perf_counter() - t0
            st = _idle_stats(state)
            errors = [r["error"] for r in results if r.get("error")]
            finished = [r["ttft"] for r in results if not r.get("error") and not r.get("hung_up")]
            eng = [t for _, t in engine_ttfts]
            rows.append({"wall_s": wall, "errors": len(errors), "first_errors": errors[:3],
                         "hung_up": sum(1 for r in results if r.get("hung_up")),
                         "kv_blocks_used_after": st.num_blocks_used, "kv_blocks_free_after": st.num_blocks_free,
                         "kv_blocks_total": st.num_blocks, "running_after": st.num_running,
                         "http_ttft_median_ms": 1e3 * statistics.median(finished) if finished else None,
                         "engine_ttft_median_ms": 1e3 * statistics.median(eng) if eng else None})
            print(json.dumps({"repeat": rep, **rows[-1]}))
    finally:
        pool.close()
        server.should_exit = True
    med = lambda k: statistics.median(r[k] for r in rows if r[k] is not None)  # noqa: E731
    summary = {"machine": platform.processor() or platform.machine(), "clients": args.clients,
               "disconnect": args.disconnect, "max_tokens": args.max_tokens, "repeats": args.repeats,
               "errors_total": sum(r["errors"] for r in rows),
               "kv_pool_full_after_every_burst": all(r["kv_blocks_used_after"] == 0 and r["running_after"] == 0
                                                     for r in rows),
               "wall_s_median": med("wall_s"), "http_ttft_median_ms": med("http_ttft_median_ms"),
               "engine_ttft_median_ms": med("engine_ttft_median_ms")}
    summary["burst_http_overhead_ms"] = summary["http_ttft_median_ms"] - summary["engine_ttft_median_ms"]
    # one request at a time: the HTTP layer's own cost, per request (HTTP TTFT minus engine TTFT)
    summary["alone_http_overhead_ms_median"] = statistics.median(alone)
    print(json.dumps(summary, indent=1))
    return 0 if summary["errors_total"] == 0 and summary["kv_pool_full_after_every_burst"] else 1
