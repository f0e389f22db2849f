"""Turning an ``.nsys-rep`` report into an SQLite export with the ``nsys`` CLI, cached.

The export lands in ``<cache>/<sha256 of the report>.sqlite`` so that a report is exported
once. The cache folder is ``$TRACE_ANALYZER_NSYS_CACHE`` if set, else
``$XDG_CACHE_HOME/trace-analyzer/nsys`` (``~/.cache/trace-analyzer/nsys``).
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
from pathlib import Path

from analyzer.model import BadInputError

REPORT_SUFFIXES = (".nsys-rep", ".qdrep")
EXPORT_TIMEOUT_S = 3600


def is_report(path: Path) -> bool:
    """True for an Nsight Systems report file (``.nsys-rep``, or the older ``.qdrep``)."""
    return path.suffix.lower() in REPORT_SUFFIXES


def export_command(path: Path, out: Path | str | None = None) -> str:
    """The shell command that exports ``path`` to SQLite (shown to users)."""
    target = out if out is not None else path.with_suffix(".sqlite").name
    return f"nsys export --type sqlite -o {shlex.quote(str(target))} {shlex.quote(str(path))}"


def cache_dir() -> Path:
    """Where exported reports are cached (see the module docstring)."""
    env = os.environ.get("TRACE_ANALYZER_NSYS_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "trace-analyzer" / "nsys"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def export_report(path: Path, cache: Path | None = None) -> Path:
    """Export ``path`` (.nsys-rep) to SQLite with ``nsys`` and return the cached file.

    Raises ``BadInputError`` with the exact command to run when ``nsys`` is not on PATH or
    the export fails.
    """
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"{path}: no such file")
    nsys = shutil.which("nsys")
    if nsys is None:
        raise BadInputError(
            f"{path} is an Nsight Systems report and `nsys` is not on PATH; export it to SQLite "
            f"first and analyse the .sqlite file: {export_command(path)}"
        )
    folder = Path(cache) if cache is not None else cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        digest = _sha256(path)
    except OSError as exc:
        raise BadInputError(f"{path}: cannot hash or cache the report ({exc})") from exc
    out = folder / f"{digest}.sqlite"
    if out.is_file() and out.stat().st_size > 0:
        return out
    partial = folder / f"{digest}.partial-{os.getpid()}.sqlite"
    cmd = [nsys, "export", "--type", "sqlite", "--output", str(partial), str(path)]
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=EXPORT_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        partial.unlink(missing_ok=True)
        raise BadInputError(
            f"{path}: `nsys export` did not finish ({exc}); run it yourself: {export_command(path)}"
        ) from exc
    if proc.returncode != 0 or not partial.is_file():
        partial.unlink(missing_ok=True)
        tail = (proc.stderr or proc.stdout or "").strip().splitlines()
        why = tail[-1] if tail else "no output"
        raise BadInputError(
            f"{path}: `nsys export` failed (exit {proc.returncode}: {why}); "
            f"try: {export_command(path)}"
        )
    os.replace(partial, out)
    return out
