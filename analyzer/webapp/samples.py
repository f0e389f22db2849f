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

from .uploads import TRACE_SUFFIXES

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
        tag = " (synthetic)" if self.synthetic else ""
        return f"{self.name}{tag}"

    def key(self) -> str:
        """Cache key: the sample's file names, sizes and modification times."""
        h = hashlib.sha256(b"trace-analyzer-sample-v1")
        for f in self.files:
            st = f.stat()
            h.update(f"{f.name}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
        return h.hexdigest()


def _trace_files(folder: Path) -> tuple[Path, ...]:
    return tuple(sorted(p for p in folder.iterdir()
                        if p.is_file() and p.name.lower().endswith(TRACE_SUFFIXES)
                        and p.name not in ("ground_truth.json", "server_args.json")))


def _describe(folder: Path) -> tuple[str, bool]:
    truth = folder / "ground_truth.json"
    if truth.is_file():
        try:
            data = json.loads(truth.read_text())
            return str(data.get("description") or ""), bool(data.get("synthetic", False))
        except (OSError, ValueError):
            pass
    readme = folder / "README.md"
    if readme.is_file():
        lines = [ln.strip("# ").strip() for ln in readme.read_text().splitlines() if ln.strip()]
        return (lines[0] if lines else ""), "synthetic" in str(folder)
    return "", "synthetic" in folder.parts


def list_samples(root: Path) -> list[Sample]:
    """Every folder under ``root`` that holds trace files; ``demo`` first, then by name."""
    if not root.is_dir():
        return []
    out = []
    for folder in sorted({p.parent for p in root.rglob("*") if p.is_file()}):
        files = _trace_files(folder)
        if not files:
            continue
        desc, synthetic = _describe(folder)
        out.append(Sample(folder.name, folder, desc, files, synthetic))
    return sorted(out, key=lambda s: (s.name != DEFAULT_SAMPLE, s.name))
