"""Capture edges and gap location on randomly varied synthetic traces (tests/gap_builder.py).

Every case draws its conventions at random with a fixed seed: step spans on the launch thread
or another one, off-step sampling/D2H work between steps, a lone warm-up memset before a long
silence, trailing teardown, no step annotations, CUDA-graph decode. The truth is the plan's
own intervals (merged here with a plain loop), never the analyzer's output. Checked: the
conservation laws (capture = busy + idle + edge, wall = busy + idle, causes and locations add
up to idle), the edge equals the planted warm-up / teardown, the idle between steps equals
the planted one whatever off-step work lies in it, and the planted cause is ranked first.
"""

from __future__ import annotations

import math
import subprocess
import sys
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from gap_builder import LAUNCH_NS, Case, build, draw, write

import analyzer
from analyzer.analyses.gaps import CAUSES
from analyzer.analyses.timeline import capture_edges
from analyzer.report import validate_report

N_CASES = 48
ABS_US = 0.002  # µs rounding of the Kineto timestamps


def cases() -> list[Case]:
    rng = np.random.default_rng(20261204)
    out = [draw(rng, 10_000 + i) for i in range(N_CASES)]
    # make sure each family meets every convention at least once
    out += [draw(rng, 20_000 + i, family=f) for i, f in enumerate(["batching", "compute", "launch"] * 3)]
    return out


CASES = cases()


@cache
def analysed(i: int, tmp: str, include_edges: bool = False) -> dict:
    doc, _ = build(CASES[i])
    path = write(doc, Path(tmp) / f"case{i}.trace.json.gz")
    return analyzer.analyze([path], include_edges=include_edges).to_dict()


@pytest.fixture(scope="module")
def tmp_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("gap_cases"))


def close(a: float, b: float, abs_us: float = ABS_US) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=abs_us)


def test_the_draw_covers_every_convention():
    flags = {
        "no annotations": any(not c.annotated for c in CASES),
        "other thread": any(c.annotated and c.ann_other_thread for c in CASES),
        "cuda graph": any(c.cuda_graph for c in CASES),
        "off-step work": any(c.off_step and c.steps > 1 for c in CASES),
        "warm-up": any(c.warmup_ns for c in CASES),
        "teardown": any(c.teardown_ns for c in CASES),
        "one step": any(c.steps == 1 for c in CASES),
        "batching, annotated": any(c.family == "batching" and c.annotated and c.steps > 1 for c in CASES),
        "launch-bound": any(c.family == "launch" for c in CASES),
    }
    assert all(flags.values()), flags


@pytest.mark.parametrize("i", range(len(CASES)))
def test_conservation_and_planted_edges(i, tmp_dir):
    case = CASES[i]
    _, truth = build(case)
    doc = analysed(i, tmp_dir)
    validate_report(doc)
    (r,) = doc["ranks"]
    edge = (truth.edge_before_ns + truth.edge_after_ns) / 1000
    idle = (truth.capture_ns - truth.busy_ns) / 1000 - edge
    assert close(r["capture_us"], truth.capture_ns / 1000), case
    assert close(r["busy_us"], truth.busy_ns / 1000), case
    assert close(r["edge"]["before_us"], truth.edge_before_ns / 1000), case
    assert close(r["edge"]["after_us"], truth.edge_after_ns / 1000), case
    assert close(r["edge_us"], edge), case
    assert close(r["idle_us"], idle), case
    assert close(r["wall_us"], r["busy_us"] + r["idle_us"]), case
    assert close(r["capture_us"], r["busy_us"] + r["idle_us"] + r["edge_us"], 3 * ABS_US), case
    assert r["edge"]["rule"] == ("steps" if case.annotated else ("activity" if edge else "none"))

    (g,) = doc["serving"]["gaps"]["ranks"]
    (f,) = doc["serving"]["ranks"]
    for src in (g, f):  # the serving figures agree with the timeline
        assert close(src["idle_us"], r["idle_us"]) and close(src["edge_us"], r["edge_us"]), case
        assert close(src["wall_us"], r["wall_us"]) and close(src["capture_us"], r["capture_us"]), case
    assert close(sum(g["by_cause_us"].values()), g["idle_us"], 1e-6), case
    parts = g["between_steps_us"] + g["inside_steps_us"] + g["outside_steps_us"]
    assert close(parts, g["idle_us"], 1e-6), case
    for loc in ("between_steps", "inside_steps", "outside_steps"):
        assert close(sum(g[f"{loc}_by_cause_us"].values()), g[f"{loc}_us"], 1e-6), (case, loc)
    assert all(x["dur_us"] <= g["gap_us"]["max"] for x in g["largest"])
    s = doc["summary"]
    assert close(s["edge_us"], r["edge_us"]) and close(s["capture_us"], r["capture_us"])
    assert math.isclose(s["idle_share"], r["idle_us"] / r["wall_us"], rel_tol=1e-9)


@pytest.mark.parametrize("i", range(len(CASES)))
def test_location_and_ranking(i, tmp_dir):
    case = CASES[i]
    _, truth = build(case)
    doc = analysed(i, tmp_dir)
    (g,) = doc["serving"]["gaps"]["ranks"]
    ids = [f["id"] for f in doc["findings"]]
    if not case.annotated:  # no steps: nothing is between steps, and the report says why
        assert g["between_steps_us"] == 0 and g["inside_steps_us"] == 0
        assert any("could not tell phases" in a for a in doc["abstained"])
        assert "batching_gaps" not in ids
    else:
        # off-step work between two steps does not make its gaps "outside steps"
        assert close(g["between_steps_us"], truth.between_ns / 1000), case
        assert close(g["inside_steps_us"], truth.inside_ns / 1000), case
        assert g["outside_steps_us"] == 0, case
        n_between = sum(1 for a, b in truth.holes()
                        if any(w0[1] <= a and b <= w1[0] for w0, w1 in zip(truth.step_windows, truth.step_windows[1:])))
        # scheduler spans cover each between gap's host window except the last <= 7 us
        sched = g["between_steps_by_cause_us"]["scheduler"]
        assert sched <= g["between_steps_us"] + ABS_US
        assert sched >= g["between_steps_us"] - n_between * (LAUNCH_NS + 2_000) / 1000 - ABS_US, case
        for x in g["largest"]:
            if x["location"] == "between":
                assert x["next_step"] == x["prev_step"] + 1, x
    if case.family == "batching" and case.annotated and case.steps > 1:
        assert ids[0] == "batching_gaps", (case, ids)
        top = doc["findings"][0]
        assert close(top["time_us"], truth.between_ns / 1000), case
    if case.family == "compute":
        assert ids[0] == "gemm_compute", (case, ids)
        assert doc["summary"]["idle_share"] < 0.05, case  # the warm-up is not idle
    if case.family == "launch":  # late launches inside steps, whatever the edges
        assert ids[0] == "host_launch_overhead", (case, ids)
        where = "inside_steps" if case.annotated else "outside_steps"
        assert g[f"{where}_by_cause_us"]["launch_overhead"] > 0.9 * g[f"{where}_us"], case


@pytest.mark.parametrize("i", range(0, len(CASES), 4))
def test_include_edges_counts_the_edges_as_idle(i, tmp_dir):
    _, truth = build(CASES[i])
    doc = analysed(i, tmp_dir, include_edges=True)
    (r,) = doc["ranks"]
    (g,) = doc["serving"]["gaps"]["ranks"]
    assert r["edge_us"] == 0 and r["edge"]["rule"] == "included"
    assert close(r["wall_us"], truth.capture_ns / 1000)
    assert close(r["idle_us"], (truth.capture_ns - truth.busy_ns) / 1000)
    assert close(g["idle_us"], r["idle_us"]) and close(sum(g["by_cause_us"].values()), g["idle_us"], 1e-6)
    if CASES[i].annotated:  # the edge idle is back as "outside steps"
        edge = (truth.edge_before_ns + truth.edge_after_ns) / 1000
        assert close(g["outside_steps_us"], edge), CASES[i]


def decode_capture(tmp_path: Path) -> Path:
    """The report's failure 2: one CUDA-graph decode step after a 463 ms profiler warm-up."""
    case = Case(seed=463, family="compute", steps=1, annotated=True, ann_other_thread=False,
                cuda_graph=True, off_step=0, warmup_ns=463_000_000, teardown_ns=0)
    doc, _ = build(case)
    return write(doc, tmp_path / "decode_capture.trace.json.gz")


def test_warm_up_does_not_fail_an_idle_gate(tmp_path):
    path = decode_capture(tmp_path)
    cmd = [sys.executable, "-m", "analyzer.cli", "analyze", str(path), "--fail-on", "idle>0.30"]
    ok = subprocess.run(cmd, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "capture edge 463.0 ms" in ok.stdout
    assert "gemm_compute" in ok.stdout  # something stands out once the warm-up is cut
    old = subprocess.run(cmd + ["--include-edges"], capture_output=True, text=True)
    assert old.returncode == 3, old.stderr  # the 0.1.0 behaviour: 90%+ "idle"
    edge = subprocess.run(cmd[:-2] + ["--fail-on", "edge>0.5"], capture_output=True, text=True)
    assert edge.returncode == 3 and "edge>0.5" in edge.stderr


# -- capture_edges on plain arrays ----------------------------------------------------------


def holes(s: np.ndarray, e: np.ndarray) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for a, b in sorted(zip(s.tolist(), e.tolist())):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(x[1], y[0]) for x, y in zip(out, out[1:])]


@pytest.mark.parametrize("seed", range(30))
def test_capture_edges_partition_the_holes(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 60))
    s = np.cumsum(rng.integers(0, 3_000_000, n))
    e = s + rng.integers(0, 200_000, n)
    win = None
    if rng.random() < 0.5:
        i, j = sorted(rng.integers(0, n, 2).tolist())
        win = (int(s[i]), int(e[i:j + 1].max()))
    ed = capture_edges(s, e, win)
    hs = holes(s, e)
    before = sum(b - a for a, b in hs if b <= ed.core_start_ns)
    after = sum(b - a for a, b in hs if a >= ed.core_end_ns)
    assert (ed.before_ns, ed.after_ns) == (before, after)
    assert all(b <= ed.core_start_ns or a >= ed.core_start_ns for a, b in hs)  # no hole is split
    assert all(b <= ed.core_end_ns or a >= ed.core_end_ns for a, b in hs)
    if win is not None:  # never cut into the step window
        assert ed.core_start_ns <= win[0] and ed.core_end_ns >= win[1]
    inc = capture_edges(s, e, win, include_edges=True)
    assert inc.edge_ns == 0 and inc.rule == "included"


def test_real_work_before_the_first_step_keeps_its_idle():
    """Like the Hugging Face trace: 500 kernels before the one step found: not warm-up."""
    s = np.arange(600, dtype=np.int64) * 30_000
    e = s + 20_000
    ed = capture_edges(s, e, (int(s[500]), int(e[-1])))
    assert ed.edge_ns == 0 and ed.core_start_ns == int(s[0])


def test_a_lone_kernel_before_a_short_pause_is_not_warm_up():
    s = np.r_[0, 300_000 + np.arange(50) * 20_000].astype(np.int64)
    e = s + 10_000
    assert capture_edges(s, e).edge_ns == 0  # 0.3 ms < EDGE_MIN_GAP_NS
    s2 = np.r_[0, 5_000_000 + np.arange(50) * 20_000].astype(np.int64)
    e2 = s2 + 10_000
    e2[0] = 2_000  # a 2 us memset (< 1% of the busy time), then 5 ms of silence: warm-up
    ed = capture_edges(s2, e2)
    assert (ed.before_ns, ed.after_ns, ed.rule) == (5_000_000 - 2_000, 0, "activity")
    e2[0] = 10_000  # 10 us is 2% of the busy time: real work, kept
    assert capture_edges(s2, e2).edge_ns == 0


def test_causes_cover_every_gap_cause():
    assert set(CAUSES) == {"scheduler", "synchronization", "launch_overhead", "pp_bubble", "device_wait"}
