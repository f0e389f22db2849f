"""Serving steps and phases: attribute every GPU activity to the step that launched it.

Steps come from the first marker source that a trace has (``serving_markers.toml``):
SGLang ``step[MODE k=v ..]`` spans, the ``execute_<n>_context_..`` annotation (SGLang, vLLM),
SGLang model-runner python frames (``forward_extend`` / ``forward_decode`` / graph replay),
outermost ``nn.Module`` forwards (plain Hugging Face: first = prefill, rest = decode),
``ProfilerStep#N``, or a stage-split file's stage (one pseudo step per file).

Attribution: a GPU activity belongs to the step whose host span contains the host time of
its launch (runtime event with the same ``correlation``; kernels replayed by one
``cudaGraphLaunch`` share its correlation). Activities without a linked launch fall back to
the GPU copy of the step annotation (``gpu_user_annotation``) that contains their start.

    >>> attr = attribute_steps(trace)          # doctest: +SKIP
    >>> attr.steps[["mode", "bs", "tokens", "gpu_busy_us"]]   # doctest: +SKIP
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np
import pandas as pd

from analyzer.analyses.tables import codes_of, kind_mask, strings_at, take_rows, used_codes
from analyzer.model import CATEGORIES, GPU_ACTIVITY_KINDS, Trace

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

NS_PER_US = 1000.0
SOURCES: tuple[str, ...] = (
    "sglang_step",
    "execute",
    "sglang_frames",
    "hf_module",
    "profiler_step",
    "stage_file",
)
ATTENTION_CATS = ("attention_prefill", "attention_decode")
_FIELD_RE = re.compile(r"([A-Za-z_]+)=(\d+)")
_EXEC_INT_FIELDS = (
    "tokens", "ctx_reqs", "ctx_sq", "ctx_sk", "ctx_sqsq", "ctx_sqsk",
    "gen_reqs", "gen_sq", "gen_sk", "gen_sqsq", "gen_sqsk",
)
STEP_COLUMNS = (
    "step", "name", "mode", "phase", "attention", "bs", "tokens", "kv_tokens",
    "ctx_reqs", "gen_reqs", "ctx_sqsk", "gen_sk", "host_start_ns", "host_end_ns", "ctx_sqsq",
)


@lru_cache(maxsize=1)
def markers() -> dict[str, Any]:
    """The step / host-work markers (``serving_markers.toml``), compiled once."""
    text = resources.files("analyzer.analyses").joinpath("serving_markers.toml").read_text()
    data = tomllib.loads(text)
    for group in ("steps", "host"):
        for spec in data[group].values():
            spec["re"] = re.compile(spec["regex"])
    return data


def match_rows(events: pd.DataFrame, spec: Mapping[str, Any]) -> tuple[np.ndarray, list[re.Match | None]]:
    """Row indices (positions) whose kind is in ``spec['kinds']`` and name matches ``spec['re']``.

    Returns ``(positions, matches)`` with one ``re.Match`` per returned row. Only the unique
    names are matched (once each), then joined back through the name codes.
    """
    kind_ok = kind_mask(events, spec["kinds"])
    if not kind_ok.any():
        return np.zeros(0, np.int64), []
    names = events["name"]
    codes = names.cat.codes.to_numpy()
    cats = names.cat.categories
    rx = spec["re"]
    hits: dict[int, re.Match] = {}
    for c in used_codes(codes, kind_ok, len(cats)).tolist():
        m = rx.search(str(cats[c]))
        if m is not None:
            hits[c] = m
    if not hits:
        return np.zeros(0, np.int64), []
    hit = np.zeros(len(cats) + 1, bool)  # last slot: missing name (code -1)
    hit[list(hits)] = True
    pos = np.flatnonzero(kind_ok & hit[codes])
    return pos, [hits[int(c)] for c in codes[pos]]


def outermost(start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Boolean mask (in the given order) of intervals not nested in an earlier-starting one."""
    if start.size == 0:
        return np.zeros(0, bool)
    order = np.lexsort((-end, start))
    s, e = start[order], end[order]
    run = np.maximum.accumulate(e)
    keep = np.ones(s.size, bool)
    keep[1:] = s[1:] >= run[:-1]
    out = np.zeros(s.size, bool)
    out[order] = keep
    return out


def grouped_union_ns(groups: np.ndarray, start: np.ndarray, end: np.ndarray, ngroups: int) -> np.ndarray:
    """Union length of the intervals of each group (``groups`` in ``[0, ngroups)``), vectorised."""
    out = np.zeros(ngroups, np.int64)
    keep = (end > start) & (groups >= 0)
    if not keep.any():
        return out
    g, s, e = groups[keep], start[keep], end[keep]
    order = np.lexsort((s, g))
    g, s, e = g[order], s[order], e[order]
    run = pd.Series(e).groupby(g).cummax().to_numpy(np.int64)
    new = np.ones(g.size, bool)
    new[1:] = (g[1:] != g[:-1]) | (s[1:] > run[:-1])
    first = np.flatnonzero(new)
    block_end = np.maximum.reduceat(e, first)
    np.add.at(out, g[first], block_end - s[first])
    return out


def _parse_fields(text: str) -> dict[str, int]:
    return {k: int(v) for k, v in _FIELD_RE.findall(text or "")}


def _pick(fields: Mapping[str, int], keys: list[str]) -> float:
    for k in keys:
        if k in fields:
            return float(fields[k])
    return np.nan


@dataclass(frozen=True)
class StepAttribution:
    """Steps of one trace and the GPU activity attributed to them.

    ``steps``: one row per step (``STEP_COLUMNS`` + GPU figures: ``kernels``, ``gpu_start_ns``,
    ``gpu_end_ns``, ``gpu_span_us``, ``gpu_busy_us``, ``host_us`` and ``<category>_us``).
    ``act``: the GPU activity rows (main device) with ``end_ns``, ``launch_ns`` (host time of
    the launch, -1 if unknown), ``step`` (row in ``steps``, -1 if none) and ``category``
    rewritten by phase for attention kernels.
    """

    steps: pd.DataFrame
    act: pd.DataFrame
    source: str | None
    device: int
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def has_steps(self) -> bool:
        return self.source is not None and len(self.steps) > 0


def _empty_steps() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series([], dtype=object) for c in STEP_COLUMNS})


def _steps_from_spans(ev: pd.DataFrame, pos: np.ndarray, modes: list[str], extra: list[dict]) -> pd.DataFrame:
    start = ev["ts_ns"].to_numpy(np.int64)[pos]
    end = start + ev["dur_ns"].to_numpy(np.int64)[pos]
    names = strings_at(ev["name"], pos)
    keep = outermost(start, end)
    order = np.argsort(start[keep], kind="stable")
    idx = np.flatnonzero(keep)[order]
    mode_tab = markers()["modes"]
    fields_cfg = markers()["fields"]
    rows = []
    for j in idx.tolist():  # one row per step (steps, not events)
        mode = modes[j]
        info = mode_tab.get(mode, mode_tab["UNKNOWN"])
        f = extra[j]
        rows.append(
            {
                "name": names[j],
                "mode": mode,
                "phase": info["phase"],
                "attention": info["attention"],
                "bs": f.get("bs", _pick(f, fields_cfg["batch_size"])),
                "tokens": f.get("tokens_", _pick(f, fields_cfg["tokens"])),
                "kv_tokens": f.get("kv_tokens_", _pick(f, fields_cfg["kv_tokens"])),
                "ctx_reqs": f.get("ctx_reqs", np.nan),
                "gen_reqs": f.get("gen_reqs", np.nan),
                "ctx_sqsk": f.get("ctx_sqsk", np.nan),
                "gen_sk": f.get("gen_sk", np.nan),
                "ctx_sqsq": f.get("ctx_sqsq", np.nan),
                "host_start_ns": int(start[j]),
                "host_end_ns": int(end[j]),
            }
        )
    df = pd.DataFrame(rows, columns=[c for c in STEP_COLUMNS if c != "step"])
    df.insert(0, "step", np.arange(len(df), dtype=np.int64))
    for c in ("bs", "tokens", "kv_tokens", "ctx_reqs", "gen_reqs", "ctx_sqsk", "gen_sk", "ctx_sqsq"):
        df[c] = df[c].astype(float)
    # a decode step computes one new token per request
    dec = (df["phase"] == "decode") & df["tokens"].isna()
    df.loc[dec, "tokens"] = df.loc[dec, "bs"]
    return df


def _execute_fields(m: re.Match) -> dict[str, Any]:
    got = m.groupdict()
    f = {k: int(got[k]) if got.get(k) is not None else 0 for k in _EXEC_INT_FIELDS}
    if got.get("tokens") is None:  # vLLM's variant: scheduled tokens of each side
        f["tokens"] = f["ctx_sq"] + f["gen_sq"]
    ctx, gen = f["ctx_reqs"], f["gen_reqs"]
    mode = "MIXED" if ctx and gen else ("EXTEND" if ctx else ("DECODE" if gen else "IDLE"))
    has_kv = got.get("ctx_sk") is not None  # vLLM's variant carries no key/context lengths
    return {
        "mode": mode,
        "bs": float(ctx + gen),
        "tokens_": float(f["tokens"]),
        "kv_tokens_": float(f["ctx_sk"] + f["gen_sk"]) if has_kv else float("nan"),
        "ctx_reqs": float(ctx),
        "gen_reqs": float(gen),
        "ctx_sqsk": float(f["ctx_sqsk"]) if has_kv else float("nan"),
        "gen_sk": float(f["gen_sk"]) if has_kv else float("nan"),
        "ctx_sqsq": float(f["ctx_sqsq"]) if has_kv else float("nan"),
    }


def find_steps(ev: pd.DataFrame, host_kinds_only: bool = True) -> tuple[pd.DataFrame, str | None, pd.DataFrame]:
    """``(steps, source, gpu_spans)``: host step spans from the first marker source found.

    ``gpu_spans`` are the ``gpu_user_annotation`` copies of the chosen source's annotations
    (columns ``start_ns, end_ns, step``; ``step`` = -1 when it pairs with no host step).
    """
    mk = markers()["steps"]
    for source in ("sglang_step", "execute", "execute_vllm"):
        pos, ms = match_rows(ev, mk[source])
        if pos.size == 0:
            continue
        host = strings_at(ev["kind"], pos) != "gpu_user_annotation"
        if source == "sglang_step":
            extra = [_parse_fields(m.group("fields")) for m in ms]
            modes = [m.group("mode") for m in ms]
        else:
            extra = [_execute_fields(m) for m in ms]
            modes = [x["mode"] for x in extra]
        hpos = pos[host]
        if hpos.size:
            steps = _steps_from_spans(ev, hpos, [mo for mo, h in zip(modes, host) if h],
                                      [x for x, h in zip(extra, host) if h])
            if source == "sglang_step":
                steps = _enrich_with_execute(ev, steps)
            return steps, source, _gpu_spans(ev, pos[~host], steps)
        # GPU copies only (e.g. NVTX on the GPU timeline): steps in GPU time
        steps = _steps_from_spans(ev, pos, modes, extra)
        gs = pd.DataFrame({"start_ns": steps["host_start_ns"], "end_ns": steps["host_end_ns"],
                           "step": steps["step"]})
        steps["host_start_ns"] = -1
        steps["host_end_ns"] = -1
        return steps, source, gs
    # python frames of the SGLang model runner (+ graph replays)
    pos1, ms1 = match_rows(ev, mk["sglang_frames"])
    pos2, _ = match_rows(ev, mk["cuda_graph_replay"])
    if pos1.size or pos2.size:
        pos = np.concatenate([pos1, pos2])
        modes = [m.group("mode").upper() for m in ms1] + [mk["cuda_graph_replay"]["mode"]] * pos2.size
        steps = _steps_from_spans(ev, pos, modes, [{} for _ in modes])
        return steps, "sglang_frames", _no_gpu_spans()
    pos, ms = match_rows(ev, mk["hf_module"])
    if pos.size:
        start = ev["ts_ns"].to_numpy(np.int64)[pos]
        end = start + ev["dur_ns"].to_numpy(np.int64)[pos]
        top = outermost(start, end)
        first = int(np.argmin(np.where(top, start, np.iinfo(np.int64).max)))
        modes = ["EXTEND" if i == first else "DECODE" for i in range(pos.size)]
        steps = _steps_from_spans(ev, pos, modes, [{} for _ in modes])
        return steps, "hf_module", _no_gpu_spans()
    pos, _ = match_rows(ev, mk["profiler_step"])
    if pos.size:
        modes = [mk["profiler_step"]["mode"]] * pos.size
        steps = _steps_from_spans(ev, pos, modes, [{} for _ in modes])
        return steps, "profiler_step", _no_gpu_spans()
    return _empty_steps(), None, _no_gpu_spans()


def _no_gpu_spans() -> pd.DataFrame:
    return pd.DataFrame({"start_ns": np.zeros(0, np.int64), "end_ns": np.zeros(0, np.int64),
                         "step": np.zeros(0, np.int64)})


def _gpu_spans(ev: pd.DataFrame, gpos: np.ndarray, steps: pd.DataFrame) -> pd.DataFrame:
    """GPU copies paired with host steps by (name, occurrence)."""
    if gpos.size == 0:
        return _no_gpu_spans()
    start = ev["ts_ns"].to_numpy(np.int64)[gpos]
    end = start + ev["dur_ns"].to_numpy(np.int64)[gpos]
    names = strings_at(ev["name"], gpos)
    order = np.argsort(start, kind="stable")
    g = pd.DataFrame({"name": names[order], "start_ns": start[order], "end_ns": end[order]})
    g["occ"] = g.groupby("name").cumcount()
    h = steps[["name", "step"]].copy()
    h["occ"] = h.groupby("name").cumcount()
    g = g.merge(h, on=["name", "occ"], how="left")
    g["step"] = g["step"].fillna(-1).astype(np.int64)
    return g[["start_ns", "end_ns", "step"]].sort_values("start_ns").reset_index(drop=True)


def _enrich_with_execute(ev: pd.DataFrame, steps: pd.DataFrame) -> pd.DataFrame:
    """Copy the execute_ annotation's request/context counts onto the step it contains."""
    pos, ms = match_rows(ev, markers()["steps"]["execute"])
    host = strings_at(ev["kind"], pos) != "gpu_user_annotation"
    pos = pos[host]
    ms = [m for m, h in zip(ms, host) if h]
    if pos.size == 0 or len(steps) == 0:
        return steps
    es = ev["ts_ns"].to_numpy(np.int64)[pos]
    ee = es + ev["dur_ns"].to_numpy(np.int64)[pos]
    order = np.argsort(es)
    es, ee = es[order], ee[order]
    fields = [_execute_fields(ms[i]) for i in order.tolist()]
    st = steps["host_start_ns"].to_numpy(np.int64)
    i = np.searchsorted(es, st, side="right") - 1
    ok = (i >= 0) & (st < ee[np.maximum(i, 0)])
    steps = steps.copy()
    for col in ("ctx_reqs", "gen_reqs", "ctx_sqsk", "gen_sk", "ctx_sqsq"):
        vals = np.array([fields[j][col] for j in np.maximum(i, 0).tolist()]) if len(fields) else np.array([])
        steps[col] = np.where(ok, vals, steps[col].to_numpy(float))
    kv = np.array([fields[j]["kv_tokens_"] for j in np.maximum(i, 0).tolist()])
    cur = steps["kv_tokens"].to_numpy(float)
    steps["kv_tokens"] = np.where(np.isnan(cur) & ok, kv, cur)
    return steps


def _launch_times(ev: pd.DataFrame, act_corr: np.ndarray) -> np.ndarray:
    """Host time of the runtime/driver call with the same correlation id (-1 if none)."""
    corr = ev["correlation"].to_numpy(np.int64)
    rt = kind_mask(ev, ("cuda_runtime", "cuda_driver")) & (corr >= 0)
    if not rt.any() or act_corr.size == 0:
        return np.full(act_corr.size, -1, np.int64)
    rc = corr[rt]
    rts = ev["ts_ns"].to_numpy(np.int64)[rt]
    order = np.lexsort((rts, rc))
    rc, rts = rc[order], rts[order]
    first = np.r_[True, rc[1:] != rc[:-1]]
    rc, rts = rc[first], rts[first]
    i = np.searchsorted(rc, act_corr)
    i_c = np.minimum(i, rc.size - 1)
    hit = (act_corr >= 0) & (rc[i_c] == act_corr)
    return np.where(hit, rts[i_c], -1)


def _in_spans(t: np.ndarray, s: np.ndarray, e: np.ndarray) -> np.ndarray:
    """Index of the (sorted, disjoint) span ``[s, e)`` containing each ``t``, else -1."""
    if s.size == 0:
        return np.full(t.size, -1, np.int64)
    i = np.searchsorted(s, t, side="right") - 1
    ic = np.maximum(i, 0)
    return np.where((i >= 0) & (t < e[ic]), ic, -1)


def main_device(trace: Trace) -> int:
    """The device index with the most GPU activity rows (-1 if none)."""
    dev = trace.events["device"].to_numpy()
    kind_ok = kind_mask(trace.events, GPU_ACTIVITY_KINDS)
    d = dev[kind_ok & (dev >= 0)]
    return int(np.bincount(d).argmax()) if d.size else -1


def attribute_steps(trace: Trace) -> StepAttribution:
    """Find the steps of ``trace`` and attribute its GPU activity (classified events) to them."""
    ev = trace.events
    notes: list[str] = []
    steps, source, gspans = find_steps(ev)
    dev = main_device(trace)
    act = take_rows(ev, _activity_rows(ev, dev), ACT_COLUMNS)
    if "category" not in act.columns:
        act["category"] = pd.Categorical(["other"] * len(act), categories=list(CATEGORIES))
    start = act["ts_ns"].to_numpy(np.int64)
    act["end_ns"] = start + act["dur_ns"].to_numpy(np.int64)
    launch = _launch_times(ev, act["correlation"].to_numpy(np.int64))
    act["launch_ns"] = launch
    step_of = np.full(len(act), -1, np.int64)

    if source is None and trace.sources and len({s.stage for s in trace.sources}) == 1 \
            and trace.sources[0].stage:
        stage = str(trace.sources[0].stage).upper()
        steps = _stage_step(stage, start, act["end_ns"].to_numpy(np.int64))
        source = "stage_file"
        notes.append(f"no step annotations: the whole file is one {stage} stage")
    if source is not None and len(steps):
        hs = steps["host_start_ns"].to_numpy(np.int64)
        he = steps["host_end_ns"].to_numpy(np.int64)
        if source == "stage_file":
            step_of[:] = 0
        elif (hs >= 0).any():
            order = np.argsort(hs, kind="stable")
            k = _in_spans(launch, hs[order], he[order])
            step_of = np.where((k >= 0) & (launch >= 0), order[np.maximum(k, 0)], -1)
        if len(gspans):
            miss = step_of < 0
            k = _in_spans(start[miss], gspans["start_ns"].to_numpy(np.int64),
                          gspans["end_ns"].to_numpy(np.int64))
            gstep = gspans["step"].to_numpy(np.int64)
            step_of[miss] = np.where(k >= 0, gstep[np.maximum(k, 0)], -1)
    act["step"] = step_of
    act["category"] = _phase_categories(act, steps)
    steps = _step_figures(steps, act)
    if source is None:
        notes.append("no step annotations (step[..], execute_.., forward frames): phases unknown")
    return StepAttribution(steps, act, source, dev, tuple(notes))


ACT_COLUMNS = ("ts_ns", "dur_ns", "kind", "name", "stream", "correlation", "category",
               "collective", "msg_bytes", "pg_name", "pg_size", "seq")


def _activity_rows(ev: pd.DataFrame, device: int) -> np.ndarray:
    """Positions of the GPU activity rows of ``device`` in ``ev``, ordered by start (stable):
    the rows of ``StepAttribution.act``, in its order."""
    pos = np.flatnonzero(kind_mask(ev, GPU_ACTIVITY_KINDS) & (ev["device"].to_numpy() == device))
    return pos[np.argsort(ev["ts_ns"].to_numpy(np.int64)[pos], kind="stable")]


def _stage_step(stage: str, start: np.ndarray, end: np.ndarray) -> pd.DataFrame:
    info = markers()["modes"].get(stage, markers()["modes"]["UNKNOWN"])
    return pd.DataFrame({
        "step": [0], "name": [f"stage {stage}"], "mode": [stage], "phase": [info["phase"]],
        "attention": [info["attention"]], "bs": [np.nan], "tokens": [np.nan],
        "kv_tokens": [np.nan], "ctx_reqs": [np.nan], "gen_reqs": [np.nan],
        "ctx_sqsk": [np.nan], "gen_sk": [np.nan], "ctx_sqsq": [np.nan],
        "host_start_ns": [int(start.min()) if start.size else 0],
        "host_end_ns": [int(end.max()) if end.size else 0],
    })


def _phase_categories(act: pd.DataFrame, steps: pd.DataFrame) -> pd.Categorical:
    """Attention kernels take the attention kind of their step's phase (decode vs prefill)."""
    codes = codes_of(act["category"], CATEGORIES).astype(np.int8, copy=True)
    if len(steps) and len(act):
        pre, dec = CATEGORIES.index("attention_prefill"), CATEGORIES.index("attention_decode")
        att = steps["attention"].astype(str).to_numpy(object)
        want = np.where(att == "prefill", pre, np.where(att == "decode", dec, -1)).astype(np.int8)
        st = act["step"].to_numpy(np.int64)
        w = want[np.maximum(st, 0)]
        sel = ((codes == pre) | (codes == dec)) & (st >= 0) & (w >= 0)
        codes[sel] = w[sel]
    return pd.Categorical.from_codes(codes, categories=list(CATEGORIES))


def _step_figures(steps: pd.DataFrame, act: pd.DataFrame) -> pd.DataFrame:
    steps = steps.copy()
    n = len(steps)
    if n == 0:
        return steps
    st = act["step"].to_numpy(np.int64)
    s = act["ts_ns"].to_numpy(np.int64)
    e = act["end_ns"].to_numpy(np.int64)
    ok = st >= 0
    steps["kernels"] = np.bincount(st[ok], minlength=n)
    gs = np.full(n, np.iinfo(np.int64).max)
    ge = np.full(n, np.iinfo(np.int64).min)
    np.minimum.at(gs, st[ok], s[ok])
    np.maximum.at(ge, st[ok], e[ok])
    has = steps["kernels"].to_numpy() > 0
    steps["gpu_start_ns"] = np.where(has, gs, -1)
    steps["gpu_end_ns"] = np.where(has, ge, -1)
    steps["gpu_span_us"] = np.where(has, (ge - gs) / NS_PER_US, 0.0)
    steps["gpu_busy_us"] = grouped_union_ns(st, s, e, n) / NS_PER_US
    steps["host_us"] = (steps["host_end_ns"] - steps["host_start_ns"]).clip(lower=0) / NS_PER_US
    codes = act["category"].cat.codes.to_numpy(np.int64)
    ncat = len(CATEGORIES)
    per = grouped_union_ns(np.where(ok, st * ncat + codes, -1), s, e, n * ncat).reshape(n, ncat)
    for j, c in enumerate(CATEGORIES):
        steps[f"{c}_us"] = per[:, j] / NS_PER_US
    return steps


def reassign_attention_by_phase(trace: Trace, attr: StepAttribution | None = None) -> int:
    """Rewrite ``trace.events['category']`` of attention kernels by their step's phase.

    Returns how many rows changed. Call after classify and before the timeline so that every
    figure uses the phase-aware attention categories. ``attr``: the trace's
    ``attribute_steps`` result when the caller already has it (it stays valid afterwards:
    its ``act`` already carries the phase-aware categories).
    """
    if attr is None:
        attr = attribute_steps(trace)
    if not attr.has_steps or "category" not in trace.events.columns:
        return 0
    ev = trace.events
    target = _activity_rows(ev, attr.device)
    if target.size != len(attr.act):
        raise ValueError("the step attribution does not belong to this trace's events")
    new = attr.act["category"].cat.codes.to_numpy()
    old = codes_of(ev["category"], CATEGORIES)
    changed = int(np.count_nonzero(old[target] != new))
    if changed:
        codes = old.astype(np.int8, copy=True)
        codes[target] = new
        ev["category"] = pd.Categorical.from_codes(codes, categories=list(CATEGORIES))
    return changed


def _pct(x: np.ndarray) -> dict[str, float | None]:
    if x.size == 0:
        return {"p50": None, "p90": None, "max": None, "mean": None}
    return {"p50": float(np.percentile(x, 50)), "p90": float(np.percentile(x, 90)),
            "max": float(x.max()), "mean": float(x.mean())}


def phase_summary(attr: StepAttribution, wall_us: float | None = None) -> dict[str, Any]:
    """Per phase: steps, tokens, requests, GPU time by category, time per step p50/p90/max."""
    act, steps = attr.act, attr.steps
    s = act["ts_ns"].to_numpy(np.int64)
    e = act["end_ns"].to_numpy(np.int64)
    st = act["step"].to_numpy(np.int64)
    if wall_us is None:
        wall_us = float(e.max() - s.min()) / NS_PER_US if s.size else 0.0
    phases: dict[str, Any] = {}
    if attr.has_steps:
        ph_names = sorted(set(steps["phase"].astype(str)))
        ph_index = {p: i for i, p in enumerate(ph_names)}
        step_ph = steps["phase"].map(ph_index).to_numpy(np.int64)
        act_ph = np.where(st >= 0, step_ph[np.maximum(st, 0)], -1)
        ncat = len(CATEGORIES)
        codes = act["category"].cat.codes.to_numpy(np.int64)
        busy = grouped_union_ns(act_ph, s, e, len(ph_names))
        per = grouped_union_ns(np.where(act_ph >= 0, act_ph * ncat + codes, -1), s, e,
                               len(ph_names) * ncat).reshape(len(ph_names), ncat)
        for p, i in ph_index.items():
            sel = step_ph == i
            sub = steps[sel]
            cats = {c: per[i, j] / NS_PER_US for j, c in enumerate(CATEGORIES) if per[i, j] > 0}
            phases[p] = {
                "steps": int(sel.sum()),
                "modes": sorted(set(sub["mode"].astype(str))),
                "tokens": _nansum(sub["tokens"]),
                "requests": _nansum(sub["bs"]),
                "kernels": int(sub["kernels"].sum()),
                "gpu_busy_us": busy[i] / NS_PER_US,
                "share_of_wall": (busy[i] / NS_PER_US) / wall_us if wall_us else 0.0,
                "categories_us": dict(sorted(cats.items(), key=lambda kv: (-kv[1], kv[0]))),
                "step_gpu_us": _pct(sub["gpu_span_us"].to_numpy(float)),
                "step_busy_us": _pct(sub["gpu_busy_us"].to_numpy(float)),
                "step_host_us": _pct(sub["host_us"].to_numpy(float)),
                "batch_size": _pct(sub["bs"].dropna().to_numpy(float)),
            }
    un = st < 0
    unattributed_us = grouped_union_ns(np.zeros(int(un.sum()), np.int64), s[un], e[un], 1)[0] / NS_PER_US
    return {
        "source": attr.source,
        "device": attr.device,
        "steps": len(steps) if attr.has_steps else 0,
        "phases": phases,
        "timeline": step_timeline(attr, t0_ns=int(s.min()) if s.size else 0),
        "unattributed_gpu_us": unattributed_us,
        "unattributed_kernels": int(un.sum()),
        "notes": list(attr.notes),
    }


def _nansum(col: pd.Series) -> float | None:
    v = col.to_numpy(float)
    return float(np.nansum(v)) if (~np.isnan(v)).any() else None


def step_timeline(attr: StepAttribution, t0_ns: int, max_points: int = 4000) -> list[dict[str, Any]]:
    """Every step with GPU work on one time axis (``gpu_start_us`` from the rank's first GPU
    activity), evenly thinned to ``max_points``: the steps-over-time chart, gaps included."""
    if not attr.has_steps:
        return []
    st = attr.steps[attr.steps["kernels"] > 0]
    if len(st) > max_points:
        st = st.iloc[np.linspace(0, len(st) - 1, max_points).round().astype(int)]
    df = pd.DataFrame({
        "step": st["step"].to_numpy(np.int64),
        "phase": st["phase"].astype(str).to_numpy(object),
        "gpu_start_us": (st["gpu_start_ns"].to_numpy(np.int64) - t0_ns) / NS_PER_US,
        "gpu_span_us": st["gpu_span_us"].to_numpy(float),
        "gpu_busy_us": st["gpu_busy_us"].to_numpy(float),
        "bs": st["bs"].to_numpy(float),
        "tokens": st["tokens"].to_numpy(float),
    })
    rows = df.astype(object).where(df.notna(), None).to_dict("records")
    return [{**r, "step": int(r["step"])} for r in rows]


def step_rows(attr: StepAttribution, limit: int = 50) -> list[dict[str, Any]]:
    """JSON-able rows of the first ``limit`` steps (example steps for the report)."""
    if not attr.has_steps:
        return []
    cols = ["step", "mode", "phase", "bs", "tokens", "kv_tokens", "kernels", "gpu_span_us",
            "gpu_busy_us", "host_us", "attention_prefill_us", "attention_decode_us", "gemm_us",
            "communication_us"]
    out = []
    for row in attr.steps[cols].head(limit).to_dict("records"):
        out.append({k: (None if isinstance(v, float) and np.isnan(v) else
                        (int(v) if isinstance(v, (np.integer,)) else v)) for k, v in row.items()})
    return out
