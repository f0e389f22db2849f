"""Running one analysis for the app: progress reporting, options, friendly errors.

    >>> doc = run_analysis(paths, on_progress=lambda frac, text: None)   # doctest: +SKIP
    >>> doc["findings"][0]["title"]                                       # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..model import AnalyzerError, BadInputError

#: ``on_progress(fraction in [0, 1], text)``: what the app draws as a progress bar.
OnProgress = Callable[[float, str], None]
READ_SHARE = 0.85  # of the bar spent reading; the rest is classification and analysis


@dataclass(frozen=True)
class Options:
    """Analysis options the app exposes: the CLI's ``--model``, ``--gpu``, ``--metrics`` (the
    saved ``/metrics`` text) and ``--server-args`` (SGLang's server_args.json, parsed)."""

    model: str | None = None
    gpu: str | None = None
    metrics_text: str | None = None
    server_args_json: str | None = None
    workers: int | None = None  # Dask worker processes for multi-rank inputs; None: one per core

    def key(self) -> tuple[object, ...]:
        import hashlib

        def h(x: str | None) -> str | None:
            return hashlib.sha256(x.encode()).hexdigest() if x else None

        return (self.model or None, self.gpu or None, h(self.metrics_text), h(self.server_args_json))

    def server_args(self) -> dict[str, Any] | None:
        """The parsed server args, or None; a bad file is one clear line."""
        if not self.server_args_json:
            return None
        import json

        try:
            data = json.loads(self.server_args_json)
        except ValueError as exc:
            raise BadInputError(f"server args (Options): not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise BadInputError("server args (Options): not a JSON object")
        return data

    def metrics(self) -> Any:
        """The parsed server metrics, or None."""
        if not self.metrics_text:
            return None
        from ..collect.metrics import parse_prometheus_text

        metrics = parse_prometheus_text(self.metrics_text)
        if not metrics.families:
            raise BadInputError("server metrics (Options): no Prometheus samples in the file")
        return metrics


class ProgressRelay:
    """Turns the readers' ``progress(done_bytes, total_bytes)`` into throttled bar updates.

    Calls ``on_progress`` at most every ``min_interval_s`` seconds and only when the bar
    moved by at least ``min_step``, so that a long parse sends a few dozen updates, not
    thousands.
    """

    def __init__(self, on_progress: OnProgress | None, *, min_step: float = 0.01,
                 min_interval_s: float = 0.1, clock: Callable[[], float] = time.monotonic) -> None:
        self.on_progress = on_progress
        self.min_step = min_step
        self.min_interval_s = min_interval_s
        self.clock = clock
        self._last_frac = -1.0
        self._last_t = -1e9
        self.calls = 0

    def emit(self, frac: float, text: str, *, force: bool = False) -> None:
        if self.on_progress is None:
            return
        frac = min(1.0, max(0.0, frac))
        now = self.clock()
        if not force and (frac - self._last_frac < self.min_step or now - self._last_t < self.min_interval_s):
            return
        self._last_frac, self._last_t = frac, now
        self.calls += 1
        self.on_progress(frac, text)

    def ranks(self, done: int, total: int) -> None:
        """``analyze(on_rank=...)``: ranks read and analysed so far."""
        if total > 1:
            self.emit(READ_SHARE * done / total, f"Analysed {done} of {total} ranks…", force=done == total)

    def reading(self, done: int, total: int) -> None:
        """The readers' progress callback (bytes read so far, bytes in all)."""
        if total <= 0:
            return
        frac = min(1.0, done / total)
        self.emit(READ_SHARE * frac, f"Reading traces… {frac:.0%} ({done / 1e6:,.0f} of {total / 1e6:,.0f} MB)")


def run_uploads(uploads: Sequence[Any], limits: Any, options: Options = Options(),
                on_progress: OnProgress | None = None) -> dict[str, Any]:
    """Analyse uploaded files (``webapp.uploads.Upload``) in a temporary workspace; the report
    names the files as they were uploaded (no server path) and says it in the app's words."""
    from .uploads import prepared_inputs, scrub

    with prepared_inputs(list(uploads), limits) as paths:
        doc = run_analysis(paths, options, on_progress)
        return scrub(doc, paths.pairs)


def run_analysis(paths: Sequence[Path | str], options: Options = Options(),
                 on_progress: OnProgress | None = None) -> dict[str, Any]:
    """Load and analyse ``paths``; return the report dict (JSON contract v1).

    Raises ``BadInputError`` with one clear line for anything wrong with the input, including
    unreadable files that the readers did not already describe.
    """
    from .. import api

    relay = ProgressRelay(on_progress)
    relay.emit(0.0, "Reading traces…", force=True)
    try:
        # the CLI's path: ranks in parallel on Dask (one process per core; one rank: here)
        report = api.analyze([str(p) for p in paths], model=options.model or None,
                             gpu=options.gpu or None, progress=relay.reading,
                             on_rank=relay.ranks, workers=options.workers,
                             metrics=options.metrics(), server_args=options.server_args())
    except AnalyzerError:
        raise
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise BadInputError(f"cannot read the input: {type(exc).__name__}: {exc}") from None
    relay.emit(1.0, "Done", force=True)
    doc = report.to_dict()
    doc["abstained"] = [app_wording(a) for a in doc.get("abstained") or []]
    return doc


#: the CLI flags "could not tell" lines name, and the app's own option for each
APP_OPTIONS = (("--model", "Options › Model"), ("--gpu", "Options › GPU"),
               ("--metrics", "Options › Server metrics"), ("--server-args", "Options › Server args"))


def app_wording(text: str) -> str:
    """A report line with the CLI's flags replaced by the app's options that do the same."""
    for flag, option in APP_OPTIONS:
        text = text.replace(flag, option)
    return text


def perfetto_export(inputs: Callable[[], AbstractContextManager[Sequence[Path | str]]],
                    options: Options = Options()) -> Callable[[], str]:
    """A callable that renders the Perfetto JSON trace of the inputs when a download asks for
    it: the report dict holds no events, so the files are read again then (``inputs()``
    yields their paths, e.g. ``lambda: prepared_inputs(uploads, limits)``)."""

    def render() -> str:
        import json

        from .. import api

        with inputs() as paths:
            doc, _ = api.export_perfetto([str(p) for p in paths], model=options.model or None,
                                         gpu=options.gpu or None)
        return json.dumps(doc, separators=(",", ":"), allow_nan=False)

    return render


def error_line(exc: BaseException) -> str:
    """One line for the user: the message of a BadInputError, a short note otherwise."""
    if isinstance(exc, BadInputError):
        return str(exc).splitlines()[0] if str(exc) else "bad input"
    text = f"{type(exc).__name__}: {exc}".splitlines()[0]
    return f"Internal error ({text[:300]}). Please report it with the input that caused it."


def preset_names() -> tuple[list[str], list[str]]:
    """Model and GPU preset names (from the capacity planner), or empty lists without it."""
    try:
        from ..capacity import list_presets
    except ImportError:
        return [], []
    p = list_presets()
    return ([m["name"] for m in p.get("models", [])], [g["name"] for g in p.get("gpus", [])])


def capacity_available() -> bool:
    """Whether the capacity planner (``analyzer.capacity``) is installed."""
    import importlib.util

    try:
        return importlib.util.find_spec("analyzer.capacity") is not None
    except ModuleNotFoundError:
        return False
