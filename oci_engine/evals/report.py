"""The summary a run ends with: pass@k per refinement round as a table, and pass@1 by round as
a PNG beside the results file."""
from __future__ import annotations

from collections import defaultdict

from oci_engine.evals.pass_at_k import mean_pass_at_k
from oci_engine.evals.records import SampleRecord


def pass_by_round(records: list[SampleRecord], ks: tuple[int, ...] = (1,)) -> list[dict]:
    """One row per round: pass@k for each k that the sample count allows, and the task count."""
    by_task: dict[str, list[SampleRecord]] = defaultdict(list)
    for r in records:
        by_task[r.task_id].append(r)
    if not by_task:
        return []
    n_rounds = max(len(r.rounds) for r in records)
    n_min = min(len(v) for v in by_task.values())
    rows = []
    for rnd in range(n_rounds):
        counts = [(len(v), sum(s.passed_at(rnd) for s in v)) for v in by_task.values()]
        row = {"round": rnd, "tasks": len(by_task), "samples": len(records),
               "passed": sum(c for _, c in counts)}
        for k in ks:
            if k <= n_min:
                row[f"pass@{k}"] = mean_pass_at_k(counts, k)
        rows.append(row)
    return rows


def format_table(rows: list[dict], title: str = "") -> str:
    if not rows:
        return "no results"
    keys = [k for k in rows[0] if k.startswith("pass@")]
    header = ["round", *keys, "passed", "samples", "tasks"]
    lines = [title] if title else []
    lines.append("  ".join(f"{h:>8}" for h in header))
    for row in rows:
        cells = [f"{row['round']:>8}"] + [f"{100 * row[k]:>7.2f}%" for k in keys]
        cells += [f"{row['passed']:>8}", f"{row['samples']:>8}", f"{row['tasks']:>8}"]
        lines.append("  ".join(cells))
    return "\n".join(lines)


def plot(rows: list[dict], path: str, title: str) -> str | None:
    """pass@1 by round; returns the path written (None when there is nothing to plot)."""
    if not rows or "pass@1" not in rows[0]:
        return None
    try:
        import matplotlib
    except ImportError:
        print("no plot: matplotlib is not installed (pip install matplotlib)")
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [r["round"] for r in rows]
    ys = [100 * r["pass@1"] for r in rows]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(xs, ys, marker="o")
    for x, y in zip(xs, ys):
        ax.annotate(f"{y:.1f}", (x, y), textcoords="offset points", xytext=(0, 6), ha="center")
    ax.set_xticks(xs)
    ax.set_xlabel("refinement round (0 = single turn)")
    ax.set_ylabel("pass@1 (%)")
    ax.set_ylim(0, 100.0 if max(ys) > 60 else max(10.0, max(ys) * 1.4))
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
