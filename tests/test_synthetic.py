"""The synthetic SGLang generator: its ground truth is recomputed here, independently.

Everything below reads the written files with gzip+json and recomputes the figures with
plain loops and a name->category map of its own; the generator's code is only used to
regenerate the samples (which must equal the committed ones).
"""

from __future__ import annotations

import gzip
import itertools
import json
import re
from collections import defaultdict
from pathlib import Path

import pytest

from analyzer.synthetic import SCENARIOS, generate_all

SYNTHETIC = Path(__file__).resolve().parent.parent / "sample_traces" / "synthetic"
GPU_CATS = ("kernel", "gpu_memcpy", "gpu_memset")
NAME_RE = re.compile(r"^(?P<pid>.+?)-TP-(?P<tp>\d+)(?:-DP-(?P<dp>\d+))?(?:-PP-(?P<pp>\d+))?"
                     r"(?:-EP-(?P<ep>\d+))?(?:-(?P<stage>EXTEND|DECODE|prefill|decode))?"
                     r"\.trace\.json\.gz$")
STEP_RE = re.compile(r"^step\[(?P<phase>[A-Z_]+) bs=(?P<bs>\d+)(?: toks=(?P<toks>\d+))?\]$")

# the test's own taxonomy for the names the generator uses (first match wins)
NAME_MAP: list[tuple[str, str]] = [
    ("ncclDevKernel", "communication"),
    ("BatchPrefillWith", "attention"),
    ("BatchDecodeWith", "attention"),
    ("MergeState", "attention"),
    ("store_kvcache", "kv_cache"),
    ("create_flashinfer_kv_indices", "kv_cache"),
    ("nvjet_", "gemm"),
    ("sm90_xmma_gemm", "gemm"),
    ("RMSNorm", "elementwise"),
    ("Rotary", "elementwise"),
    ("act_and_mul", "elementwise"),
    ("DivFunctor", "elementwise"),
    ("Sampling", "sampling"),
    ("compute_position", "other"),
    ("indexSelect", "other"),
    ("Memcpy", "memcpy"),
    ("Memset", "memset"),
]


def category(name: str, phase: str) -> str:
    for pat, cat in NAME_MAP:
        if pat in name:
            if cat == "attention":
                return "attention_decode" if phase == "DECODE" else "attention_prefill"
            return cat
    raise AssertionError(f"name not in the test's map: {name[:80]}")


def ns(x: float) -> int:
    return round(x * 1000)


def merged(iv: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for s, e in sorted(iv):
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return [(s, e) for s, e in out]


def length(iv: list[tuple[int, int]]) -> int:
    return sum(e - s for s, e in merged(iv))


def covered_by(iv: list[tuple[int, int]], cover: list[tuple[int, int]]) -> int:
    """Length of merged(iv) that lies inside merged(cover): clip each against the others."""
    tot = 0
    cov = merged(cover)
    j = 0
    for s, e in merged(iv):
        while j < len(cov) and cov[j][1] <= s:
            j += 1
        k = j
        while k < len(cov) and cov[k][0] < e:
            tot += min(e, cov[k][1]) - max(s, cov[k][0])
            k += 1
    return tot


def load(path: Path) -> dict:
    with gzip.open(path, "rt") as f:
        return json.load(f)


class Rank:
    """One rank's files reduced to GPU activities tagged with their phase."""

    def __init__(self, docs: list[tuple[str | None, dict]]) -> None:
        self.gpu: list[dict] = []  # {s, e, name, phase, args, step}
        self.steps: list[tuple[str, int, int]] = []  # (phase, bs, tokens)
        self.py_steps: list[str] = []
        self.sched: list[tuple[int, int]] = []
        self.docs = [d for _, d in docs]
        for stage, doc in docs:
            ev = doc["traceEvents"]
            launches = {e["args"]["correlation"]: ns(e["ts"]) for e in ev
                        if e.get("cat") == "cuda_runtime" and "correlation" in e["args"]}
            spans = []
            for e in ev:
                if e.get("cat") != "user_annotation":
                    continue
                if e["name"].startswith("scheduler."):
                    self.sched.append((ns(e["ts"]), ns(e["ts"]) + ns(e["dur"])))
                m = STEP_RE.match(e["name"])
                if m:
                    bs = int(m["bs"])
                    toks = int(m["toks"]) if m["toks"] else bs
                    spans.append((ns(e["ts"]), ns(e["ts"]) + ns(e["dur"]), m["phase"],
                                  len(self.steps)))
                    self.steps.append((m["phase"], bs, toks))
            for e in ev:
                if e.get("cat") == "python_function" and "forward_" in e["name"]:
                    self.py_steps.append(e["name"].rsplit("forward_", 1)[1].upper())
            for e in ev:
                if e.get("cat") not in GPU_CATS:
                    continue
                launch = launches[e["args"]["correlation"]]
                phase, step = stage, -1
                for s, t, ph, idx in spans:
                    if s <= launch <= t:
                        phase, step = ph, idx
                assert phase is not None, "kernel launched outside every step span"
                self.gpu.append({"s": ns(e["ts"]), "e": ns(e["ts"]) + ns(e["dur"]),
                                 "name": e["name"], "phase": phase, "args": e["args"],
                                 "stream": e["tid"], "step": step})


def ranks_of(scenario: Path, truth: dict) -> dict[int, Rank]:
    by_rank: dict[int, list[tuple[str | None, dict]]] = defaultdict(list)
    for f in truth["files"]:
        by_rank[f["rank"]].append((f["stage"], load(scenario / f["path"])))
    return {r: Rank(sorted(docs, key=lambda d: d[0] != "EXTEND")) for r, docs in by_rank.items()}


SCENARIO_DIRS = sorted(p for p in SYNTHETIC.iterdir() if p.is_dir()) if SYNTHETIC.is_dir() else []


@pytest.fixture(scope="module", params=[p.name for p in SCENARIO_DIRS])
def scenario(request: pytest.FixtureRequest) -> tuple[Path, dict, dict[int, Rank]]:
    d = SYNTHETIC / request.param
    truth = json.loads((d / "ground_truth.json").read_text())
    return d, truth, ranks_of(d, truth)


def test_every_scenario_is_committed() -> None:
    assert sorted(p.name for p in SCENARIO_DIRS) == sorted(SCENARIOS)


def test_labelled_synthetic_and_named_like_sglang(scenario) -> None:
    d, truth, _ = scenario
    assert truth["synthetic"] is True and "synthetic" in truth["generator"]
    names = sorted(p.name for p in d.glob("*.trace.json.gz"))
    assert names == sorted(f["path"] for f in truth["files"])
    for f in truth["files"]:
        m = NAME_RE.match(f["path"])
        assert m, f["path"]
        assert m["pid"] == truth["profile_id"]
        assert int(m["tp"]) == f["tp_rank"]
        assert (int(m["pp"]) if m["pp"] else None) == (f["pp_rank"] if truth["pp_size"] > 1
                                                        else None)
        assert m["stage"] == f["stage"]
        pp = int(m["pp"]) if m["pp"] else 0
        assert pp * truth["tp_size"] + int(m["tp"]) == f["rank"]
        doc = load(d / f["path"])
        assert doc["synthetic"] is True and doc["generator"] == truth["generator"]
        assert doc["distributedInfo"]["rank"] == f["rank"]
        assert doc["distributedInfo"]["world_size"] == len({g["rank"] for g in truth["files"]})
        assert (d / f["path"]).stat().st_size < 1_000_000
    assert (d / "server_args.json").is_file()


def test_busy_idle_categories_and_communication(scenario) -> None:
    _, truth, ranks = scenario
    for t in truth["ranks"]:
        rank = ranks[t["rank"]]
        iv = [(k["s"], k["e"]) for k in rank.gpu]
        wall = max(e for _, e in iv) - min(s for s, _ in iv)
        busy = length(iv)
        assert wall / 1000 == pytest.approx(t["wall_us"], abs=1e-6)
        assert busy / 1000 == pytest.approx(t["busy_us"], abs=1e-6)
        assert (wall - busy) / 1000 == pytest.approx(t["idle_us"], abs=1e-6)
        by_cat: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for k in rank.gpu:
            by_cat[category(k["name"], k["phase"])].append((k["s"], k["e"]))
        for cat, fig in t["categories"].items():
            assert length(by_cat.get(cat, [])) / 1000 == pytest.approx(fig["time_us"], abs=1e-6)
            assert len(by_cat.get(cat, [])) == fig["count"], cat
        assert sum(len(v) for v in by_cat.values()) == t["activities"]
        comm = by_cat.get("communication", [])
        other = [iv for c, v in by_cat.items() if c != "communication" for iv in v]
        exposed = length(comm) - covered_by(comm, other) if comm else 0
        assert exposed / 1000 == pytest.approx(t["communication"]["exposed_us"], abs=1e-6)
        assert length(comm) / 1000 == pytest.approx(t["communication"]["time_us"], abs=1e-6)
        # kernels on one stream never overlap
        per_stream: dict[int, list[tuple[int, int]]] = defaultdict(list)
        for k in rank.gpu:
            per_stream[k["stream"]].append((k["s"], k["e"]))
        for lst in per_stream.values():
            lst.sort()
            assert all(a[1] <= b[0] for a, b in itertools.pairwise(lst))


def test_phases_and_steps(scenario) -> None:
    _, truth, ranks = scenario
    for t in truth["ranks"]:
        rank = ranks[t["rank"]]
        if truth["stage_split"]:
            assert rank.steps == []  # older SGLang: no step spans, phases from file + frames
            phases = rank.py_steps
            assert {st["stage"] for st in t["steps"]} == {"EXTEND", "DECODE"}
            assert [st["phase"] for st in t["steps"]] == phases
        else:
            phases = [p for p, _, _ in rank.steps]
            assert [(st["phase"], st["bs"], st["tokens"]) for st in t["steps"]] == rank.steps
        for ph, fig in t["phases"].items():
            assert fig["steps"] == phases.count(ph)
            kern = [(k["s"], k["e"]) for k in rank.gpu if k["phase"] == ph]
            assert length(kern) / 1000 == pytest.approx(fig["gpu_time_us"], abs=1e-6)
        if not truth["stage_split"]:
            for ph, fig in t["phases"].items():
                assert fig["tokens"] == sum(tok for p, _, tok in rank.steps if p == ph)


def test_gaps_between_steps_are_covered_by_scheduler_spans(scenario) -> None:
    _, truth, ranks = scenario
    for t in truth["ranks"]:
        rank = ranks[t["rank"]]
        iv = merged([(k["s"], k["e"]) for k in rank.gpu])
        idle = [(a[1], b[0]) for a, b in itertools.pairwise(iv)]
        cov = covered_by(idle, rank.sched)
        assert cov / 1000 == pytest.approx(t["gaps"]["covered_by_scheduler_us"], abs=1e-6)
        recv_starts = {k["s"] for k in rank.gpu
                       if k["args"].get("Collective name") == "recv"}
        bubble = sum(e - s for s, e in idle if e in recv_starts)
        assert bubble / 1000 == pytest.approx(t["gaps"]["before_recv_us"], abs=1e-6)


def test_cuda_graph_kernels_share_the_launch_correlation(scenario) -> None:
    d, truth, _ = scenario
    f = truth["files"][-1]
    ev = load(d / f["path"])["traceEvents"]
    graphs = [e for e in ev if e.get("name") == "cudaGraphLaunch"]
    n_graph_steps = sum(1 for t in truth["ranks"] if t["rank"] == f["rank"]
                        for st in t["steps"] if st["cuda_graph"]
                        and (f["stage"] is None or st["stage"] == f["stage"]))
    assert len(graphs) == n_graph_steps
    for g in graphs:
        c = g["args"]["correlation"]
        kernels = [e for e in ev if e.get("cat") == "kernel" and e["args"]["correlation"] == c]
        flows = [e for e in ev if e.get("cat") == "ac2g" and e["id"] == c]
        assert len(kernels) > 20
        assert [e["ph"] for e in flows].count("s") == 1
        assert [e["ph"] for e in flows].count("f") == len(kernels)


def test_straggler_and_collective_wait() -> None:
    d = SYNTHETIC / "tp8_straggler"
    truth = json.loads((d / "ground_truth.json").read_text())
    ranks = ranks_of(d, truth)
    colls = {r: [k for k in rk.gpu if k["name"].startswith("ncclDevKernel")]
             for r, rk in ranks.items()}
    n = {len(v) for v in colls.values()}
    assert len(n) == 1
    late = defaultdict(int)
    wait = defaultdict(int)
    for i in range(n.pop()):
        inst = {r: v[i] for r, v in colls.items()}
        ends = {k["e"] for k in inst.values()}
        assert len(ends) == 1  # every rank leaves the collective together
        last = max(inst, key=lambda r: inst[r]["s"])
        late[last] += 1
        for r, k in inst.items():
            wait[r] += inst[last]["s"] - k["s"]
    straggler = max(late, key=late.__getitem__)
    assert straggler == truth["straggler_rank"] == 5
    for t in truth["ranks"]:
        assert wait[t["rank"]] / 1000 == pytest.approx(t["communication"]["wait_us"], abs=1e-6)
    assert truth["expected_top_finding"] == "cross_rank_skew"


def test_planted_effects_dominate() -> None:
    """Each scenario's planted cause is the biggest share of its wall time."""
    def truth(name: str) -> dict:
        return json.loads((SYNTHETIC / name / "ground_truth.json").read_text())

    for t in truth("long_prefill_tp2")["ranks"]:
        cats = {c: v["time_us"] for c, v in t["categories"].items()}
        assert max(cats, key=cats.__getitem__) == "attention_prefill"
    for name in ("kv_bound_decode_cuda_graph", "tensor_core_decode", "stage_split"):
        for t in truth(name)["ranks"]:
            cats = {c: v["time_us"] for c, v in t["categories"].items()}
            assert max(cats, key=cats.__getitem__) == "attention_decode", name
    tc = truth("tensor_core_decode")["ranks"][0]
    assert tc["phases"]["DECODE"]["categories"]["attention_decode"] > 0.5 * tc["wall_us"]
    for t in truth("batching_gaps")["ranks"]:
        assert t["gaps"]["between_steps_us"] > 0.5 * t["wall_us"]
    for t in truth("pp4_bubbles")["ranks"]:
        assert t["gaps"]["before_recv_us"] > 0.4 * t["wall_us"]


def test_regenerated_files_equal_committed(tmp_path: Path) -> None:
    generate_all(tmp_path)
    for d in SCENARIO_DIRS:
        new = tmp_path / d.name
        assert sorted(p.name for p in new.iterdir()) == sorted(p.name for p in d.iterdir())
        for p in d.iterdir():
            if p.name.endswith(".gz"):
                assert gzip.decompress(p.read_bytes()) == gzip.decompress(
                    (new / p.name).read_bytes()), p
            else:
                assert p.read_text() == (new / p.name).read_text(), p


CPU_TP2 = SYNTHETIC.parent / "cpu_tp2"


def test_cpu_recording_is_real_tp2_and_annotated_like_sglang() -> None:
    files = sorted(CPU_TP2.glob("*.trace.json.gz"))
    assert len(files) == 2
    for f in files:
        m = NAME_RE.match(f.name)
        assert m and m["pp"] is None
        assert f.stat().st_size < 2_000_000
        doc = load(f)
        assert doc["recorded_on"] == "cpu" and doc["synthetic"] is False
        assert doc["distributedInfo"]["rank"] == int(m["tp"])
        assert doc["distributedInfo"]["world_size"] == 2
        ev = doc["traceEvents"]
        assert not any(e.get("cat") in GPU_CATS for e in ev)
        steps = [STEP_RE.match(e["name"]) for e in ev if e.get("cat") == "user_annotation"]
        steps = [s for s in steps if s]
        assert {s["phase"] for s in steps} == {"EXTEND", "DECODE"}
        assert all(s["toks"] for s in steps if s["phase"] == "EXTEND")
        names = {e["name"] for e in ev if e.get("cat") == "user_annotation"}
        assert {"gloo:all_reduce", "gloo:all_gather", "scheduler.recv_requests",
                "scheduler.run_batch", "scheduler.process_batch_result"} <= names
    assert (CPU_TP2 / "server_args.json").is_file()
