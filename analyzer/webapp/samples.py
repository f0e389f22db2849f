"""Bundled sample traces (``sample_traces/``) the app offers before anything is uploaded.

A sample is a folder of trace files (``sample_traces/synthetic/<scenario>/``, written by
``sample_traces/generate.py``); its description comes from the ``ground_truth.json`` beside
the traces. The ``demo`` scenario is listed first: it is the app's first impression.

    >>> [s.name for s in list_samples(Path("sample_traces"))]      # doctest: +SKIP
    ['demo', 'batching_gaps', ...]
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

DEFAULT_SAMPLE = "demo"


@dataclass(frozen=True)
class Sample:
    """A bundled sample: a folder of traces, labelled synthetic when it is."""

    name: str
    path: Path
    description: str
    files: tuple[Path, ...]
    synthetic: bool

    @property
    def label(self) -> str:
        return f"{self.name} ({'synthetic' if self.synthetic else 'recorded'})"

    def key(self) -> str:
        """Cache key: the sample's file names, sizes and modification times."""
        h = hashlib.sha256(b"trace-analyzer-sample-v1")
        for f in self.files:
            st = f.stat()
            h.update(f"{f.name}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
        return h.hexdigest()


_NOT_TRACES = ("ground_truth.json", "server_args.json")


def is_trace_file(path: Path) -> bool:
    """Trace files by name: .json.gz, .sqlite, .nsys-rep, .zip, or a ``*.trace.json``."""
    n = path.name.lower()
    if n in _NOT_TRACES:
        return False
    return n.endswith((".json.gz", ".sqlite", ".nsys-rep", ".zip", ".trace.json"))


def _trace_files(folder: Path) -> tuple[Path, ...]:
    return tuple(sorted(p for p in folder.iterdir() if p.is_file() and is_trace_file(p)))


def _readme_row(root: Path, rel: str) -> str:
    """The description cell of ``root/README.md``'s table row about ``rel/``, if any."""
    readme = root / "README.md"
    if not readme.is_file():
        return ""
    for line in readme.read_text(errors="replace").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and cells[0].startswith(f"`{rel}/"):
            return cells[1].replace("`", "")
    return ""


def _describe(root: Path, folder: Path) -> tuple[str, bool]:
    rel = folder.relative_to(root).as_posix()
    truth = folder / "ground_truth.json"
    if truth.is_file():
        try:
            data = json.loads(truth.read_text())
            return str(data.get("description") or ""), bool(data.get("synthetic", False))
        except (OSError, ValueError):
            pass
    return _readme_row(root, rel), "synthetic" in Path(rel).parts


def list_samples(root: Path) -> list[Sample]:
    """Every folder under ``root`` that holds trace files; ``demo`` first, then by name.

    A sample's name is its folder relative to ``root`` (``synthetic/`` left out).
    """
    if not root.is_dir():
        return []
    out = []
    for folder in sorted({p.parent for p in root.rglob("*") if p.is_file() and is_trace_file(p)}):
        files = _trace_files(folder)
        desc, synthetic = _describe(root, folder)
        rel = folder.relative_to(root).as_posix()
        name = rel.removeprefix("synthetic/")
        out.append(Sample(name, folder, desc, files, synthetic))
    return sorted(out, key=lambda s: (s.name != DEFAULT_SAMPLE, not s.synthetic, s.name))
