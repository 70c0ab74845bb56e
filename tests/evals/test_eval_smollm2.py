"""`oci-engine eval` end to end with the real engine and the default model (SmolLM2-135M):
generation, extraction, sandboxed checks, one round of execution feedback, results and plot."""
import json

import pytest

from oci_engine.cli import main

pytestmark = pytest.mark.slow


def test_humaneval_with_one_feedback_round(smollm2_gguf, tmp_path, capsys, caplog):
    import torch

    out = tmp_path / "smol.jsonl"
    caplog.set_level("INFO", logger="oci_engine")
    threads = torch.get_num_threads()
    try:
        assert main(["eval", "humaneval", "-m", str(smollm2_gguf), "--limit", "1", "--feedback-rounds", "1",
                     "--max-tokens", "32", "--output", str(out), "--workers", "2", "--kv-cache-memory", "0.25",
                     "--threads", "1"]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    # The engine flags reach the engine (a long feedback run needs a bigger KV pool than the default).
    assert "(0.25 GiB)" in caplog.text
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["task_id"] for r in rows] == ["HumanEval/0"]
    for r in rows:
        first = r["rounds"][0]
        assert first["completion"].strip()
        if first["passed"]:
            assert len(r["rounds"]) == 1
        else:  # a failure is explained to the model and it answers again
            assert first["feedback"] and len(r["rounds"]) == 2
        assert r["passed"] == r["rounds"][-1]["passed"] and r["completion"] == r["rounds"][-1]["completion"]
    printed = capsys.readouterr().out
    assert "(chat), 1 round(s) of oracle feedback" in printed
    assert (tmp_path / "smol.png").exists()
