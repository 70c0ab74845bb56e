"""`oci-engine eval ... --samples`: results file, summary table, plot, resume, and errors."""
import json

import pytest

from oci_engine.cli import main


@pytest.fixture()
def samples(tmp_path):
    from oci_engine.evals.tasks import load_humaneval

    tasks = load_humaneval()[:4]
    path = tmp_path / "samples.jsonl"
    rows = []
    for i, t in enumerate(tasks):
        rows.append({"task_id": t.task_id, "completion": t.canonical_solution})
        rows.append({"task_id": t.task_id, "completion": "    return None\n" if i % 2 else t.canonical_solution})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_samples_are_judged_written_summarised_and_plotted(samples, tmp_path, capsys):
    out = tmp_path / "results.jsonl"
    assert main(["eval", "humaneval", "--samples", str(samples), "--output", str(out), "--limit", "4",
                 "--workers", "2", "--k", "1,2"]) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 8
    assert set(lines[0]) >= {"task_id", "completion", "passed", "result", "rounds"}
    assert sum(r["passed"] for r in lines) == 6
    assert all(r["result"] == ("passed" if r["passed"] else "failed: ") for r in lines)
    printed = capsys.readouterr().out
    # 6 of 8 samples pass: pass@1 = 75%; pass@2 = 100% (every task has a passing sample).
    assert "75.00%" in printed and "100.00%" in printed
    png = tmp_path / "results.png"
    assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_resume_skips_samples_already_in_the_output(samples, tmp_path, capsys):
    out = tmp_path / "results.jsonl"
    main(["eval", "humaneval", "--samples", str(samples), "--output", str(out), "--limit", "2", "--no-plot"])
    capsys.readouterr()
    # A run killed mid-write leaves a partial last line: it is dropped and that sample redone.
    with open(out, "a") as f:
        f.write('{"task_id": "HumanEval/2", "sam')
    assert main(["eval", "humaneval", "--samples", str(samples), "--output", str(out), "--limit", "4",
                 "--no-plot"]) == 0
    printed = capsys.readouterr()
    assert "resuming" in printed.err
    assert "for 4 new samples" in printed.out
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["task_id"], r["sample"]) for r in rows] == [(f"HumanEval/{i}", s) for i in range(4) for s in (0, 1)]


def test_bad_input_gives_a_message_not_a_traceback(tmp_path, capsys):
    assert main(["eval", "mbpp", "--data", str(tmp_path / "missing.jsonl")]) == 1
    assert "--data" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"task_id": "HumanEval/0"}\n')
    assert main(["eval", "humaneval", "--samples", str(bad)]) == 1
    assert "task_id and completion" in capsys.readouterr().err
    assert main(["eval", "humaneval", "--n", "5"]) == 1
    assert "--temperature" in capsys.readouterr().err
    assert main(["eval", "humaneval", "--mode", "single", "--feedback-rounds", "2"]) == 1
    assert "--mode feedback" in capsys.readouterr().err
    assert main(["eval", "humaneval", "--threads", "0"]) == 1
    assert "--threads 0" in capsys.readouterr().err
