"""The library API: load traces, analyse them, get a Report.

>>> from analyzer import analyze
>>> report = analyze(["sample_traces/synthetic/demo"])          # doctest: +SKIP
>>> report.top_finding.title                                     # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .analyses.timeline import RankTimeline, summarize
from .model import BadInputError, TraceSet
from .report import InputInfo, Report

Progress = Callable[[int, int], None]
PathLike = str | Path


def load(
    paths: Sequence[PathLike] | PathLike, *, progress: Progress | None = None,
    skip_bad_ranks: bool = False,
) -> TraceSet:
    """Read traces (files, directories, .zip, Nsight exports) into a TraceSet.

    A rank that cannot be read raises ``BadInputError`` unless ``skip_bad_ranks``: then it
    is left out with a report warning."""
    from .readers import load_traces

    if isinstance(paths, (str, Path)):
        paths = [paths]
    return load_traces(list(paths), progress=progress, skip_bad=skip_bad_ranks)


def analyze(
    source: Sequence[PathLike] | PathLike | TraceSet,
    *,
    rules: Sequence[PathLike] = (),
    model: str | None = None,
    gpu: str | None = None,
    metrics: Any = None,
    server_args: Mapping[str, Any] | PathLike | None = None,
    progress: Progress | None = None,
    include_edges: bool = False,
    roofline: str = "auto",
    graph_capture: PathLike | None = None,
    skip_bad_ranks: bool = False,
    workers: int | None = 1,
    scheduler: str | None = None,
    cache: bool | PathLike = False,
    on_rank: Progress | None = None,
) -> Report:
    """Analyse traces and return a :class:`Report`.

    ``source``: paths (files, directories, ``.zip``) or an already loaded TraceSet.
    ``rules``: extra classification rule files (later rules override built-in ones).
    ``model`` / ``gpu``: presets or config paths used for KV traffic and roofline figures.
    ``metrics``: a saved Prometheus text from SGLang's ``/metrics`` (path) or a parsed object.
    ``server_args``: SGLang's server_args (dict or JSON path); found beside traces otherwise.
    ``include_edges``: count the capture edges (idle before the first step's work and after
    the last step's, or around lone warm-up/teardown activity) as idle, as 0.1.0 did; by
    default they are reported apart as ``edge_us`` and left out of idle, shares and findings.
    ``roofline``: "auto" reads the recorded shapes (a second, lazy pass over the file) when a
    trace has ``record_shapes``; "on" always tries; "off" never. ``graph_capture``: the
    CUDA-graph capture trace that maps graph-replayed kernels back to their ops.
    ``skip_bad_ranks``: leave out (with a warning) the ranks that cannot be read, instead
    of raising ``BadInputError``.
    ``workers`` / ``scheduler``: read and analyse the ranks of ``paths`` in parallel on Dask,
    ``workers`` local processes (None: one per core) or the cluster at ``scheduler``
    (``tcp://host:port``; its workers must see the paths); 1: one after another in this
    process (``analyzer/parallel.py``). The report is the same either way.
    ``cache``: keep read Kineto tables as Parquet for the next run (True: the default cache
    dir, or a directory; ``analyzer/readers/cache.py``).
    ``on_rank(done, total)``: called as ranks finish.

    A TraceSet passed in is changed in place: its event tables are classified, and the
    python stack frames that no analysis reads (``analyses/prune.py``) are dropped from them.
    """
    from .classify import load_rules
    from .rankwork import analyze_rank

    given_args = _server_args(server_args) if server_args is not None else None
    parsed_metrics = _metrics(metrics)  # bad side inputs fail before the long work
    ruleset = load_rules([str(r) for r in rules])
    if isinstance(source, TraceSet):
        if not source.traces:
            raise BadInputError("no trace found in the inputs")
        results = [analyze_rank(t, ruleset, include_edges=include_edges) for t in source.traces]
        found_args, notes, warnings = source.server_args, list(source.notes), list(source.warnings)
    else:
        paths = [source] if isinstance(source, (str, Path)) else list(source)
        results, found_args, notes, warnings = _rank_results(
            paths, ruleset, include_edges=include_edges, workers=workers, scheduler=scheduler,
            cache=cache, progress=progress, on_rank=on_rank, skip_bad=skip_bad_ranks)
    sargs = given_args if given_args is not None else found_args
    return _cross_rank(results, notes, sargs, model=model, gpu=gpu, metrics=parsed_metrics,
                       include_edges=include_edges, roofline=roofline, graph_capture=graph_capture,
                       warnings=warnings)


@dataclass(frozen=True)
class _UnitTask:
    """One read unit for a worker: read it, then the per-rank half of each of its traces."""

    unit: Any  # readers.discovery.ReadUnit
    ruleset: Any
    include_edges: bool
    cache: Any  # readers.cache.TraceCache | None
    limits: Any  # readers.limits.Limits: the caller's input caps, applied on the worker too


@dataclass(frozen=True)
class _UnitDone:
    results: list[Any]  # rankwork.RankResult, provisional ranks for Kineto
    parts: list[Any]
    notes: list[str]
    warnings: list[str]


def _run_unit(task: _UnitTask, progress: Progress | None = None) -> _UnitDone:
    """The per-rank half of one read unit (runs on a Dask worker, or here)."""
    from .analyses.prune import FramePruner
    from .rankwork import analyze_rank
    from .readers.discovery import read_unit

    from .readers.limits import using

    with using(task.limits):
        # the python frames no analysis reads are dropped while reading: they never fill memory
        read = read_unit(task.unit, progress=progress, cache=task.cache, row_filter=FramePruner)
        results = [analyze_rank(t, task.ruleset, include_edges=task.include_edges, read_state=st)
                   for t, st in zip(read.traces, read.states, strict=True)]
    return _UnitDone(results, read.parts, read.notes, read.warnings)


def _rank_results(paths: list[PathLike], ruleset: Any, *, include_edges: bool, workers: int | None,
                  scheduler: str | None, cache: bool | PathLike, progress: Progress | None,
                  on_rank: Progress | None, skip_bad: bool = False
                  ) -> tuple[list[Any], Mapping[str, Any] | None, list[str], list[str]]:
    """Plan the reads, run the per-rank half of every unit (``parallel.map_units``), and give
    the results their ranks, in the order ``load`` gives the traces."""
    from .parallel import in_process, map_units
    from .readers.discovery import UnitRead, plan_load, rank_units
    from .readers.jobs import check_one_job
    from .readers.limits import active

    with ExitStack() as stack:  # extracted .zip archives live until the workers are done
        plan = plan_load(paths, stack, skip_bad=skip_bad)
        tc = _trace_cache(cache)
        tasks = [_UnitTask(u, ruleset, include_edges, tc, active()) for u in plan.units]
        total = sum(u.size_bytes for u in plan.units)
        done_bytes = [0]

        def on_done(done: int, n: int, task: _UnitTask) -> None:
            done_bytes[0] += task.unit.size_bytes
            if progress is not None:
                progress(min(done_bytes[0], total), total)
            if on_rank is not None:
                on_rank(done, n)

        if in_process(len(tasks), workers, scheduler):
            meter = _Offset(progress, total)
            fn: Callable[[_UnitTask], _UnitDone] = lambda t: _run_unit(t, meter.at(t.unit.size_bytes))
        else:
            fn = _run_unit
            _import_rank_modules()  # local workers are forked: they start with these loaded
        outs = map_units(fn, tasks, workers=workers, scheduler=scheduler, on_done=on_done)
    notes = list(plan.notes) + [n for o in outs for n in o.notes]
    warnings = list(plan.warnings) + [w for o in outs for w in o.warnings]
    reads = [UnitRead([r.trace for r in o.results], o.parts, o.notes) for o in outs]
    results = [outs[i].results[j].with_rank(info) if info is not None else outs[i].results[j]
               for i, j, info in rank_units(reads, notes, paths)]
    check_one_job([r.header() for r in results])  # two jobs are not ranks of one
    return results, plan.server_args, notes, warnings


def _import_rank_modules() -> None:
    """Import what the per-rank half runs (the cross-rank half needs most of it anyway)."""
    from .analyses import context, gaps, phases, prune, serving, timeline  # noqa: F401
    from .readers import kineto_fast  # noqa: F401


class _Offset:
    """Byte progress of units read one after another: each unit's bytes after the last's."""

    def __init__(self, progress: Progress | None, total: int) -> None:
        self.progress, self.total, self.base = progress, total, 0

    def at(self, size: int) -> Progress | None:
        if self.progress is None:
            return None
        base = self.base
        self.base += size
        return lambda done, _n: self.progress(min(base + done, self.total), self.total)  # type: ignore[misc]


def _trace_cache(cache: bool | PathLike) -> Any:
    from .readers.cache import TraceCache

    if cache is False:
        return None
    if cache is True:
        return TraceCache.default()
    return TraceCache(Path(cache))


def _cross_rank(results: Sequence[Any], notes: list[str], sargs: Mapping[str, Any] | None, *,
                model: str | None, gpu: str | None, metrics: Any, include_edges: bool,
                roofline: str = "auto", graph_capture: PathLike | None = None,
                warnings: Sequence[str] = ()) -> Report:
    """The cross-rank half: timelines, the serving diagnosis over all ranks, the Report."""
    from .analyses.kernel_table import kernel_table
    from .analyses.roofline_inputs import roofline_inputs
    from .analyses.serving import analyze_serving

    traces = [r.trace for r in results]
    timelines: list[RankTimeline] = []
    by_rank: dict[int, RankTimeline] = {}
    for r in sorted(results, key=lambda r: r.trace.rank.rank):
        for tl in r.timelines:
            timelines.append(tl)
            by_rank.setdefault(tl.rank, tl)

    warnings = [*warnings, *(w for t in traces for w in t.warnings)]
    if any(tl.activity_source == "cpu" for tl in timelines):
        warnings.append(
            "some traces have no GPU activity: their figures come from top-level CPU operators"
        )

    shapes, capture = roofline_inputs(traces, roofline, graph_capture)
    result = analyze_serving(
        traces, by_rank, server_args=sargs, model=model, gpu=gpu, metrics=metrics,
        attributions=[r.attribution for r in results], clues=[r.clues for r in results],
        include_edges=include_edges, op_shapes=shapes, graph_capture=capture,
    )
    inputs = [i for t in sorted(traces, key=lambda t: t.rank.rank) for i in InputInfo.from_trace(t)]
    return Report(
        inputs=inputs,
        ranks=timelines,
        summary=summarize(timelines),
        findings=list(result.findings),
        serving=dict(result.sections),
        calibration=dict(result.calibration),
        warnings=warnings,
        notes=notes,
        abstained=list(result.abstained),
        server_args=sargs,
        metrics=_metrics_dict(metrics),
        context=result.context.to_dict() if result.context is not None else {},
        kernels=kernel_table(traces),
    )


def export_perfetto(
    source: Sequence[PathLike] | PathLike | TraceSet,
    *,
    ranks: Sequence[int] | None = None,
    rules: Sequence[PathLike] = (),
    model: str | None = None,
    gpu: str | None = None,
    server_args: Mapping[str, Any] | PathLike | None = None,
    progress: Progress | None = None,
) -> tuple[dict[str, Any], Report]:
    """A Chrome/Perfetto JSON trace (``analyzer.render.perfetto``) of ``ranks`` (default: the
    report's representative rank, the basis of its findings) and the Report it annotates.

    >>> doc, report = export_perfetto(["sample_traces/synthetic/demo"])   # doctest: +SKIP
    """
    from .analyses.comm_roles import cross_rank
    from .analyses.phases import attribute_steps
    from .analyses.spans import rank_spans
    from .render.perfetto import perfetto_trace

    traceset = source if isinstance(source, TraceSet) else load(source, progress=progress)
    report = analyze(traceset, rules=rules, model=model, gpu=gpu, server_args=server_args)
    doc = report.to_dict()
    by_rank = {t.rank.rank: t for t in traceset.traces}
    rep = doc["serving"].get("representative_rank")
    wanted = [rep if rep is not None else min(by_rank)] if ranks is None else list(ranks)
    unknown = [r for r in wanted if r not in by_rank]
    if unknown:
        raise BadInputError(f"no rank {', '.join(map(str, unknown))} in the inputs; ranks: "
                            + ", ".join(map(str, sorted(by_rank))))
    traces = [by_rank[r] for r in sorted(set(wanted))]
    attrs = {t.rank.rank: attribute_steps(t) for t in traceset.traces}  # all: cross-rank waits
    sizes = doc["serving"]["communication"]["sizes"]
    workload = str((doc.get("context") or {}).get("workload") or "serving")
    waits = pipe = None
    if len(traceset.traces) > 1:  # the same clocks and bubble verdict as the report
        from .analyses.bubbles import pipeline_context
        from .analyses.clock import align_clocks

        ordered = sorted(traceset.traces, key=lambda t: t.rank.rank)
        oattrs = [attrs[t.rank.rank] for t in ordered]
        clock = align_clocks(ordered, [a.act for a in oattrs])
        waits = cross_rank(ordered, oattrs, clock=clock).get("_wait_intervals")
        pipe = pipeline_context(ordered, oattrs, sizes, clock)
    spans = [rank_spans(t, attrs[t.rank.rank], sizes, workload=workload,
                        findings=doc["findings"] if t.rank.rank == rep else (), waits=waits,
                        pipeline=pipe.judge(t.rank.rank) if pipe is not None else None)
             for t in traces]
    return perfetto_trace(traces, spans, doc), report


def _server_args(value: Mapping[str, Any] | PathLike) -> Mapping[str, Any]:
    if isinstance(value, Mapping):
        return value
    if not Path(value).is_file():  # also a FIFO or device: never opened (it could block)
        raise BadInputError(f"cannot read server args {value}: not a regular file")
    try:
        data = json.loads(Path(value).read_text())
    except RecursionError:
        raise BadInputError(f"cannot read server args {value}: nested too deeply") from None
    except (OSError, ValueError) as exc:
        raise BadInputError(f"cannot read server args {value}: {exc}") from None
    if not isinstance(data, dict):
        raise BadInputError(f"server args {value} is not a JSON object")
    return data


def _metrics(value: Any) -> Any:
    if value is None or not isinstance(value, (str, Path)):
        return value
    from .collect.metrics import load_metrics

    return load_metrics(value)


def _metrics_dict(metrics: Any) -> dict[str, Any] | None:
    if metrics is None:
        return None
    if hasattr(metrics, "to_dict"):
        return metrics.to_dict()
    if isinstance(metrics, Mapping):
        return dict(metrics)
    return None
