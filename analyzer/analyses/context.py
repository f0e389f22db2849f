"""Run context: which engine and workload made the trace, its parallel sizes, dtypes, GPU.

The verdict depends on it: advice names only flags of the engine the trace came from, a
training trace is not told to change serving flags, FP8 is not advised for GEMMs that
already run FP8/FP4, and TP is never read as 1 when the trace shows a larger group.

Two steps, because the python frames that name the engine are pruned right after reading:

    >>> clues = trace_clues(trace)                  # before prune_python_frames  # doctest: +SKIP
    >>> ctx = build_context(traces, clues_per_trace, server_args)            # doctest: +SKIP
    >>> ctx.to_dict()["engine"]                                              # doctest: +SKIP
    'sglang'

Every value carries its ``source``; what the trace does not say is ``unknown`` (never a
guess). The markers are data: ``context_markers.toml``.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np
import pandas as pd

from analyzer.analyses.tables import kind_mask, used_codes
from analyzer.model import Trace

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ENGINES: tuple[str, ...] = ("sglang", "vllm", "trtllm", "hf", "training", "unknown")
WORKLOADS: tuple[str, ...] = ("serving", "generate", "training", "unknown")
#: categories whose kernels' dtypes are reported
DTYPE_GROUPS: dict[str, tuple[str, ...]] = {
    "gemm": ("gemm",),
    "moe": ("moe",),
    "attention": ("attention_prefill", "attention_decode"),
}
LOW_PRECISION = ("fp8", "fp4", "int8", "int4")

# server_args keys that only one engine writes (SGLang's server_args.json, vLLM's config)
_SGLANG_KEYS = ("mem_fraction_static", "chunked_prefill_size", "disable_radix_cache",
                "schedule_policy", "disable_overlap_schedule", "cuda_graph_max_bs", "tp_size")
_VLLM_KEYS = ("gpu_memory_utilization", "max_num_seqs", "max_num_batched_tokens",
              "enforce_eager", "tensor_parallel_size")


@lru_cache(maxsize=1)
def context_markers() -> dict[str, Any]:
    """``context_markers.toml``, regexes compiled once."""
    text = resources.files("analyzer.analyses").joinpath("context_markers.toml").read_text()
    data = tomllib.loads(text)
    for spec in data["clue"]:
        spec["re"] = re.compile(spec["regex"])
    for spec in data["dtype"]:
        spec["re"] = re.compile(spec["regex"])
    return data


def _name_hits(events: pd.DataFrame, kinds: Sequence[str], rx: re.Pattern[str]) -> int:
    """Rows of the given kinds whose name matches ``rx`` (unique names matched once)."""
    if "name" not in events or not isinstance(events["name"].dtype, pd.CategoricalDtype):
        return 0
    ok = kind_mask(events, kinds)
    if not ok.any():
        return 0
    codes = events["name"].cat.codes.to_numpy()
    cats = events["name"].cat.categories
    hit = np.zeros(len(cats) + 1, bool)
    for c in used_codes(codes, ok, len(cats)).tolist():
        hit[c] = rx.search(str(cats[c])) is not None
    return int(np.count_nonzero(ok & hit[codes]))


#: above this many (name, kind) pairs the clues are counted one clue at a time
MAX_PAIR_TABLE = 1 << 22


def trace_clues(trace: Trace) -> dict[str, int]:
    """Row counts of every clue of ``context_markers.toml`` in one trace (clue id -> rows).

    One pass over the rows counts every (name, kind) pair; each clue then sums the counts of
    the names its regex matches over its kinds (the same counts as ``_name_hits`` per clue).
    """
    ev = trace.events
    specs = context_markers()["clue"]
    names = ev.get("name")
    kinds = ev.get("kind")
    if (names is None or kinds is None or not isinstance(names.dtype, pd.CategoricalDtype)
            or not isinstance(kinds.dtype, pd.CategoricalDtype)):
        return {spec["id"]: _name_hits(ev, spec["kinds"], spec["re"]) for spec in specs}
    cats, kcats = names.cat.categories, [str(k) for k in kinds.cat.categories]
    nn, nk = len(cats) + 1, len(kcats) + 1  # last slot of each: missing (code -1)
    if nn * nk > MAX_PAIR_TABLE:
        return {spec["id"]: _name_hits(ev, spec["kinds"], spec["re"]) for spec in specs}
    codes = names.cat.codes.to_numpy().astype(np.int64)
    kcodes = kinds.cat.codes.to_numpy().astype(np.int64)
    codes[codes < 0] = nn - 1
    kcodes[kcodes < 0] = nk - 1
    pairs = np.bincount(codes * nk + kcodes, minlength=nn * nk).reshape(nn, nk)[:-1, :-1]
    return clues_from_pairs(pairs, cats, kcats)


def clues_from_pairs(pairs: np.ndarray, names: Sequence[str], kinds: Sequence[str]) -> dict[str, int]:
    """The clue counts from row counts per (name, kind): ``pairs[i, j]`` rows named
    ``names[i]`` of kind ``kinds[j]`` (also counted while reading: ``prune.FramePruner``)."""
    out: dict[str, int] = {}
    for spec in context_markers()["clue"]:
        cols = [j for j, k in enumerate(kinds) if k in set(spec["kinds"])]
        per_name = pairs[:, cols].sum(axis=1) if cols else np.zeros(len(pairs), np.int64)
        rx = spec["re"]
        hit = [c for c in np.flatnonzero(per_name).tolist() if rx.search(str(names[c])) is not None]
        out[spec["id"]] = int(per_name[hit].sum()) if hit else 0
    return out


@dataclass(frozen=True)
class Sized:
    """One parallel size and where it was read (``value`` None = could not tell)."""

    value: int | None
    source: str

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "source": self.source}


@dataclass(frozen=True)
class RunContext:
    """What made the trace (see module doc). ``to_dict()`` is ``report["context"]``."""

    engine: str
    engine_source: str
    workload: str
    workload_source: str
    domain: str
    parallel: dict[str, Sized]
    dtypes: dict[str, dict[str, float]]
    gpu: dict[str, Any]
    dtype_time_us: dict[str, float] = field(default_factory=dict)
    clues: dict[str, int] = field(default_factory=dict)

    @property
    def is_serving(self) -> bool:
        return self.workload == "serving"

    @property
    def is_training(self) -> bool:
        return self.workload == "training"

    def size(self, key: str) -> int | None:
        s = self.parallel.get(key)
        return s.value if s is not None else None

    def main_dtype(self, group: str) -> str | None:
        """The dtype holding the largest share of a group's kernel time (None if none known)."""
        shares = {k: v for k, v in (self.dtypes.get(group) or {}).items() if k != "unknown"}
        return max(shares, key=lambda k: shares[k]) if shares else None

    def dtype_share(self, dtypes: Sequence[str], groups: Sequence[str] = ("gemm", "moe")) -> float:
        """Time-weighted share of ``dtypes`` among the known-dtype kernels of ``groups``."""
        num = den = 0.0
        for g in groups:
            us = self.dtype_time_us.get(g, 0.0)
            for k, v in (self.dtypes.get(g) or {}).items():
                if k != "unknown":
                    den += v * us
                    num += v * us if k in dtypes else 0.0
        return num / den if den else 0.0

    def low_precision_share(self, groups: Sequence[str] = ("gemm", "moe")) -> float:
        """Share of FP8/FP4/INT8/INT4 kernel time among the known-dtype ones."""
        return self.dtype_share(LOW_PRECISION, groups)

    def full_precision_share(self, groups: Sequence[str] = ("gemm", "moe")) -> float:
        """Share of FP32/TF32 kernel time among the known-dtype ones."""
        return self.dtype_share(("fp32", "tf32"), groups)

    def to_dict(self) -> dict[str, Any]:
        return {
            "engine": self.engine,
            "engine_source": self.engine_source,
            "workload": self.workload,
            "workload_source": self.workload_source,
            "domain": self.domain,
            "parallel": {k: v.to_dict() for k, v in self.parallel.items()},
            "dtypes": self.dtypes,
            "gpu": dict(self.gpu),
        }


def _sum_clues(clues: Sequence[Mapping[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for c in clues:
        for k, v in c.items():
            out[k] = out.get(k, 0) + int(v)
    return out


def _engine(clues: Mapping[str, int], server_args: Mapping[str, Any] | None,
            traces: Sequence[Trace]) -> tuple[str, str]:
    data = context_markers()
    sa = server_args or {}
    if any(k in sa for k in _SGLANG_KEYS) and not any(k in sa for k in _VLLM_KEYS):
        return "sglang", "server_args"
    if any(k in sa for k in _VLLM_KEYS) and not any(k in sa for k in _SGLANG_KEYS):
        return "vllm", "server_args"
    if any(t.rank.rank_source == "filename" for t in traces):
        return "sglang", "file names (SGLang's -TP-<r> per-rank profile files)"
    found: dict[str, list[str]] = {}
    for spec in data["clue"]:
        eng = spec.get("engine")
        if eng and clues.get(spec["id"], 0) >= int(spec.get("min_rows", 1)):
            found.setdefault(eng, []).append(spec["id"])
    for eng in data["engine_priority"]:
        if eng in found:
            return eng, "trace: " + ", ".join(found[eng])
    return "unknown", "no engine clue in the trace (no SGLang/vLLM/TRT-LLM/transformers frames, ops or annotations)"


def _workload(engine: str, clues: Mapping[str, int]) -> tuple[str, str]:
    training = [s["id"] for s in context_markers()["clue"]
                if s.get("workload") == "training" and clues.get(s["id"], 0) >= int(s.get("min_rows", 1))]
    # a backward pass or an optimizer step is training whatever library ran the forward
    strong = [c for c in training if c != "ddp_reducer"]
    if strong:
        return "training", "trace: " + ", ".join(training)
    if engine in ("sglang", "vllm", "trtllm"):
        return "serving", f"engine {engine}"
    if engine == "hf":
        return "generate", "engine hf (transformers generate/forward, no serving scheduler)"
    return "unknown", "no serving engine and no backward pass / optimizer step in the trace"


def _domain(clues: Mapping[str, int], engine: str) -> str:
    if clues.get("diffusion_frames", 0) > 0:
        return "diffusion"
    if engine in ("sglang", "vllm", "trtllm", "hf"):
        return "llm"
    return "unknown"


def _pg_sizes_of_collectives(traces: Sequence[Trace]) -> dict[str, int]:
    """Largest process-group size seen on collective kernels, per collective (from the rows)."""
    out: dict[str, int] = {}
    for t in traces:
        ev = t.events
        if "pg_size" not in ev or "category" not in ev:
            continue
        comm = kind_mask(ev, ("communication",), column="category")
        if not comm.any():
            continue
        pg = ev["pg_size"].to_numpy(np.int64)[comm]
        coll = ev["collective"].astype(str).to_numpy()[comm]
        for c in np.unique(coll).tolist():
            sel = pg[(coll == c) & (pg > 0)]
            if sel.size:
                out[c] = max(out.get(c, 0), int(sel.max()))
    return out


def _has_collectives(traces: Sequence[Trace]) -> bool:
    return any("category" in t.events and kind_mask(t.events, ("communication",), column="category").any()
               for t in traces)


def _parallel(traces: Sequence[Trace], server_args: Mapping[str, Any] | None, workload: str) -> dict[str, Sized]:
    sa = server_args or {}

    def from_args(*keys: str) -> int | None:
        for k in keys:
            v = sa.get(k)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0:
                return int(v)
        return None

    out: dict[str, Sized] = {}
    for key, names in (("tp", ("tp_size", "tensor_parallel_size")), ("pp", ("pp_size", "pipeline_parallel_size")),
                       ("ep", ("ep_size", "expert_parallel_size")), ("dp", ("dp_size", "data_parallel_size"))):
        v = from_args(*names)
        if v is not None:
            out[key] = Sized(v, "server_args")
    ranks = [t.rank for t in traces]
    worlds = [r.world_size for r in ranks if r.world_size]
    world = Sized(max(worlds), "distributedInfo") if worlds else None
    if world is None and any(r.rank_source == "nsys" for r in ranks) and len(traces) > 1:
        world = Sized(len(traces), "nsys (devices in the export)")
    for key, attr in (("tp", "tp_rank"), ("pp", "pp_rank"), ("dp", "dp_rank"), ("ep", "ep_rank")):
        if key in out:
            continue
        vals = [getattr(r, attr) for r in ranks if getattr(r, attr) is not None]
        if vals:
            out[key] = Sized(max(vals) + 1, "file names")
    colls = _pg_sizes_of_collectives(traces)
    has_comm = _has_collectives(traces)
    if workload == "training":
        # data parallel unless the trace says otherwise: the default group spans the job
        if "dp" not in out:
            out["dp"] = (Sized(world.value, f"{world.source} (training: data-parallel world)") if world is not None
                         else Sized(None if has_comm else 1, "unknown (collectives, no world size)" if has_comm
                                    else "single rank, no collectives"))
        for key in ("tp", "pp", "ep"):
            out.setdefault(key, Sized(1, "training trace: no model-parallel process group named"))
    else:
        if "tp" not in out:
            g = max((colls.get(c, 0) for c in ("allreduce", "allgather", "reducescatter")), default=0)
            pp = out["pp"].value if "pp" in out else 1
            if g > 1:
                out["tp"] = Sized(g, "distributedInfo (process group size of the all-reduce/all-gather kernels)")
            elif workload == "serving" and world is not None and world.value and world.value > 1:
                dp = out["dp"].value if "dp" in out else 1
                out["tp"] = Sized(max(world.value // max((pp or 1) * (dp or 1), 1), 1),
                                  f"{world.source} world_size / (pp x dp)")
            elif has_comm:
                out["tp"] = Sized(None, "unknown (collectives present, no group sizes in the trace)")
            elif len(traces) == 1:
                out["tp"] = Sized(1, "single rank, no collectives")
            else:
                out["tp"] = Sized(None, "unknown")
        for key in ("pp", "ep", "dp"):
            out.setdefault(key, Sized(1, "default (nothing in the trace says otherwise)"))
    out["world_size"] = world if world is not None else Sized(len(traces) if len(traces) > 1 else None,
                                                           "number of rank files" if len(traces) > 1 else "unknown")
    return {k: out[k] for k in ("tp", "pp", "ep", "dp", "world_size")}


def _dtypes(traces: Sequence[Trace]) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """Share of kernel time by dtype per group (from kernel names), and each group's time."""
    specs = context_markers()["dtype"]
    acc: dict[str, dict[str, float]] = {g: {} for g in DTYPE_GROUPS}
    for t in traces:
        ev = t.events
        if "category" not in ev or not isinstance(ev["name"].dtype, pd.CategoricalDtype):
            continue
        cat = ev["category"].astype(str).to_numpy()
        is_k = kind_mask(ev, ("kernel",))
        codes = ev["name"].cat.codes.to_numpy()
        cats = ev["name"].cat.categories
        dur = ev["dur_ns"].to_numpy(np.int64)
        for g, members in DTYPE_GROUPS.items():
            sel = is_k & np.isin(cat, members) & (codes >= 0)
            if not sel.any():
                continue
            per = pd.Series(dur[sel]).groupby(codes[sel]).sum()
            for code, ns in per.items():
                name = str(cats[int(code)])
                d = next((s["dtype"] for s in specs if s["re"].search(name)), "unknown")
                acc[g][d] = acc[g].get(d, 0.0) + float(ns)
    shares: dict[str, dict[str, float]] = {}
    times: dict[str, float] = {}
    for g, d in acc.items():
        tot = sum(d.values())
        if tot > 0:
            shares[g] = {k: round(v / tot, 4) for k, v in sorted(d.items(), key=lambda kv: -kv[1])}
            times[g] = tot / 1e3
    return shares, times


def _gpu(traces: Sequence[Trace], gpu_spec: Any, why: str | None) -> dict[str, Any]:
    dev = traces[0].gpu if traces else None
    name = dev.name if dev is not None and dev.name else None
    vendor = None
    if name:
        vendor = "amd" if re.search(r"(?i)AMD|Instinct|Radeon|MI\d{3}", name) else (
            "nvidia" if re.search(r"(?i)NVIDIA|Tesla|GeForce|H100|A100|H200|B200|L40", name) else None)
    if vendor is None and traces:
        meta = traces[0].metadata or {}
        if any(k.startswith(("roctracer", "hip_")) for k in meta):
            vendor = "amd"
        elif any(k.startswith(("cuda_", "cupti")) for k in meta) or meta.get("format") == "nsys":
            vendor = "nvidia"
    return {
        "name": name,
        "vendor": vendor,
        "preset": getattr(gpu_spec, "name", None),
        "memory_bytes": dev.total_memory_bytes if dev is not None else None,
        "compute_capability": dev.compute_capability if dev is not None else None,
        "source": "deviceProperties" if name else ("--gpu" if gpu_spec is not None else (why or "unknown")),
    }


def build_context(traces: Sequence[Trace], clues: Sequence[Mapping[str, int]],
                  server_args: Mapping[str, Any] | None = None, *, gpu_spec: Any = None,
                  gpu_why: str | None = None) -> RunContext:
    """The run context of classified traces (``clues``: ``trace_clues`` of each, pre-prune)."""
    total = _sum_clues(clues)
    engine, esrc = _engine(total, server_args, traces)
    workload, wsrc = _workload(engine, total)
    domain = _domain(total, engine)
    if domain == "diffusion" and workload != "training":
        # a diffusion pipeline may run a transformers text encoder: not an LLM engine
        engine, esrc = "unknown", "diffusion pipeline (diffusers / xDiT frames): not an LLM serving engine"
        workload, wsrc = "generate", "diffusion inference (no serving scheduler, no KV cache)"
    if workload == "training" and engine == "unknown":
        engine, esrc = "training", wsrc
    dtypes, times = _dtypes(traces)
    gpu = _gpu(traces, gpu_spec, gpu_why)
    return RunContext(engine=engine, engine_source=esrc, workload=workload, workload_source=wsrc,
                      domain=domain, parallel=_parallel(traces, server_args, workload),
                      dtypes=dtypes, gpu=gpu, dtype_time_us=times, clues=total)


def sizes_for_roles(ctx: RunContext) -> dict[str, int]:
    """The plain ``{tp, pp, ep, dp}`` ints the communication-role rules use (0 = unknown)."""
    return {k: int(ctx.size(k) or 0) for k in ("tp", "pp", "ep", "dp")}


__all__ = ["ENGINES", "WORKLOADS", "RunContext", "Sized", "build_context", "context_markers",
           "sizes_for_roles", "trace_clues"]
