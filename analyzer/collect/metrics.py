"""SGLang ``/metrics`` (Prometheus text exposition format) -> a typed :class:`ServerMetrics`.

>>> m = parse_prometheus_text('sglang:num_queue_reqs{tp_rank="0"} 7\\n')
>>> m.num_queue_reqs
7.0

A small parser of the text format (version 0.0.4, and the OpenMetrics subset SGLang emits):
``# HELP`` / ``# TYPE`` lines, label values with ``\\\\``, ``\\"`` and ``\\n`` escapes,
``NaN`` / ``+Inf`` / ``-Inf`` values and optional timestamps. It needs no dependency.

Aggregation over the label sets SGLang exports (one series per scheduler, labelled with
``tp_rank``, ``pp_rank``, ``dp_rank``...): only the series of TP rank 0 and PP rank 0 are
counted (other TP/PP ranks of the same scheduler group repeat the same numbers); the
remaining series (one per DP rank, or one tokenizer-side series) are summed for counts,
the maximum is taken for ``token_usage`` and the mean for ``cache_hit_rate``. Histograms
are merged bucket by bucket over the same series.

A *window* (:func:`metrics_window`) turns the scrapes taken before and after a capture into
what happened during it: counters and histograms are differences, gauges the mean of the
two scrapes.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analyzer.errors import BadInputError

Labels = tuple[tuple[str, str], ...]

#: Labels that identify a series' place in the parallel layout.
_RANK_LABELS = ("tp_rank", "pp_rank")
#: Labels that do not distinguish series worth keeping apart when aggregating.
_IGNORED_LABELS = frozenset(
    {
        "model_name",
        "engine_type",
        "tp_rank",
        "pp_rank",
        "dp_rank",
        "moe_ep_rank",
        "ep_rank",
        "le",
        "quantile",
    }
)

_NAME_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


# --------------------------------------------------------------------------------------
# Raw parse
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One line of the exposition: ``name{labels} value``."""

    name: str
    labels: Labels
    value: float

    def label(self, key: str, default: str | None = None) -> str | None:
        for k, v in self.labels:
            if k == key:
                return v
        return default


@dataclass(frozen=True)
class MetricFamily:
    """All samples of one metric (a histogram's ``_bucket``/``_sum``/``_count`` included)."""

    name: str
    type: str  # counter | gauge | histogram | summary | untyped | ...
    help: str
    samples: tuple[Sample, ...]


def _parse_labels(text: str, pos: int, lineno: int) -> tuple[Labels, int]:
    """Parse ``{a="x",b="y"}`` starting at ``text[pos] == "{"``; return labels and end index."""
    labels: list[tuple[str, str]] = []
    i = pos + 1
    n = len(text)
    while True:
        while i < n and text[i] in " \t":
            i += 1
        if i < n and text[i] == "}":
            return tuple(labels), i + 1
        m = _LABEL_NAME_RE.match(text, i)
        if not m:
            raise BadInputError(f"metrics line {lineno}: bad label name at column {i + 1}")
        key = m.group(0)
        i = m.end()
        while i < n and text[i] in " \t":
            i += 1
        if i >= n or text[i] != "=":
            raise BadInputError(f"metrics line {lineno}: expected '=' after label {key!r}")
        i += 1
        while i < n and text[i] in " \t":
            i += 1
        if i >= n or text[i] != '"':
            raise BadInputError(f"metrics line {lineno}: label {key!r} value is not quoted")
        i += 1
        out: list[str] = []
        while True:
            if i >= n:
                raise BadInputError(f"metrics line {lineno}: unterminated label value")
            c = text[i]
            if c == "\\" and i + 1 < n:
                nxt = text[i + 1]
                out.append({"n": "\n", "\\": "\\", '"': '"'}.get(nxt, "\\" + nxt))
                i += 2
            elif c == '"':
                i += 1
                break
            else:
                out.append(c)
                i += 1
        labels.append((key, "".join(out)))
        while i < n and text[i] in " \t":
            i += 1
        if i < n and text[i] == ",":
            i += 1
        elif i < n and text[i] == "}":
            continue
        else:
            raise BadInputError(f"metrics line {lineno}: expected ',' or '}}' after a label")


def _parse_value(token: str, lineno: int) -> float:
    try:
        return float(token)  # float() accepts NaN, +Inf, -Inf, 1e-3
    except ValueError:
        raise BadInputError(f"metrics line {lineno}: bad sample value {token!r}") from None


def _family_of(name: str, types: Mapping[str, str]) -> str:
    """The family a sample belongs to (``x_bucket`` -> ``x`` when ``x`` is a histogram)."""
    if name in types:
        return name
    for suffix in ("_bucket", "_sum", "_count", "_total", "_created", "_gsum", "_gcount"):
        if name.endswith(suffix) and name[: -len(suffix)] in types:
            return name[: -len(suffix)]
    return name


def parse_families(text: str) -> list[MetricFamily]:
    """Parse Prometheus text into metric families, in the order they appear."""
    helps: dict[str, str] = {}
    types: dict[str, str] = {}
    order: list[str] = []
    samples: dict[str, list[Sample]] = {}
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            parts = line[1:].strip().split(None, 2)
            if parts and parts[0] == "EOF":
                break
            if len(parts) >= 2 and parts[0] in ("HELP", "TYPE"):
                name = parts[1]
                rest = parts[2] if len(parts) > 2 else ""
                if name not in types and name not in helps:
                    order.append(name)
                if parts[0] == "HELP":
                    helps[name] = rest.replace("\\n", "\n").replace("\\\\", "\\")
                else:
                    types[name] = rest.strip().lower() or "untyped"
            continue
        m = _NAME_RE.match(line)
        if not m:
            raise BadInputError(f"metrics line {lineno}: not a Prometheus sample: {line[:80]!r}")
        name = m.group(0)
        pos = m.end()
        labels: Labels = ()
        if pos < len(line) and line[pos] == "{":
            labels, pos = _parse_labels(line, pos, lineno)
        tokens = line[pos:].split()
        if not tokens:
            raise BadInputError(f"metrics line {lineno}: sample {name} has no value")
        value = _parse_value(tokens[0], lineno)
        fam = _family_of(name, types)
        if fam not in samples:
            samples[fam] = []
            if fam not in types and fam not in helps:
                order.append(fam)
        samples[fam].append(Sample(name, labels, value))
    return [
        MetricFamily(
            name, types.get(name, "untyped"), helps.get(name, ""), tuple(samples.get(name, ()))
        )
        for name in order
        if samples.get(name)
    ]


# --------------------------------------------------------------------------------------
# Typed summary
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HistogramStats:
    """A (merged) Prometheus histogram: cumulative counts per upper bound, sum and count.

    ``quantile`` interpolates linearly inside the bucket, like PromQL's ``histogram_quantile``.
    """

    count: float
    sum: float
    buckets: tuple[tuple[float, float], ...]  # (upper bound ``le``, cumulative count), sorted

    @property
    def mean(self) -> float | None:
        return self.sum / self.count if self.count > 0 else None

    def quantile(self, q: float) -> float | None:
        """The ``q`` quantile (0..1), or None without observations."""
        if not self.buckets or self.count <= 0:
            return None
        total = self.buckets[-1][1] if math.isinf(self.buckets[-1][0]) else self.count
        if total <= 0:
            return None
        rank = q * total
        prev_bound, prev_count = 0.0, 0.0
        for bound, cum in self.buckets:
            if cum >= rank:
                if math.isinf(bound):
                    return prev_bound  # in the +Inf bucket: the highest finite bound
                if cum == prev_count:
                    return bound
                lower = prev_bound if prev_bound < bound else min(0.0, bound)
                return lower + (bound - lower) * (rank - prev_count) / (cum - prev_count)
            prev_bound, prev_count = bound, cum
        return prev_bound

    def minus(self, other: HistogramStats) -> HistogramStats:
        """``self - other`` (a later scrape minus an earlier one); ``self`` on a counter reset."""
        if self.count < other.count:
            return self
        theirs = dict(other.buckets)
        return HistogramStats(
            count=self.count - other.count,
            sum=self.sum - other.sum,
            buckets=tuple((le, cum - theirs.get(le, 0.0)) for le, cum in self.buckets),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "sum": self.sum,
            "mean": self.mean,
            "p50": self.quantile(0.5),
            "p90": self.quantile(0.9),
            "p99": self.quantile(0.99),
        }


def _json_float(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else x


@dataclass(frozen=True)
class ServerMetrics:
    """What SGLang's ``/metrics`` said, typed. ``None`` where the server did not export it.

    Gauges: ``num_running_reqs``, ``num_queue_reqs`` (waiting), ``num_used_tokens``,
    ``max_total_num_tokens`` (KV pool size), ``token_usage`` (KV pool fraction in use),
    ``gen_throughput_tok_s``, ``cache_hit_rate``. Histograms (seconds): ``queue_time_s``,
    ``ttft_s``, ``inter_token_latency_s``, ``e2e_request_latency_s`` and
    ``per_stage_latency_s`` by SGLang's stage label (``prefill_waiting``,
    ``prefill_forward``, ``decode_loop``...). Counters: ``num_requests_total``,
    ``prompt_tokens_total``, ``generation_tokens_total``, ``cached_tokens_total``.
    ``window_s`` is set for a window (:func:`metrics_window`), None for one scrape.
    """

    num_running_reqs: float | None = None
    num_queue_reqs: float | None = None
    num_used_tokens: float | None = None
    max_total_num_tokens: float | None = None
    token_usage: float | None = None
    gen_throughput_tok_s: float | None = None
    cache_hit_rate: float | None = None
    queue_time_s: HistogramStats | None = None
    ttft_s: HistogramStats | None = None
    inter_token_latency_s: HistogramStats | None = None
    e2e_request_latency_s: HistogramStats | None = None
    per_stage_latency_s: Mapping[str, HistogramStats] = field(default_factory=dict)
    num_requests_total: float | None = None
    prompt_tokens_total: float | None = None
    generation_tokens_total: float | None = None
    cached_tokens_total: float | None = None
    window_s: float | None = None
    families: tuple[MetricFamily, ...] = ()

    def family(self, name: str) -> MetricFamily | None:
        """The raw family ``name`` (e.g. ``"sglang:num_queue_reqs"``), if present."""
        for f in self.families:
            if f.name == name:
                return f
        return None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no raw samples)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name == "families":
                continue
            v = getattr(self, f.name)
            if isinstance(v, HistogramStats):
                out[f.name] = v.to_dict()
            elif f.name == "per_stage_latency_s":
                out[f.name] = {k: h.to_dict() for k, h in sorted(v.items())}
            else:
                out[f.name] = _json_float(v)
        out["metric_names"] = [f.name for f in self.families]
        return out

    def summary_line(self) -> str:
        """One human line: ``running 12, queued 30, KV 83%, 1,234 tok/s, queue p50 0.20 s``."""
        parts = []
        if self.num_running_reqs is not None:
            parts.append(f"running {self.num_running_reqs:g}")
        if self.num_queue_reqs is not None:
            parts.append(f"queued {self.num_queue_reqs:g}")
        if self.token_usage is not None:
            parts.append(f"KV cache {100 * self.token_usage:.0f}% used")
        if self.gen_throughput_tok_s is not None:
            parts.append(f"{self.gen_throughput_tok_s:,.0f} tok/s")
        for label, h in (("queue time", self.queue_time_s), ("TTFT", self.ttft_s)):
            p50 = h.quantile(0.5) if h else None
            if p50 is not None:
                parts.append(f"{label} p50 {p50:.3g} s ({h.count:g} requests)")  # type: ignore[union-attr]
        return ", ".join(parts) if parts else "no SGLang serving metrics"


def _keep(sample: Sample) -> bool:
    """Count only TP rank 0 / PP rank 0 series (the others repeat the same numbers)."""
    for key in _RANK_LABELS:
        v = sample.label(key)
        if v is not None and v != "0":
            return False
    return True


def _gauge(fams: Mapping[str, MetricFamily], name: str, how: str = "sum") -> float | None:
    fam = fams.get(name)
    if fam is None:
        return None
    vals = [s.value for s in fam.samples if s.name in (name, name + "_total") and _keep(s)]
    vals = [v for v in vals if not math.isnan(v)]
    if not vals:
        return None
    if how == "max":
        return max(vals)
    if how == "mean":
        return sum(vals) / len(vals)
    return float(sum(vals))


def _histograms(fam: MetricFamily | None, by: str | None = None) -> dict[str, HistogramStats]:
    """Merge a histogram family's series (grouped by the label ``by`` when given)."""
    if fam is None:
        return {}
    counts: dict[str, float] = {}
    sums: dict[str, float] = {}
    buckets: dict[str, dict[float, float]] = {}
    base = fam.name
    for s in fam.samples:
        if not _keep(s):
            continue
        key = (s.label(by) or "") if by else ""
        if s.name == base + "_bucket":
            le = s.label("le")
            if le is None:
                continue
            bound = float(le)
            b = buckets.setdefault(key, {})
            b[bound] = b.get(bound, 0.0) + s.value
        elif s.name == base + "_sum":
            sums[key] = sums.get(key, 0.0) + s.value
        elif s.name == base + "_count":
            counts[key] = counts.get(key, 0.0) + s.value
    keys = set(counts) | set(buckets)
    return {
        k: HistogramStats(
            count=counts.get(k, buckets.get(k, {}).get(math.inf, 0.0)),
            sum=sums.get(k, 0.0),
            buckets=tuple(sorted(buckets.get(k, {}).items())),
        )
        for k in keys
    }


def _one(h: dict[str, HistogramStats]) -> HistogramStats | None:
    return h.get("")


def from_families(families: Iterable[MetricFamily]) -> ServerMetrics:
    """Build the typed summary from parsed families."""
    fams_t = tuple(families)
    fams = {f.name: f for f in fams_t}

    def counter(name: str) -> float | None:
        return _gauge(fams, name) if name in fams else _gauge(fams, name.removesuffix("_total"))

    return ServerMetrics(
        num_running_reqs=_gauge(fams, "sglang:num_running_reqs"),
        num_queue_reqs=_gauge(fams, "sglang:num_queue_reqs"),
        num_used_tokens=_gauge(fams, "sglang:num_used_tokens"),
        max_total_num_tokens=_gauge(fams, "sglang:max_total_num_tokens"),
        token_usage=_gauge(fams, "sglang:token_usage", "max"),
        gen_throughput_tok_s=_gauge(fams, "sglang:gen_throughput"),
        cache_hit_rate=_gauge(fams, "sglang:cache_hit_rate", "mean"),
        queue_time_s=_one(_histograms(fams.get("sglang:queue_time_seconds"))),
        ttft_s=_one(_histograms(fams.get("sglang:time_to_first_token_seconds"))),
        inter_token_latency_s=_one(_histograms(fams.get("sglang:inter_token_latency_seconds"))),
        e2e_request_latency_s=_one(_histograms(fams.get("sglang:e2e_request_latency_seconds"))),
        per_stage_latency_s=_histograms(
            fams.get("sglang:per_stage_req_latency_seconds"), by="stage"
        ),
        num_requests_total=counter("sglang:num_requests_total"),
        prompt_tokens_total=counter("sglang:prompt_tokens_total"),
        generation_tokens_total=counter("sglang:generation_tokens_total"),
        cached_tokens_total=counter("sglang:cached_tokens_total"),
        families=fams_t,
    )


def parse_prometheus_text(text: str) -> ServerMetrics:
    """Parse the text of SGLang's ``/metrics`` into :class:`ServerMetrics`."""
    return from_families(parse_families(text))


def metrics_window(
    before: ServerMetrics, after: ServerMetrics, window_s: float | None = None
) -> ServerMetrics:
    """What happened between two scrapes: counter and histogram differences, mean gauges."""

    def mean(a: float | None, b: float | None) -> float | None:
        vals = [v for v in (a, b) if v is not None]
        return sum(vals) / len(vals) if vals else None

    def delta(a: float | None, b: float | None) -> float | None:
        if b is None:
            return None
        if a is None or b < a:  # absent before, or a counter reset: count from zero
            return b
        return b - a

    def hdelta(a: HistogramStats | None, b: HistogramStats | None) -> HistogramStats | None:
        if b is None:
            return None
        return b if a is None else b.minus(a)

    stages = {
        k: h
        for k in after.per_stage_latency_s
        if (h := hdelta(before.per_stage_latency_s.get(k), after.per_stage_latency_s[k]))
    }
    return ServerMetrics(
        num_running_reqs=mean(before.num_running_reqs, after.num_running_reqs),
        num_queue_reqs=mean(before.num_queue_reqs, after.num_queue_reqs),
        num_used_tokens=mean(before.num_used_tokens, after.num_used_tokens),
        max_total_num_tokens=after.max_total_num_tokens or before.max_total_num_tokens,
        token_usage=mean(before.token_usage, after.token_usage),
        gen_throughput_tok_s=mean(before.gen_throughput_tok_s, after.gen_throughput_tok_s),
        cache_hit_rate=mean(before.cache_hit_rate, after.cache_hit_rate),
        queue_time_s=hdelta(before.queue_time_s, after.queue_time_s),
        ttft_s=hdelta(before.ttft_s, after.ttft_s),
        inter_token_latency_s=hdelta(before.inter_token_latency_s, after.inter_token_latency_s),
        e2e_request_latency_s=hdelta(before.e2e_request_latency_s, after.e2e_request_latency_s),
        per_stage_latency_s=stages,
        num_requests_total=delta(before.num_requests_total, after.num_requests_total),
        prompt_tokens_total=delta(before.prompt_tokens_total, after.prompt_tokens_total),
        generation_tokens_total=delta(
            before.generation_tokens_total, after.generation_tokens_total
        ),
        cached_tokens_total=delta(before.cached_tokens_total, after.cached_tokens_total),
        window_s=window_s,
        families=after.families,
    )


BEFORE_FILE = "metrics_before.prom"
AFTER_FILE = "metrics_after.prom"


def load_metrics(path: str | Path) -> ServerMetrics:
    """Load saved ``/metrics`` text: one ``.prom`` file, or a ``collect`` output directory
    (its ``metrics_before.prom`` and ``metrics_after.prom`` become a window)."""
    p = Path(path)
    if p.is_dir():
        before, after = p / BEFORE_FILE, p / AFTER_FILE
        if after.is_file() and before.is_file():
            return metrics_window(load_metrics(before), load_metrics(after))
        if after.is_file() or before.is_file():
            return load_metrics(after if after.is_file() else before)
        raise BadInputError(f"{p} has neither {BEFORE_FILE} nor {AFTER_FILE}")
    if not p.is_file():  # also a FIFO or device: never opened (it could block)
        raise BadInputError(f"cannot read metrics file {p}: not a regular file")
    if p.stat().st_size > 256 << 20:
        raise BadInputError(f"cannot read metrics file {p}: over 256 MB")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInputError(f"cannot read metrics file {p}: {exc}") from None
    metrics = parse_prometheus_text(text)
    if not metrics.families:
        raise BadInputError(f"{p} holds no Prometheus samples")
    return metrics
