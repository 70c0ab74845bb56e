"""Sandbox latency and throughput against the peers a code interpreter could use instead.

    python -m bench sandbox [--repeats 300] [--fresh-repeats 30] [--no-jupyter] [--json out.json]
                            [--plot out.png]

Ours (every isolation layer on: namespaces, seccomp, rlimits, privilege drop) for a trivial cell,
a numpy cell and a session cell, against a fresh `python -c` per execution, a fresh interpreter
that imports numpy, and a Jupyter kernel (jupyter_client + ipykernel, stateful, isolates nothing).
Reports p50/p99 per case, the ratio peer/ours at p50, and cells/s with two workers; all in one run
on one machine, since absolute times on a shared machine mean little.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time

TRIVIAL = "print(1)"
NUMPY = "import numpy as np\nprint(np.arange(1000).sum())"
SESSION = "x += 1"
THINK_S = 0.02  # between cells in the *_think cases; not counted in their latency


def _pct(samples, q):
    s = sorted(samples)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def _stats(samples):
    return {"p50_ms": _pct(samples, 0.50) * 1e3, "p99_ms": _pct(samples, 0.99) * 1e3, "n": len(samples)}


def _time(fn, n, label, think_s=0.0):
    out = []
    step = max(1, n // 10)
    for i in range(n):
        if think_s:
            time.sleep(think_s)
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
        if (i + 1) % step == 0:
            print(f"\r  {label}: {i + 1}/{n}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return out


def bench_ours(repeats, workers):
    from oci_engine.sandbox import Sandbox
    res = {}
    with Sandbox(workers=workers) as sb:
        res["isolation"] = {k: sb.isolation[k] for k in ("user", "mount", "net", "pid", "ipc", "uid", "seccomp")}
        for _ in range(20):
            sb.run(TRIVIAL)

        def check(r, want):
            if r.error is not None or r.stdout != want:
                raise RuntimeError(f"sandbox gave a wrong result: {r}")

        res["trivial"] = _stats(_time(lambda: check(sb.run(TRIVIAL), "1\n"), repeats, "ours trivial"))
        res["numpy"] = _stats(_time(lambda: check(sb.run(NUMPY), "499500\n"), repeats, "ours numpy"))
        s = sb.session()
        s.run("x = 0")
        res["session"] = _stats(_time(lambda: s.run(SESSION), repeats, "ours session"))
        # With a pause between cells (a model writes the next one): the next fork is ready.
        n = max(20, repeats // 3)
        res["session_think"] = _stats(_time(lambda: s.run(SESSION), n, "ours session, think time",
                                            THINK_S))
        res["trivial_think"] = _stats(_time(lambda: sb.run(TRIVIAL), n, "ours trivial, think time",
                                            THINK_S))
        if s.run("x").stdout != f"{repeats + n}\n":
            raise RuntimeError("session lost state during the benchmark")
        s.close()
        # Throughput: as many callers as workers, back to back.
        n_per = max(50, repeats // 2)
        t = time.perf_counter()
        threads = [threading.Thread(target=lambda: [sb.run(TRIVIAL) for _ in range(n_per)]) for _ in range(workers)]
        [th.start() for th in threads]
        [th.join() for th in threads]
        res["throughput_cells_per_s"] = workers * n_per / (time.perf_counter() - t)
    return res


def bench_fresh(n, code, label):
    def once():
        subprocess.run([sys.executable, "-c", code], check=True, stdout=subprocess.DEVNULL)
    once()
    return _stats(_time(once, n, label))


def bench_jupyter(repeats):
    try:
        from jupyter_client.manager import start_new_kernel
    except ImportError:
        return {"skipped": "jupyter_client is not installed (pip install jupyter_client ipykernel)"}
    try:
        t = time.perf_counter()
        km, kc = start_new_kernel(kernel_name="python3")
        start = time.perf_counter() - t
    except Exception as e:  # no ipykernel, or it failed to start
        return {"skipped": f"could not start a Jupyter kernel: {e}"}
    try:
        def run(code):
            reply = kc.execute_interactive(code, timeout=30, output_hook=lambda msg: None)
            if reply["content"]["status"] != "ok":
                raise RuntimeError(f"jupyter cell failed: {reply['content']}")
        for _ in range(20):
            run(TRIVIAL)
        res = {"start_s": start}
        res["trivial"] = _stats(_time(lambda: run(TRIVIAL), repeats, "jupyter trivial"))
        run("import numpy as np")
        res["numpy"] = _stats(_time(lambda: run(NUMPY), repeats, "jupyter numpy"))
        run("x = 0")
        res["session"] = _stats(_time(lambda: run(SESSION), repeats, "jupyter session"))
        n = max(20, repeats // 3)
        res["session_think"] = _stats(_time(lambda: run(SESSION), n, "jupyter session, think time", THINK_S))
        return res
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def table(r):
    ours = r["ours"]
    rows = [("trivial cell", ours["trivial"], "fresh python -c", r["fresh_python"]),
            ("numpy cell", ours["numpy"], "fresh python -c 'import numpy'", r["fresh_numpy"])]
    jup = r.get("jupyter", {})
    if "trivial" in jup:
        rows += [("trivial cell", ours["trivial"], "jupyter kernel", jup["trivial"]),
                 ("numpy cell", ours["numpy"], "jupyter kernel", jup["numpy"]),
                 ("session cell", ours["session"], "jupyter kernel", jup["session"]),
                 ("session+think", ours["session_think"], "jupyter kernel, same pauses", jup["session_think"])]
    lines = [f"{'case':<14} {'ours p50':>9} {'ours p99':>9}  {'peer':<31} {'peer p50':>9} {'peer p99':>9} {'peer/ours':>9}"]
    for case, o, peer, p in rows:
        lines.append(f"{case:<14} {o['p50_ms']:>7.2f}ms {o['p99_ms']:>7.2f}ms  {peer:<31} "
                     f"{p['p50_ms']:>7.2f}ms {p['p99_ms']:>7.2f}ms {p['p50_ms'] / o['p50_ms']:>8.1f}x")
    lines.append(f"session cell   {ours['session']['p50_ms']:>7.2f}ms {ours['session']['p99_ms']:>7.2f}ms  "
                 "(back to back: each waits for the fork of the previous cell's state)")
    for key, what in (("trivial_think", "trivial cell"), ("session_think", "session cell")):
        o = ours[key]
        lines.append(f"{what:<14} {o['p50_ms']:>7.2f}ms {o['p99_ms']:>7.2f}ms  "
                     f"(with {THINK_S * 1e3:.0f} ms between cells, as when a model writes the next one)")
    lines.append(f"throughput: {ours['throughput_cells_per_s']:.0f} cells/s with {r['workers']} workers")
    if "skipped" in jup:
        lines.append(f"jupyter: {jup['skipped']}")
    elif jup:
        lines.append(f"jupyter kernel start: {jup['start_s']:.2f} s")
    return "\n".join(lines)


def plot(r, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names, vals = [], []
    for name, d in (("ours trivial", r["ours"]["trivial"]), ("ours numpy", r["ours"]["numpy"]),
                    ("ours session", r["ours"]["session"]), ("python -c", r["fresh_python"]),
                    ("python -c numpy", r["fresh_numpy"])):
        names.append(name), vals.append(d["p50_ms"])
    for k in ("trivial", "numpy", "session"):
        if k in r.get("jupyter", {}):
            names.append(f"jupyter {k}"), vals.append(r["jupyter"][k]["p50_ms"])
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.barh(names, vals)
    ax.set_xscale("log")
    ax.set_xlabel("p50 latency per cell (ms, log scale)")
    ax.set_title("oci-engine sandbox vs peers")
    fig.tight_layout()
    fig.savefig(path)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench sandbox", description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=300, help="cells per case for ours and jupyter")
    ap.add_argument("--fresh-repeats", type=int, default=30, help="runs per fresh-interpreter case")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--no-jupyter", action="store_true")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--plot", help="write a bar chart (PNG) here")
    args = ap.parse_args(argv)
    r = {"machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cpus, "
                    f"load {os.getloadavg()[0]:.1f}, python {platform.python_version()}",
         "workers": args.workers}
    print(f"machine: {r['machine']}", file=sys.stderr)
    r["ours"] = bench_ours(args.repeats, args.workers)
    r["fresh_python"] = bench_fresh(args.fresh_repeats, TRIVIAL, "fresh python -c")
    r["fresh_numpy"] = bench_fresh(max(5, args.fresh_repeats // 2),
                                   "import numpy as np; print(np.arange(1000).sum())", "fresh numpy")
    if not args.no_jupyter:
        r["jupyter"] = bench_jupyter(args.repeats)
    print(f"machine: {r['machine']}")
    print(f"isolation: {r['ours']['isolation']}")
    print(table(r))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(r, f, indent=2)
    if args.plot:
        plot(r, args.plot)
    return 0
