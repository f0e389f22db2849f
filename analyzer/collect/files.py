"""Find SGLang's per-rank trace files and wait until every rank's file is complete.

SGLang names a rank's torch.profiler trace (``scheduler_profiler_mixin.py``)::

    [<prefix>-]<profile_id>-TP-<tp>[-DP-<dp>][-PP-<pp>][-EP-<ep>][-<stage>].trace.json.gz

``profile_id`` is ``str(time.time())`` on the server; DP/PP/EP parts appear only when that
size is > 1; ``<stage>`` only with ``profile_by_stage`` (one file per stage and rank).
A file is complete when its size no longer changes between polls and it decompresses to
the end (the server gzips while writing, so a file can exist long before it is whole).
"""

from __future__ import annotations

import re
import sys
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from analyzer.errors import BadInputError

TRACE_GLOB = "*.trace.json.gz"
_RANK_RE = re.compile(
    r"-TP-(?P<tp>\d+)(?:-DP-(?P<dp>\d+))?(?:-PP-(?P<pp>\d+))?(?:-EP-(?P<ep>\d+))?"
    r"(?:-(?P<stage>[A-Za-z0-9_.]+))?\.trace\.json\.gz$"
)


@dataclass(frozen=True)
class RankFile:
    """One per-rank trace file and where it sits in the layout (from its name)."""

    path: Path
    tp: int
    dp: int
    pp: int
    stage: str

    @property
    def rank_key(self) -> tuple[int, int, int]:
        return (self.dp, self.pp, self.tp)


def parse_rank_file(path: Path) -> RankFile | None:
    """The rank fields of an SGLang trace file name, or None for other files."""
    name = path.name
    if name.startswith("merged-") or "-memory" in name:
        return None
    m = _RANK_RE.search(name)
    if not m:
        return None
    stage = m.group("stage") or ""
    return RankFile(
        path, int(m.group("tp")), int(m.group("dp") or 0), int(m.group("pp") or 0), stage
    )


def expected_rank_files(server_info: Mapping[str, Any]) -> int:
    """How many scheduler processes write a trace: TP x PP x DP (DP inside TP with DP attention)."""

    def size(key: str) -> int:
        try:
            return max(1, int(server_info.get(key) or 1))
        except (TypeError, ValueError):
            return 1

    dp = 1 if server_info.get("enable_dp_attention") else size("dp_size")
    return size("tp_size") * size("pp_size") * dp


def snapshot(directory: Path) -> dict[str, tuple[int, float]]:
    """Name -> (size, mtime) of the trace files already in ``directory``."""
    out: dict[str, tuple[int, float]] = {}
    if directory.is_dir():
        for p in directory.glob(TRACE_GLOB):
            try:
                st = p.stat()
            except OSError:
                continue
            out[p.name] = (st.st_size, st.st_mtime)
    return out


def gzip_complete(path: Path, chunk_bytes: int = 1 << 20) -> bool:
    """True when ``path`` is a whole gzip stream (decompresses to its end marker)."""
    try:
        with open(path, "rb") as fh:
            d = zlib.decompressobj(16 + zlib.MAX_WBITS)
            while True:
                chunk = fh.read(chunk_bytes)
                if not chunk:
                    return d.eof
                d.decompress(chunk)  # output dropped at once: memory stays bounded
                if d.eof:
                    return True
    except (OSError, zlib.error):
        return False


@dataclass
class WaitResult:
    files: list[RankFile]
    waited_s: float


class _Progress:
    """``waiting for traces: 3/8 ranks, 120.5 MB, 12 s`` on one stderr line, TTY only."""

    def __init__(self, stream: TextIO | None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        self.drawn = False

    def show(self, ranks: int, expected: int, size_bytes: int, elapsed_s: float) -> None:
        if not self.enabled:
            return
        self.stream.write(
            f"\rwaiting for traces: {ranks}/{expected} ranks, {size_bytes / 1e6:,.1f} MB, {elapsed_s:.0f} s "
        )
        self.stream.flush()
        self.drawn = True

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\r" + " " * 70 + "\r")
            self.stream.flush()


def wait_for_traces(
    directory: Path,
    *,
    before: Mapping[str, tuple[int, float]],
    expected_ranks: int,
    timeout_s: float,
    expected_stages: int = 1,
    poll_s: float = 0.5,
    stable_polls: int = 2,
    not_found_hint: str = "",
    progress_stream: TextIO | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> WaitResult:
    """Wait until ``expected_ranks`` ranks have new, complete trace files in ``directory``.

    New = absent from ``before`` or changed since. Complete = size unchanged for
    ``stable_polls`` polls and a whole gzip stream. ``expected_stages``: files per rank
    (2 for SGLang's ``profile_by_stage``: prefill, then decode). Every rank must
    show the same set of stages. Raises BadInputError on timeout, saying what was seen.
    """
    start = clock()
    sizes: dict[Path, tuple[int, int]] = {}  # path -> (last size, polls unchanged)
    verified: set[Path] = set()
    progress = _Progress(progress_stream)
    try:
        while True:
            now_files: list[RankFile] = []
            total = 0
            for p in sorted(directory.glob(TRACE_GLOB)) if directory.is_dir() else []:
                rf = parse_rank_file(p)
                if rf is None:
                    continue
                try:
                    st = p.stat()
                except OSError:
                    continue
                if p.name in before and before[p.name] == (st.st_size, st.st_mtime):
                    continue
                last, same = sizes.get(p, (-1, 0))
                sizes[p] = (st.st_size, same + 1 if st.st_size == last and st.st_size > 0 else 0)
                if sizes[p][0] != last:
                    verified.discard(p)
                total += st.st_size
                now_files.append(rf)
            ranks = {f.rank_key for f in now_files}
            progress.show(len(ranks), expected_ranks, total, clock() - start)
            if (now_files and len(ranks) >= expected_ranks
                    and _stages_complete(now_files, expected_stages)):
                stable = all(sizes[f.path][1] >= stable_polls for f in now_files)
                if stable:
                    for f in now_files:
                        if f.path not in verified and gzip_complete(f.path):
                            verified.add(f.path)
                    if all(f.path in verified for f in now_files):
                        return WaitResult(
                            sorted(now_files, key=lambda f: (f.rank_key, f.stage)), clock() - start
                        )
            if clock() - start >= timeout_s:
                raise BadInputError(
                    _timeout_message(
                        directory, now_files, ranks, expected_ranks, timeout_s, not_found_hint
                    )
                )
            sleep(poll_s)
    finally:
        progress.close()


def _stages_complete(files: list[RankFile], expected_stages: int) -> bool:
    """Every rank has the same stages, and at least ``expected_stages`` of them."""
    by_rank: dict[tuple[int, int, int], set[str]] = {}
    for f in files:
        by_rank.setdefault(f.rank_key, set()).add(f.stage)
    sets = list(by_rank.values())
    return all(s == sets[0] for s in sets) and len(sets[0]) >= expected_stages


def _timeout_message(
    directory: Path,
    files: list[RankFile],
    ranks: set[tuple[int, int, int]],
    expected: int,
    timeout_s: float,
    hint: str,
) -> str:
    if not files:
        return f"no trace file appeared in {directory} within {timeout_s:g} s{hint}"
    complete = sum(gzip_complete(f.path) for f in files)
    return (
        f"traces incomplete after {timeout_s:g} s in {directory}: {len(ranks)} of {expected} "
        f"ranks wrote a file, {complete} of {len(files)} files are whole; raise --timeout, or "
        "pass --expect-files when some ranks write elsewhere (other nodes)"
    )
