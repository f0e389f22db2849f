"""One job at a time: inputs that cannot be ranks of one job are bad input (exit 2)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from analyzer.model import BadInputError
from analyzer.readers import load_traces

REPO = Path(__file__).resolve().parent.parent
A100 = "kineto/hta_ddp_a100_nccl_allreduce_rank0.json.gz"
V100 = "kineto/kineto2021_resnet50_v100.pt.trace.json.gz"


def _doc(rank: int, *, world: int = 2, gpu: str = "NVIDIA H100", base_ns: int | None = None,
         t0_us: float = 100.0, default_pg: list[int] | None = None) -> dict[str, Any]:
    info: dict[str, Any] = {"backend": "nccl", "rank": rank, "world_size": world}
    if default_pg is not None:
        info["pg_config"] = [{"pg_name": "0", "pg_desc": "default_pg", "pg_size": len(default_pg),
                              "ranks": default_pg},
                             {"pg_name": "2", "pg_desc": "undefined", "pg_size": 1, "ranks": [rank]}]
    doc: dict[str, Any] = {
        "schemaVersion": 1, "distributedInfo": info,
        "deviceProperties": [{"id": 0, "name": gpu}],
        "traceEvents": [{"ph": "X", "cat": "kernel", "name": "k", "pid": 0, "tid": 7,
                         "ts": t0_us, "dur": 5.0, "args": {"device": 0, "stream": 7}}],
    }
    if base_ns is not None:
        doc["baseTimeNanoseconds"] = base_ns
    return doc


def _write(d: Path, docs: list[dict[str, Any]]) -> list[Path]:
    d.mkdir(parents=True, exist_ok=True)
    out = []
    for i, doc in enumerate(docs):
        p = d / f"rank{i}.json"
        p.write_text(json.dumps(doc))
        out.append(p)
    return out


def test_a100_and_v100_through_the_cli_exit_2_one_line(shared_traces: Path) -> None:
    a, b = shared_traces / A100, shared_traces / V100
    res = subprocess.run([sys.executable, "-m", "analyzer.cli", "analyze", str(a), str(b)],
                         check=False, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 2, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    assert a.name in lines[0] and b.name in lines[0]
    assert "A100" in lines[0] and "V100" in lines[0]
    assert res.stdout == ""


def test_recsys_pair_is_one_job(shared_traces: Path) -> None:
    ts = load_traces([shared_traces / "kineto" / "hta_recsys_2ranks"])
    assert sorted(t.rank.rank for t in ts.traces) == [0, 1]


@pytest.mark.parametrize("scenario", ["pp4_bubbles", "tp8_straggler", "stage_split"])
def test_sglang_sample_dirs_still_load(scenario: str) -> None:
    d = REPO / "sample_traces" / "synthetic" / scenario
    if not d.is_dir():
        pytest.skip("sample_traces/synthetic absent")
    n_files = len(list(d.glob("*.trace.json.gz")))
    ts = load_traces([d])
    assert len(ts.traces) >= 1 and len(ts.traces) <= n_files


@pytest.mark.parametrize(("docs", "reason"), [
    ([_doc(0, gpu="NVIDIA A100"), _doc(1, gpu="Tesla V100")], "different GPUs"),
    ([_doc(0, world=8), _doc(1, world=2)], "different world sizes"),
    ([_doc(0, default_pg=[0, 1]), _doc(1, default_pg=[0, 1, 2])], "default process groups"),
    ([_doc(0, base_ns=1_711_964_646 * 10**9), _doc(1, base_ns=(1_711_964_646 + 3 * 86400) * 10**9)],
     "3.0 days apart"),
    ([_doc(0, t0_us=1_700_000_000e6), _doc(1, t0_us=1_700_000_000e6 + 2 * 86400e6)], "2.0 days apart"),
])
def test_two_jobs_refused(tmp_path: Path, docs: list[dict[str, Any]], reason: str) -> None:
    paths = _write(tmp_path, docs)
    with pytest.raises(BadInputError) as exc:
        load_traces([str(p) for p in paths])
    msg = str(exc.value)
    assert "\n" not in msg and reason in msg
    assert paths[0].name in msg and paths[1].name in msg


def test_one_job_accepted(tmp_path: Path) -> None:
    """Same GPU, world, default group; monotonic clocks far apart but base times close;
    sub-groups that differ per rank (TP groups) are fine."""
    base = 1_711_964_646 * 10**9
    docs = [_doc(0, base_ns=base, t0_us=4_458_676e6, default_pg=[0, 1]),
            _doc(1, base_ns=base + 10**9, t0_us=100e6, default_pg=[0, 1])]
    ts = load_traces([str(p) for p in _write(tmp_path, docs)])
    assert [t.rank.rank for t in ts.traces] == [0, 1]
