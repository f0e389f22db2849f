"""The CLI as a user runs it: a real subprocess, exit codes, files, one-line errors."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from analyzer.cli import check_thresholds, parse_fail_on
from analyzer.model import BadInputError
from analyzer.report import validate_report


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "analyzer.cli", *args],
        capture_output=True, text=True, cwd=cwd, timeout=300,
    )


@pytest.fixture(scope="module")
def ddp_trace(shared_traces) -> Path:
    return shared_traces / "kineto" / "hta_ddp_a100_nccl_allreduce_rank0.json.gz"


def test_json_report_validates(ddp_trace):
    res = run("analyze", str(ddp_trace), "--format", "json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    validate_report(doc)
    assert doc["inputs"][0]["rank"] == 0
    assert doc["ranks"][0]["gpu"].startswith("NVIDIA A100")


def test_text_and_markdown(ddp_trace, tmp_path):
    res = run("analyze", str(ddp_trace))
    assert res.returncode == 0, res.stderr
    assert "Per rank" in res.stdout and "GPU time by category" in res.stdout
    out = tmp_path / "r.md"
    res = run("analyze", str(ddp_trace), "--format", "markdown", "-o", str(out))
    assert res.returncode == 0, res.stderr
    md = out.read_text()
    assert md.startswith("# LLM serving trace analysis")
    assert "| rank | device |" in md
    assert res.stdout == ""


def test_fail_on_breach_exits_3(ddp_trace):
    res = run("analyze", str(ddp_trace), "--format", "json", "--fail-on", "busy>0.01")
    assert res.returncode == 3
    assert "threshold breached" in res.stderr and "busy>0.01" in res.stderr
    res = run("analyze", str(ddp_trace), "--format", "json", "--fail-on", "idle>0.999")
    assert res.returncode == 0, res.stderr


def test_bad_fail_on_expression_exits_2(ddp_trace):
    res = run("analyze", str(ddp_trace), "--fail-on", "idle=>3")
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr


def write_gz(path: Path, text: str) -> Path:
    with gzip.open(path, "wt") as fh:
        fh.write(text)
    return path


def bad_inputs(tmp: Path) -> dict[str, Path]:
    good = json.dumps({"traceEvents": [
        {"ph": "X", "cat": "kernel", "name": "k", "pid": 0, "tid": 7, "ts": 1.0, "dur": 2.0,
         "args": {"device": 0, "stream": 7, "correlation": 1}}]})
    full = gzip.compress(good.encode() * 50)
    cases = {
        "truncated.json.gz": full[: len(full) // 2],
        "invalid.json": b'{"traceEvents": [ {"ph": "X",',
        "empty.json": b"",
        "not_a_trace.json": b'{"hello": "world"}',
        "negative.json": json.dumps({"traceEvents": [
            {"ph": "X", "cat": "kernel", "name": "k", "pid": 0, "tid": 7, "ts": 1.0, "dur": -5.0,
             "args": {"device": 0}}]}).encode(),
        "nan.json": b'{"traceEvents": [{"ph": "X", "cat": "kernel", "name": "k", "pid": 0, '
                    b'"tid": 7, "ts": 1.0, "dur": NaN, "args": {"device": 0}}]}',
        "binary.json.gz": b"\x1f\x8b" + bytes(range(256)),
        "bad_utf8.json": b'{"traceEvents": [{"ph": "X", "cat": "kernel", "name": "k\xff\xfe", '
                         b'"pid": 0, "tid": 7, "ts": 1.0, "dur": 2.0}]}',
        "absurd_ts.json": b'{"traceEvents": [{"ph": "X", "cat": "kernel", "name": "k", '
                          b'"pid": 0, "tid": 7, "ts": 1e20, "dur": 2.0}]}',
    }
    out = {}
    for name, data in cases.items():
        p = tmp / name
        p.write_bytes(data)
        out[name] = p
    return out


@pytest.mark.parametrize("name", [
    "truncated.json.gz", "invalid.json", "empty.json", "not_a_trace.json", "negative.json",
    "nan.json", "binary.json.gz", "bad_utf8.json", "absurd_ts.json",
])
def test_bad_input_exit_2_one_line_no_partial_file(tmp_path, name):
    path = bad_inputs(tmp_path)[name]
    out = tmp_path / "report.json"
    res = run("analyze", str(path), "--format", "json", "-o", str(out))
    assert res.returncode == 2, (name, res.stderr)
    assert res.stderr.startswith("trace-analyzer: error: ")
    assert res.stderr.count("\n") == 1, res.stderr
    assert "Traceback" not in res.stderr
    assert not out.exists()
    assert not list(tmp_path.glob(".report.json.*"))  # no temp file left behind


def test_missing_path_exit_2(tmp_path):
    res = run("analyze", str(tmp_path / "nope.json"))
    assert res.returncode == 2 and "no such file" in res.stderr


def test_unknown_fields_are_ignored(tmp_path):
    doc = {"traceEvents": [
        {"ph": "X", "cat": "kernel", "name": "ampere_sgemm_128x64_tn", "pid": 0, "tid": 7, "ts": 10,
         "dur": 5, "args": {"device": 0, "stream": 7, "correlation": 3, "brand_new_field": [1, 2]},
         "unexpected": {"nested": True}}], "someNewTopLevelKey": 42}
    p = tmp_path / "t.json"
    p.write_text(json.dumps(doc))
    res = run("analyze", str(p), "--format", "json")
    assert res.returncode == 0, res.stderr
    r = json.loads(res.stdout)["ranks"][0]
    assert r["busy_us"] == pytest.approx(5.0)
    assert r["categories"]["gemm"]["time_us"] == pytest.approx(5.0)


def test_parse_fail_on():
    assert parse_fail_on("idle>0.30") == ("idle", ">", 0.30)
    assert parse_fail_on("communication >= 25%") == ("communication", ">=", 0.25)
    with pytest.raises(BadInputError):
        parse_fail_on("idle")


def test_check_thresholds_reads_shares():
    doc = {"summary": {"idle_share": 0.4, "busy_share": 0.6, "wall_us": 100.0,
                       "communication": {"exposed_us": 10.0},
                       "categories": {"communication": {"share": 0.3}}},
           "findings": [{"id": "batching_gaps", "share": 0.2}]}
    assert check_thresholds(doc, ["idle>0.30"]) and not check_thresholds(doc, ["idle>0.5"])
    assert check_thresholds(doc, ["communication>0.25"])
    assert not check_thresholds(doc, ["moe>0.01"])  # absent category: zero
    assert check_thresholds(doc, ["finding:batching_gaps>=0.2"])
    assert check_thresholds(doc, ["comm_exposed>0.05"])
    with pytest.raises(BadInputError):
        check_thresholds(doc, ["nonsense>0.1"])


def test_fail_on_names_are_validated_before_the_analysis(ddp_trace):
    """A typo in a CI gate exits 2 naming the valid names, never 0 (issue 17, item 6)."""
    from analyzer.findings import FINDING_IDS
    from analyzer.model import CATEGORIES

    res = run("analyze", str(ddp_trace), "--fail-on", "finding:nonexistent>0.3")
    assert res.returncode == 2, res.stderr
    assert res.stderr.count("\n") == 1 and "'nonexistent'" in res.stderr
    for fid in FINDING_IDS:
        assert fid in res.stderr
    res = run("analyze", str(ddp_trace), "--fail-on", "idel>0.3")
    assert res.returncode == 2 and "'idel'" in res.stderr
    for name in ("idle", "busy", "comm_exposed", *CATEGORIES):
        assert name in res.stderr
    res = run("analyze", str(ddp_trace), "--fail-on", "batching_gaps>0.3")
    assert res.returncode == 2 and "finding:batching_gaps" in res.stderr


def test_every_valid_fail_on_name_parses():
    from analyzer.cli import fail_on_names
    from analyzer.findings import FINDING_IDS
    from analyzer.model import CATEGORIES

    names = fail_on_names()
    assert {f"finding:{fid}" for fid in FINDING_IDS} <= set(names)
    assert set(CATEGORIES) <= set(names)
    doc = {"summary": {"idle_share": 0.4, "busy_share": 0.6, "wall_us": 100.0,
                       "communication": {"exposed_us": 10.0}, "categories": {}},
           "findings": []}
    for name in names:  # absent categories and findings read as zero share
        assert parse_fail_on(f"{name}>0.5")[0] == name
        assert check_thresholds(doc, [f"{name}>=0"])
