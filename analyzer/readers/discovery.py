"""Find the traces among the inputs, read them, and give every trace its rank.

    >>> ts = load_traces(["/tmp/sglang_profile"])            # doctest: +SKIP
    >>> [(t.rank.rank, t.rank.tp_rank, t.rank.rank_source) for t in ts.traces]  # doctest: +SKIP

Inputs: files, directories (walked recursively), ``.zip`` archives (extracted safely to a
temporary directory that is removed afterwards). Formats are recognised by content:
gzip magic or a JSON start -> Kineto, ``SQLite format 3`` or ``.nsys-rep`` -> Nsight.

Rank of a Kineto trace, per profile (one capture):

1. ``distributedInfo.rank`` when every rank of the profile has one and no two agree
   (SGLang writes rank 0 in every TP file of a TP>1 run, so duplicates are common);
2. else SGLang's file name ``<profile_id>-TP-<tp>[-DP-<dp>][-PP-<pp>][-EP-<ep>][-STAGE]``:
   ``rank = pp * tp_size + tp`` with ``tp_size`` = highest TP index + 1 seen in the profile
   (``dp`` is folded in front when (pp, tp) repeats across DP replicas);
3. else the order of the files, with a note.

SGLang's stage-split files (``-EXTEND`` / ``-DECODE`` of one rank) become one Trace.
Files that are not traces are skipped with a note in ``TraceSet.notes``; a file named
explicitly that cannot be read raises ``BadInputError``, and so do traces that cannot be
ranks of one job (``analyzer.readers.jobs``: different GPUs, world sizes, default process
groups, or captures days apart).
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pandas.api.types import union_categoricals

from analyzer.model import BadInputError, NotATraceError, RankInfo, SourceFile, Trace, TraceSet
from analyzer.readers.archive import ZIP_MAGIC, extracted_zip
from analyzer.readers.jobs import check_one_job
from analyzer.readers.jsonstream import GZIP_MAGIC
from analyzer.readers.kineto import read_kineto
from analyzer.readers.naming import SglangName, parse_sglang_name

__all__ = ["LoadPlan", "Progress", "ReadUnit", "UnitRead", "concat_event_tables", "load_traces",
           "plan_load", "rank_units", "read_unit", "sniff"]

Progress = Callable[[int, int], None]
SQLITE_MAGIC = b"SQLite format 3\x00"
SERVER_ARGS = "server_args.json"
#: written by ``collect`` into a capture folder until the capture finished
INCOMPLETE_MARKER = "CAPTURE_INCOMPLETE"
MAX_NOTES_PER_KIND = 20


# --------------------------------------------------------------------------------------
# sniffing and collecting candidate files
# --------------------------------------------------------------------------------------


def sniff(path: Path) -> str | None:
    """``"kineto"``, ``"nsys"``, ``"zip"`` or None (not a trace) from the first bytes."""
    if path.name.endswith(".nsys-rep"):
        return "nsys"
    try:
        with open(path, "rb") as fh:
            head = fh.read(1 << 16)
    except OSError:
        return None
    if head.startswith(SQLITE_MAGIC):
        return "nsys"
    if head.startswith(ZIP_MAGIC):
        return "zip"
    if head[:2] == GZIP_MAGIC:
        try:
            head = zlib.decompressobj(wbits=31).decompress(head, 4096)
        except zlib.error:
            return None
    body = head.lstrip(b"\xef\xbb\xbf").lstrip(b" \t\r\n")
    if body[:1] in (b"{", b"["):
        return "kineto"
    return None


@dataclass
class _Candidate:
    path: Path  # on disk
    display: str  # as shown to the user (zip members: "archive.zip/member")
    fmt: str  # "kineto" | "nsys"
    explicit: bool  # named by the user: errors raise instead of being noted


@dataclass
class _Inputs:
    candidates: list[_Candidate] = field(default_factory=list)
    server_args: dict[str, Any] | None = None
    server_args_from: str | None = None
    notes: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def check_capture(self, folder: Path, display: str) -> None:
        """Warn about a capture folder that ``collect`` marked incomplete."""
        marker = folder / INCOMPLETE_MARKER
        if marker.is_file():
            try:
                why = marker.read_text(encoding="utf-8", errors="replace")[:300].strip()
            except OSError:
                why = ""
            self.warnings.append(
                f"the capture in {display} is marked incomplete by collect"
                + (f" ({' '.join(why.split())})" if why else "")
                + ": some ranks or steps may be missing or truncated"
            )

    def add_server_args(self, path: Path, display: str) -> None:
        try:
            if path.stat().st_size > 64 << 20:
                raise ValueError("over 64 MB")
            doc = json.loads(path.read_bytes())
        except RecursionError:
            self.notes.append(f"ignored {display}: nested too deeply")
            return
        except (OSError, ValueError) as exc:
            self.notes.append(f"ignored {display}: not valid JSON ({exc})")
            return
        if not isinstance(doc, dict):
            self.notes.append(f"ignored {display}: not a JSON object")
            return
        if self.server_args is None:
            self.server_args, self.server_args_from = doc, display
        elif doc != self.server_args:
            self.notes.append(f"ignored {display}: using {self.server_args_from}")


def _collect(paths: Sequence[str | Path], stack: ExitStack) -> _Inputs:
    inp = _Inputs()
    seen: set[Path] = set()
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise BadInputError(f"{p}: no such file or directory")
        if not p.is_dir() and not p.is_file():  # stat only: a FIFO is never opened
            raise BadInputError(
                f"{p}: not a regular file or directory (a FIFO, socket or device); "
                "save the trace to a file first"
            )
        if p.is_dir():
            _walk(p, str(p), inp, seen)
            continue
        if p.name == SERVER_ARGS:
            inp.add_server_args(p, str(p))
            continue
        kind = sniff(p)
        if kind == "zip":
            root = stack.enter_context(extracted_zip(p))
            _walk(root, str(p), inp, seen)
            continue
        if kind is None:
            raise BadInputError(
                f"{p.name}: not a trace file (expected Kineto .json/.json.gz, Nsight "
                ".sqlite/.nsys-rep, a directory or a .zip)"
            )
        if p.resolve() not in seen:
            seen.add(p.resolve())
            inp.candidates.append(_Candidate(p, str(p), kind, explicit=True))
        beside = p.parent / SERVER_ARGS
        if beside.is_file():
            inp.add_server_args(beside, str(beside))
    return inp


def _walk(root: Path, display_root: str, inp: _Inputs, seen: set[Path]) -> None:
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if INCOMPLETE_MARKER in filenames:
            rel = Path(dirpath).relative_to(root)
            inp.check_capture(Path(dirpath), str(Path(display_root) / rel))
            filenames = [f for f in filenames if f != INCOMPLETE_MARKER]
        for fname in sorted(filenames):
            if fname.startswith("."):
                continue
            p = Path(dirpath) / fname
            display = str(Path(display_root) / p.relative_to(root))
            if p.is_symlink() or not p.is_file():
                inp.skipped.append(f"{display} (not a regular file)")
                continue
            if fname == SERVER_ARGS:
                inp.add_server_args(p, display)
                continue
            kind = sniff(p)
            if kind == "zip":
                inp.skipped.append(f"{display} (archive inside a directory; pass it directly)")
            elif kind is None:
                inp.skipped.append(f"{display} (not a trace)")
            elif p.resolve() not in seen:
                seen.add(p.resolve())
                inp.candidates.append(_Candidate(p, display, kind, explicit=False))


# --------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------


class _Meter:
    """Turns per-file byte counts into ``progress(done_bytes, total_bytes)`` calls."""

    def __init__(self, progress: Progress | None, total: int) -> None:
        self.progress, self.total, self.done = progress, total, 0

    def add(self, n: int) -> None:
        self.done += n
        if self.progress is not None:
            self.progress(min(self.done, self.total), self.total)


def _nsys_readers() -> tuple[Callable[[Path], list[Trace]], Callable[[list[Path]], list[Trace]]]:
    try:
        from analyzer.readers import nsys
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("analyzer.readers.nsys"):
            raise BadInputError("Nsight input is not supported yet") from None
        raise
    many = getattr(nsys, "read_nsys_many", None)
    return nsys.read_nsys, (many or (lambda ps: [t for p in ps for t in nsys.read_nsys(p)]))


@dataclass
class _Bad:
    """What to do with a rank that cannot be read: fail (default) or leave it out."""

    skip: bool
    notes: list[str]
    warnings: list[str] = field(default_factory=list)

    def handle(self, cand: _Candidate, exc: BadInputError, many: bool) -> None:
        msg = _strip_name(str(exc), cand.path.name)
        if isinstance(exc, NotATraceError) and not cand.explicit:
            self.notes.append(f"skipped {cand.display}: {msg}")  # not a trace: not a rank
            return
        if not (self.skip and many):
            if cand.explicit and not many:
                raise exc
            raise BadInputError(
                f"{cand.display}: {msg} (one rank cannot be read; pass --skip-bad-ranks "
                "to analyse the others)"
            ) from None
        self.notes.append(f"skipped {cand.display}: {msg}")
        self.warnings.append(f"rank file {cand.display} could not be read and is left out "
                             f"of this report: {msg}")


def _read_nsys_files(cands: list[_Candidate], meter: _Meter, bad: _Bad, many: bool) -> list[Trace]:
    if not cands:
        return []
    read_one, read_many = _nsys_readers()
    if len(cands) > 1:
        try:
            traces = read_many([c.path for c in cands])
            meter.add(sum(_size(c.path) for c in cands))
            return traces
        except BadInputError:
            pass  # read them one by one to find (and name) the bad one
    out: list[Trace] = []
    for c in cands:
        try:
            out.extend(read_one(c.path))
        except BadInputError as exc:
            bad.handle(c, exc, many)
        meter.add(_size(c.path))
    return out


def _size(p: Path) -> int:
    try:
        return p.stat().st_size
    except OSError:
        return 0


@dataclass
class _Loaded:
    trace: Trace
    cand: _Candidate
    name: SglangName | None
    state: dict[str, Any] | None = None  # the row filter's state after the read, if any


def _read_kineto_files(cands: list[_Candidate], meter: _Meter, bad: _Bad, many: bool,
                       cache: Any = None, row_filter: Callable[[], Any] | None = None) -> list[_Loaded]:
    out: list[_Loaded] = []
    for c in cands:
        size = _size(c.path)
        before = meter.done
        filt = row_filter() if row_filter is not None else None
        try:
            if cache is not None:  # readers.cache.TraceCache
                trace = cache.read_kineto(c.path, progress=meter.add, row_filter=filt)
            else:
                trace = read_kineto(c.path, progress=meter.add, row_filter=filt)
        except BadInputError as exc:
            bad.handle(c, exc, many)
            meter.add(max(0, size - (meter.done - before)))
            continue
        meter.add(max(0, size - (meter.done - before)))
        out.append(_Loaded(trace, c, parse_sglang_name(c.path.name),
                           filt.state() if filt is not None else None))
    return out


def _strip_name(msg: str, name: str) -> str:
    return msg[len(name) + 2 :] if msg.startswith(name + ": ") else msg


# --------------------------------------------------------------------------------------
# ranks
# --------------------------------------------------------------------------------------


@dataclass
class _Unit:
    """One rank: one file, or the stage-split files of one rank."""

    parts: list[_Loaded]

    @property
    def name(self) -> SglangName | None:
        return self.parts[0].name

    @property
    def dist_rank(self) -> int | None:
        info = self.parts[0].trace.distributed_info
        r = info.get("rank") if info else None
        return r if isinstance(r, int) and not isinstance(r, bool) and r >= 0 else None

    @property
    def world_size(self) -> int | None:
        return self.parts[0].trace.rank.world_size


def _units(loaded: list[_Loaded]) -> list[_Unit]:
    by_key: dict[Any, _Unit] = {}
    for i, item in enumerate(loaded):
        key: Any = item.name.rank_key if item.name else ("file", i)
        if key in by_key:
            by_key[key].parts.append(item)
        else:
            by_key[key] = _Unit([item])
    return list(by_key.values())


def _filename_ranks(units: list[_Unit]) -> list[int] | None:
    names = [u.name for u in units]
    if any(n is None for n in names):
        return None
    tp_size = max(n.tp for n in names if n) + 1
    pp_size = max((n.pp or 0) for n in names if n) + 1
    ranks = [(n.pp or 0) * tp_size + n.tp for n in names if n]
    if len(set(ranks)) < len(ranks):  # DP replicas with their own TP groups
        ranks = [((n.dp or 0) * pp_size + (n.pp or 0)) * tp_size + n.tp for n in names if n]
    return ranks if len(set(ranks)) == len(ranks) else None


def _assign(units: list[_Unit], profile: str | None, notes: list[str]) -> list[Trace]:
    return [_merge(u, info) for u, info in zip(units, _rank_infos(units, profile, notes), strict=True)]


def _rank_infos(units: list[_Unit], profile: str | None, notes: list[str]) -> list[RankInfo]:
    """The rank of every unit of one profile (reads only the units' first traces' headers)."""
    dist = [u.dist_rank for u in units]
    if all(r is not None for r in dist) and len(set(dist)) == len(dist):
        ranks, source = [int(r) for r in dist if r is not None], "distributedInfo"
    elif (by_name := _filename_ranks(units)) is not None:
        ranks, source = by_name, "filename"
    else:
        ranks, source = list(range(len(units))), "order"
        if len(units) > 1:
            where = f"profile {profile}" if profile else "inputs"
            notes.append(
                f"{where}: ranks of {len(units)} traces guessed from file order (no distinct "
                "distributedInfo.rank and no SGLang -TP-<n> file names)"
            )
    out = []
    for unit, rank in zip(units, ranks, strict=True):
        n = unit.name
        world = unit.world_size if source == "distributedInfo" else None
        info = RankInfo(
            rank=rank,
            rank_source=source,
            tp_rank=n.tp if n else None,
            pp_rank=n.pp if n else None,
            dp_rank=n.dp if n else None,
            ep_rank=n.ep if n else None,
            world_size=world or unit.world_size or (len(units) if source == "filename" else None),
            profile_id=profile,
        )
        out.append(info)
    return out


def _merge(unit: _Unit, info: RankInfo) -> Trace:
    first = unit.parts[0].trace
    sources = tuple(
        SourceFile(path=p.cand.display, format="kineto", stage=p.name.stage if p.name else None)
        for p in unit.parts
    )
    if len(unit.parts) == 1:
        return replace(first, rank=info, sources=sources)
    devices = {d.index: d for p in unit.parts for d in p.trace.devices}
    metadata: dict[str, Any] = {}
    for p in reversed(unit.parts):
        metadata.update(p.trace.metadata)
    return Trace(
        rank=info,
        events=concat_event_tables([p.trace.events for p in unit.parts]),
        sources=sources,
        devices=tuple(devices[k] for k in sorted(devices)),
        distributed_info=first.distributed_info,
        metadata=metadata,
        warnings=tuple(w for p in unit.parts for w in p.trace.warnings),
    )


def concat_event_tables(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate event tables (categories united), sorted by ``ts_ns`` (stable)."""
    if len(frames) == 1:
        return frames[0]
    cols: dict[str, Any] = {}
    for col in frames[0].columns:
        if isinstance(frames[0][col].dtype, pd.CategoricalDtype):
            cols[col] = union_categoricals([f[col] for f in frames], ignore_order=True)
        else:
            cols[col] = np.concatenate([f[col].to_numpy() for f in frames])
    df = pd.DataFrame(cols)
    ts = df["ts_ns"].to_numpy()
    if len(ts) and (np.diff(ts) < 0).any():
        df = df.iloc[np.argsort(ts, kind="stable")].reset_index(drop=True)
    if "kind" in df.columns:
        df["kind"] = df["kind"].cat.set_categories(frames[0]["kind"].cat.categories)
    return df


# --------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------


def _input_notes(inp: Any, paths: Sequence[str | Path]) -> list[str]:
    """The notes of the collected inputs (files that are not traces, shortened), or one
    BadInputError line saying why no file is a trace."""
    notes = list(inp.notes)
    if inp.skipped:
        shown = inp.skipped[:MAX_NOTES_PER_KIND]
        more = len(inp.skipped) - len(shown)
        notes.extend(f"skipped {s}" for s in shown)
        if more:
            notes.append(f"skipped {more} more files that are not traces")
    if not inp.candidates:
        why = f" ({'; '.join(inp.skipped[:3])}{'; ...' if len(inp.skipped) > 3 else ''})" if inp.skipped else ""
        raise BadInputError(f"no trace file found in {_describe(paths)}{why}")
    return notes


def load_traces(
    paths: Sequence[str | Path], *, progress: Progress | None = None, skip_bad: bool = False
) -> TraceSet:
    """Read every trace in ``paths`` (files, directories, ``.zip``) into a ``TraceSet``.

    ``progress(done_bytes, total_bytes)`` is called as on-disk bytes are consumed.
    Raises ``BadInputError`` when no trace can be read, or when one rank (a trace file,
    named or found in a folder) cannot be read, unless ``skip_bad``: then it is left out and
    ``TraceSet.warnings`` says so. Files that are not traces at all (a JSON without
    ``traceEvents`` in a folder) are skipped with a note. A capture that ``collect`` marked
    incomplete gives a warning.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    with ExitStack() as stack:
        inp = _collect(paths, stack)
        notes = _input_notes(inp, paths)
        meter = _Meter(progress, sum(_size(c.path) for c in inp.candidates))
        bad = _Bad(skip_bad, notes, list(inp.warnings))
        many = len(inp.candidates) > 1
        loaded = _read_kineto_files([c for c in inp.candidates if c.fmt == "kineto"], meter, bad, many)
        nsys = _read_nsys_files([c for c in inp.candidates if c.fmt == "nsys"], meter, bad, many)
    if not loaded and not nsys:
        raise BadInputError(f"no readable trace in {_describe(paths)} ({'; '.join(notes[:3])})")
    traces: list[Trace] = []
    by_profile: dict[str | None, list[_Unit]] = {}
    for unit in _units(loaded):
        by_profile.setdefault(unit.name.profile_id if unit.name else None, []).append(unit)
    for profile in sorted(by_profile, key=lambda p: (p is not None, p or "")):
        traces.extend(sorted(_assign(by_profile[profile], profile, notes), key=_order))
    traces.extend(sorted(nsys, key=_order))
    check_one_job(traces)  # different GPUs / world sizes / days apart: two jobs, not ranks
    return TraceSet(traces=traces, server_args=inp.server_args, notes=notes, warnings=bad.warnings)


# --------------------------------------------------------------------------------------
# staged loading: plan here, read each rank elsewhere (a Dask worker), rank on the client
# --------------------------------------------------------------------------------------


@dataclass
class ReadUnit:
    """Files read together: the files of one Kineto rank (stage-split parts), or all the
    Nsight exports (read as one job, onto one clock)."""

    fmt: str  # "kineto" | "nsys"
    cands: list[_Candidate]
    skip_bad: bool = False  # leave an unreadable rank out (with a warning) instead of failing
    many: bool = False  # the inputs hold more than one candidate file

    @property
    def size_bytes(self) -> int:
        return sum(_size(c.path) for c in self.cands)


@dataclass
class LoadPlan:
    """What ``load_traces`` would read, before reading it."""

    units: list[ReadUnit]
    server_args: dict[str, Any] | None
    notes: list[str]
    warnings: list[str] = field(default_factory=list)


def plan_load(paths: Sequence[str | Path], stack: ExitStack, *, skip_bad: bool = False) -> LoadPlan:
    """Collect the inputs (``.zip`` archives extracted under ``stack``) and group the Kineto
    files into ranks by file name, as ``load_traces`` does; nothing is read but headers."""
    inp = _collect(paths, stack)
    notes = _input_notes(inp, paths)
    many = len(inp.candidates) > 1
    by_key: dict[Any, ReadUnit] = {}
    for i, c in enumerate(cand for cand in inp.candidates if cand.fmt == "kineto"):
        name = parse_sglang_name(c.path.name)
        key: Any = name.rank_key if name else ("file", i)
        by_key.setdefault(key, ReadUnit("kineto", [], skip_bad, many)).cands.append(c)
    units = list(by_key.values())
    nsys = [c for c in inp.candidates if c.fmt == "nsys"]
    if nsys:
        units.append(ReadUnit("nsys", nsys, skip_bad, many))
    return LoadPlan(units, inp.server_args, notes, list(inp.warnings))


@dataclass
class UnitRead:
    """One ``ReadUnit`` read: its traces (a Kineto rank has one, under a provisional rank
    until ``rank_units``), the parts' headers (no events) and the notes of skipped files."""

    traces: list[Trace]
    parts: list[_Loaded]
    notes: list[str]
    states: list[dict[str, Any] | None] = field(default_factory=list)  # per trace
    warnings: list[str] = field(default_factory=list)  # ranks left out (skip_bad)


def read_unit(unit: ReadUnit, progress: Progress | None = None, cache: Any = None,
              row_filter: Callable[[], Any] | None = None) -> UnitRead:
    """Read one unit (on a worker): ``progress(done_bytes, total_bytes)`` as it goes;
    ``cache``: a ``readers.cache.TraceCache`` for the Kineto files, or None;
    ``row_filter``: makes one row filter per Kineto file (``read_kineto(row_filter=...)``);
    a rank's state is its files' states combined (``combine_states``)."""
    notes: list[str] = []
    meter = _Meter(progress, unit.size_bytes)
    bad = _Bad(unit.skip_bad, notes)
    if unit.fmt == "nsys":
        traces = sorted(_read_nsys_files(unit.cands, meter, bad, unit.many), key=_order)
        return UnitRead(traces, [], notes, [None] * len(traces), bad.warnings)
    loaded = _read_kineto_files(unit.cands, meter, bad, unit.many, cache, row_filter)
    if not loaded:
        return UnitRead([], [], notes, [], bad.warnings)
    merged = _merge(_Unit(loaded), RankInfo(rank=0))
    # .copy(): a 0-row slice is a view that would keep the whole table alive
    parts = [_Loaded(replace(p.trace, events=p.trace.events.iloc[:0].copy()), p.cand, p.name)
             for p in loaded]
    state = combine_states([p.state for p in loaded]) if row_filter is not None else None
    return UnitRead([merged], parts, notes, [state], bad.warnings)


def combine_states(states: Sequence[dict[str, Any] | None]) -> dict[str, Any]:
    """The row-filter state of a rank read from several files: clue counts and dropped rows
    add up, the earliest timestamp is the earliest of all."""
    clues: dict[str, int] = {}
    firsts = [s["first_ts_ns"] for s in states if s and s["first_ts_ns"] is not None]
    for s in states:
        for k, v in (s or {}).get("clues", {}).items():
            clues[k] = clues.get(k, 0) + v
    return {"clues": clues, "first_ts_ns": min(firsts) if firsts else None,
            "dropped": sum((s or {}).get("dropped", 0) for s in states)}


def rank_units(reads: Sequence[UnitRead], notes: list[str],
               paths: Sequence[str | Path] = ()) -> list[tuple[int, int, RankInfo | None]]:
    """The final order of the traces of ``reads``: ``(read index, trace index, rank)``, with
    the rank of each Kineto rank (None: the trace keeps its own, as Nsight traces do).

    The same ranks and order as ``load_traces``; raises ``BadInputError`` when nothing was
    readable."""
    by_profile: dict[str | None, list[tuple[int, _Unit]]] = {}
    nsys: list[tuple[int, int, RankInfo | None]] = []
    for i, r in enumerate(reads):
        if r.parts:
            unit = _Unit(r.parts)
            by_profile.setdefault(unit.name.profile_id if unit.name else None, []).append((i, unit))
        else:
            nsys.extend((i, j, None) for j in range(len(r.traces)))
    if not by_profile and not nsys:
        raise BadInputError(f"no readable trace in {_describe(paths)} ({'; '.join(notes[:3])})")
    out: list[tuple[int, int, RankInfo | None]] = []
    for profile in sorted(by_profile, key=lambda p: (p is not None, p or "")):
        members = by_profile[profile]
        infos = _rank_infos([u for _, u in members], profile, notes)
        ranked = sorted(zip([i for i, _ in members], infos), key=lambda p: (p[1].profile_id or "", p[1].rank))
        out.extend((i, 0, info) for i, info in ranked)
    return out + nsys


def _order(t: Trace) -> tuple[str, int]:
    return (t.rank.profile_id or "", t.rank.rank)


def _describe(paths: Iterable[str | Path]) -> str:
    shown = [str(p) for p in paths]
    return ", ".join(shown[:3]) + (f" and {len(shown) - 3} more" if len(shown) > 3 else "")
