"""HumanEval / MBPP evaluation, single turn and with execution feedback (`oci-engine eval`).

tasks (data and check programs) -> prompts (chat / OpenCodeInterpreter / base styles) -> the
engine -> sanitize (code from replies) -> judge (harness + instrument, run by execute in the
sandbox) -> records (results file, resume) -> report (pass@k per round, plot). runner drives it.
"""
