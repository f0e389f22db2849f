"""Hostile and careless inputs (issue 18): every one ends in a report or one clean line.

Regression cases from the review: integers past int64 in every id field (both Kineto paths),
deep nesting, a BOM, start + duration overflow, Nsight exports with odd values and huge
rowids, FIFOs, 1 GiB padding/whitespace inside ~1 MB gzip files (peak RSS measured in a
subprocess), ``-o`` onto files, links, devices, FIFOs and the input itself, secrets planted
everywhere, terminal escapes and Markdown links in names, unreadable ranks, incomplete
captures.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from hostile import BOMBS, dumps, event, kineto_doc, write_bomb

from analyzer import analyze
from analyzer.model import BadInputError
from analyzer.readers.limits import Limits, parse_limit, using
from analyzer.render import render

REPO = Path(__file__).resolve().parent.parent
FORMATS = ("text", "json", "markdown", "html")
BIG = 2**64


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "analyzer.cli", *args], capture_output=True, text=True,
        timeout=timeout, cwd=REPO, env={**os.environ, **(env or {})}, check=False,
    )


def put(path: Path, doc: object) -> Path:
    path.write_bytes(dumps(doc) if not isinstance(doc, (bytes, str)) else
                     (doc.encode() if isinstance(doc, str) else doc))
    return path


def outcome(path: Path, scanner: str = "msgspec") -> str:
    """"ok" or the BadInputError line; anything else fails the test."""
    os.environ["ANALYZER_SCANNER"] = scanner
    try:
        report = analyze([path])
        for fmt in FORMATS:
            render(report.to_dict(), fmt)
        return "ok"
    except BadInputError as exc:
        msg = str(exc)
        assert "\n" not in msg
        return msg
    finally:
        os.environ.pop("ANALYZER_SCANNER", None)


# ------------------------------------------------------------------------------------------
# Kineto: out-of-range values, nesting, BOM
# ------------------------------------------------------------------------------------------

_INT_CASES = {
    **{f"{f}_{tag}": event(**{f: v}) for f in ("pid", "tid") for tag, v in
       (("2^64", BIG), ("-2^64", -BIG), ("1e308", 1e308))},
    **{f"arg_{a}_{tag}": event(args={a: v}) for a in
       ("device", "stream", "correlation", "External id") for tag, v in
       (("2^64", BIG), ("1e308", 1e308), ("str2^64", str(BIG)))},
    "arg_device_2^40": event(args={"device": 2**40}),  # int64, but no int32 device id
    "arg_stream_2^40": event(args={"stream": 2**40}),
    "memcpy_bytes_2^64": event(cat="gpu_memcpy", args={"bytes": BIG}),
    "memcpy_bytes_2^62": event(cat="gpu_memcpy", args={"bytes": 2**62}),
    "nccl_nelems_2^62": event(name="nccl", args={"Collective name": "allreduce",
                                                 "In msg nelems": 2**62, "dtype": "Float"}),
    "nccl_group_2^64": event(name="nccl", args={"Collective name": "allreduce", "Group size": BIG}),
    "nccl_seq_2^64": event(name="nccl", args={"Collective name": "allreduce", "Seq": BIG}),
    "ts_9.2e15_dur_1e15": event(ts=9.2e15, dur=1e15),
    "ts_-9.2e15": event(ts=-9.2e15),
    "dur_1e16": event(dur=1e16),
    "dur_4e15": event(dur=4e15),  # under 2**62 ns, but the trace then spans 127 years
    "ts_4.5e15_dur_2e14": event(ts=4.5e15, dur=2e14),  # the others at ~1e2 us: a 149-year span
}


@pytest.mark.parametrize("scanner", ["msgspec", "compiled"])
@pytest.mark.parametrize("case", sorted(_INT_CASES))
def test_out_of_range_values_are_refused_by_name(tmp_path, case, scanner):
    p = put(tmp_path / f"{case}.json", kineto_doc(_INT_CASES[case]))
    got = outcome(p, scanner)
    assert got != "ok" and got.startswith(p.name), got
    assert "out of" in got or "absurd" in got or "146 years" in got


def test_both_paths_agree_on_a_valid_trace(tmp_path):
    p = put(tmp_path / "t.json", kineto_doc())
    assert outcome(p, "msgspec") == outcome(p, "compiled") == "ok"


@pytest.mark.parametrize("where", ["args", "header", "deviceProperties", "events"])
def test_deep_nesting(tmp_path, where):
    nest = "[" * 5000 + "]" * 5000
    text = {
        "args": '{"traceEvents":[{"ph":"X","cat":"kernel","name":"k","pid":0,"tid":0,"ts":1,'
                '"dur":1,"args":{"x":' + nest + "}}]}",
        "header": '{"x":' + nest + ',"traceEvents":[]}',
        "deviceProperties": '{"traceEvents":[],"deviceProperties":' + nest + "}",
        "events": '{"traceEvents":[' + nest + "]}",
    }[where]
    p = put(tmp_path / f"deep_{where}.json", text)
    got = outcome(p)
    assert got.startswith(p.name), got


def test_utf8_bom_is_accepted(tmp_path):
    p = tmp_path / "bom.json"
    p.write_bytes(b"\xef\xbb\xbf" + dumps(kineto_doc()))
    assert outcome(p) == "ok"


def test_limits_are_parsed_and_applied(tmp_path):
    assert parse_limit("max_events=1000") == ("max_events", 1000)
    assert parse_limit("max-input-bytes=2GiB") == ("max_input_bytes", 2 << 30)
    with pytest.raises(BadInputError, match="NAME=VALUE"):
        parse_limit("nonsense=1")
    assert Limits.from_env({"ANALYZER_LIMIT_MAX_RATIO": "50"}).max_ratio == 50.0
    p = put(tmp_path / "t.json", kineto_doc())
    with using(Limits(max_events=2)), pytest.raises(BadInputError, match="max_events"):
        analyze([p])
    res = cli("analyze", str(p), "--limit", "max_events=2")
    assert res.returncode == 2 and "t.json" in res.stderr and "max_events" in res.stderr


# ------------------------------------------------------------------------------------------
# bounded memory: 1 GiB inside ~1 MB gzip files (peak RSS of a subprocess)
# ------------------------------------------------------------------------------------------

# peak RSS of this process image: VmHWM (ru_maxrss would keep the forking parent's size)
_RSS = (
    "import re, sys\n"
    "from analyzer.cli import main\n"
    "rc = main(sys.argv[1:])\n"
    "hwm = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)\n"
    "sys.stderr.write('\\nMAXRSS_KB %s\\n' % hwm)\n"
    "sys.exit(rc)\n"
)
RSS_CEILING_MB = 600  # the interpreter with numpy/pandas alone is ~120 MB


def _rss_run(path: Path, env: dict[str, str] | None = None) -> tuple[int, float, str]:
    res = subprocess.run(
        [sys.executable, "-c", _RSS, "analyze", str(path), "-f", "json"], capture_output=True,
        text=True, timeout=300, cwd=REPO, env={**os.environ, **(env or {})}, check=False,
    )
    kb = int(res.stderr.rsplit("MAXRSS_KB", 1)[1].split()[0])
    return res.returncode, kb / 1024, res.stderr.split("\nMAXRSS_KB")[0].strip()


@pytest.fixture(scope="module")
def bombs(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bombs")
    return {name: write_bomb(d / f"{name}.json.gz", name) for name in BOMBS}


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_gzip_bombs_refused_in_bounded_memory(bombs, name):
    path = bombs[name]
    assert path.stat().st_size < 2 << 20
    rc, rss_mb, err = _rss_run(path)
    assert rc == 2, err
    assert err.count("\n") == 0 and path.name in err
    assert rss_mb < RSS_CEILING_MB, (name, rss_mb)


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_gzip_bombs_bounded_without_the_ratio_cap(bombs, name):
    """With the ratio check off, the other caps still bound memory (or it streams through)."""
    rc, rss_mb, err = _rss_run(bombs[name], env={"ANALYZER_LIMIT_MAX_RATIO": "1e9"})
    assert rc in (0, 2), err
    assert rss_mb < RSS_CEILING_MB, (name, rss_mb)


def test_zip_bomb_refused_by_the_cli(tmp_path):
    import zipfile

    z = tmp_path / "bomb.zip"
    with zipfile.ZipFile(z, "w", compression=zipfile.ZIP_DEFLATED) as zf, zf.open("t.json", "w") as fh:
        fh.write(b'{"traceEvents":[' + dumps(event()) + b"]")
        for _ in range(64):
            fh.write(b" " * (1 << 20))
        fh.write(b"}")
    res = cli("analyze", str(z))
    assert res.returncode == 2 and "bomb.zip" in res.stderr and "zip bomb" in res.stderr


# ------------------------------------------------------------------------------------------
# Nsight: odd values, missing tables, huge rowids
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nsys_base(tmp_path_factory) -> Path:
    from test_nsys import modern_two_gpu

    return modern_two_gpu(tmp_path_factory.mktemp("nsys") / "base.sqlite")


NSYS_CASES: dict[str, tuple[tuple, ...]] = {
    "nonutf8_string": (("UPDATE StringIds SET value = ? WHERE id = 1", (b"\xff\xfe bad",)),),
    "gpu_id_text": (("UPDATE TARGET_INFO_GPU SET id = 'abc'",),),
    "gpu_fields_text": (("UPDATE TARGET_INFO_GPU SET totalMemory = 'x', smCount = 'y'",),),
    "globalpid_empty": (("UPDATE CUPTI_ACTIVITY_KIND_KERNEL SET globalPid = ''",),),
    "processes_globalpid_empty": (("UPDATE PROCESSES SET globalPid = ''",),),
    "no_stringids": (("DROP TABLE StringIds",),),
    "rowid_9e18": (("UPDATE CUPTI_ACTIVITY_KIND_KERNEL SET rowid = 9000000000000000000 WHERE rowid = 1",),),
    "rowid_negative": (("UPDATE CUPTI_ACTIVITY_KIND_KERNEL SET rowid = -9000000000000000000 WHERE rowid = 1",),),
    "start_int64_max": (("UPDATE CUPTI_ACTIVITY_KIND_KERNEL SET start = 9223372036854775807 WHERE rowid = 1",),),
    "start_1e308": (("UPDATE CUPTI_ACTIVITY_KIND_KERNEL SET start = 1e308 WHERE rowid = 1",),),
    "span_overflow": ((
        ("UPDATE CUPTI_ACTIVITY_KIND_KERNEL SET start = -9223372036854775807, "
         "end = 9223372036854775807 WHERE rowid = 1"),
    ),),
    "span_146_years": (("UPDATE CUPTI_ACTIVITY_KIND_KERNEL SET start = -1000000000000000000 WHERE rowid = 1",),
                       (("UPDATE CUPTI_ACTIVITY_KIND_KERNEL SET start = 4000000000000000000, "
                         "end = 4000000000000000100 WHERE rowid = 2"),)),
    "device_huge": (("UPDATE CUPTI_ACTIVITY_KIND_KERNEL SET deviceId = 9223372036854775807",),),
    "stream_huge": (("UPDATE CUPTI_ACTIVITY_KIND_KERNEL SET streamId = 9223372036854775807",),),
    "bytes_huge": (("UPDATE CUPTI_ACTIVITY_KIND_MEMCPY SET bytes = 9223372036854775807",),),
    "session_start_text": (("UPDATE TARGET_INFO_SESSION_START_TIME SET utcEpochNs = 'soon'",),),
    "session_start_1e300": (("UPDATE TARGET_INFO_SESSION_START_TIME SET utcEpochNs = 1e300",),),
    "enum_garbage": (("CREATE TABLE ENUM_NSYS_EVENT_TYPE (id TEXT, name BLOB, label INT)",),
                     ("INSERT INTO ENUM_NSYS_EVENT_TYPE VALUES ('x', x'ff', 3)",)),
    "stringids_no_value": (("ALTER TABLE StringIds RENAME COLUMN value TO v",),),
}


@pytest.mark.parametrize("case", sorted(NSYS_CASES))
def test_nsys_odd_exports(tmp_path, nsys_base, case):
    import time

    p = tmp_path / f"{case}.sqlite"
    shutil.copy(nsys_base, p)
    con = sqlite3.connect(p)
    for stmt in NSYS_CASES[case]:
        con.execute(*stmt)
    con.commit()
    con.close()
    t0 = time.monotonic()
    got = outcome(p)
    assert time.monotonic() - t0 < 30
    assert got == "ok" or p.name in got, got


def test_fifo_and_device_inputs_refused_without_blocking(tmp_path):
    fifo = tmp_path / "trace.json"
    os.mkfifo(fifo)
    for target in (fifo, Path("/dev/zero")):
        res = cli("analyze", str(target), timeout=30)
        assert res.returncode == 2, res.stderr
        assert str(target) in res.stderr and "regular file" in res.stderr


# ------------------------------------------------------------------------------------------
# -o PATH
# ------------------------------------------------------------------------------------------


@pytest.fixture
def small_trace(tmp_path) -> Path:
    return put(tmp_path / "rank0.json", kineto_doc())


def test_output_regular_file_keeps_its_mode(tmp_path, small_trace):
    out = tmp_path / "report.json"
    out.write_text("old")
    out.chmod(0o640)
    assert cli("analyze", str(small_trace), "-f", "json", "-o", str(out)).returncode == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o640
    json.loads(out.read_text())
    assert not list(tmp_path.glob(".report.json.*"))


def test_output_symlink_followed(tmp_path, small_trace):
    real = tmp_path / "real.txt"
    real.write_text("old")
    link = tmp_path / "link.txt"
    link.symlink_to(real)
    assert cli("analyze", str(small_trace), "-o", str(link)).returncode == 0
    assert link.is_symlink() and "trace-analyzer" in real.read_text()


def test_output_device_written_through(small_trace):
    assert cli("analyze", str(small_trace), "-o", "/dev/null").returncode == 0
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


@pytest.mark.parametrize("kind", ["fifo", "input", "directory", "missing_dir", "proc"])
def test_output_refused(tmp_path, small_trace, kind):
    target = {
        "fifo": tmp_path / "out.fifo",
        "input": small_trace,
        "directory": tmp_path,
        "missing_dir": tmp_path / "nope" / "r.txt",
        "proc": Path("/proc/version"),
    }[kind]
    if kind == "fifo":
        os.mkfifo(target)
    before = small_trace.read_bytes()
    res = cli("analyze", str(small_trace), "-o", str(target), timeout=30)
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().count("\n") == 0 and "cannot write" in res.stderr
    assert small_trace.read_bytes() == before
    assert not [p for p in tmp_path.rglob(".*.tmp")]


# ------------------------------------------------------------------------------------------
# secrets
# ------------------------------------------------------------------------------------------

SECRETS = (
    "hf_AbCdEfGhIjKlMnOpQrStUvWxYz012345",
    "sk-proj-1234567890abcdefGHIJKLMN",
    "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
    "AKIAIOSFODNN7EXAMPLE",
    "Bearer eyJhbGciOiJIUzI1NiJ9secretbearer",
    "plain-admin-password-42",
    "my-api-key-value-zzz",
)


def _plant(folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    put(folder / "p-TP-0.trace.json", kineto_doc(
        event(ts=50.0, name=f"kernel_{SECRETS[2]}"),
        traceName=f"run with {SECRETS[0]}", hf_token=SECRETS[0],
        distributedInfo={"rank": 0, "world_size": 1, "auth": SECRETS[5]},
    ))
    (folder / "server_args.json").write_text(json.dumps({
        "model_path": "meta-llama/Llama-3.1-8B", "tp_size": 1, "api_key": SECRETS[6],
        "admin_api_key": SECRETS[5], "hf_token": SECRETS[0], "served_model_name": SECRETS[1],
        "nested": {"aws_secret_access_key": "x" * 20, "id": SECRETS[3]},
        "extra_headers": f"Authorization: {SECRETS[4]}",
    }))
    metrics = folder / "metrics.prom"
    metrics.write_text(
        "# TYPE sglang:num_running_reqs gauge\n"
        f'sglang:num_running_reqs{{model_name="{SECRETS[1]}",api_key="{SECRETS[6]}"}} 1\n'
    )
    return folder, metrics


def test_no_secret_in_any_report_format(tmp_path):
    folder, metrics = _plant(tmp_path / "cap")
    for fmt in FORMATS:
        out = tmp_path / f"r.{fmt}"
        res = cli("analyze", str(folder), "-f", fmt, "-o", str(out), "--metrics", str(metrics))
        assert res.returncode == 0, res.stderr
        text = out.read_text() + res.stderr
        for s in SECRETS:
            assert s not in text, (fmt, s)
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["server_args"]["api_key"] == "[REDACTED]"
    assert doc["server_args"]["tp_size"] == 1


def test_no_secret_in_app_downloads(tmp_path):
    from analyzer.webapp import build_page, run_analysis

    folder, _ = _plant(tmp_path / "cap")
    doc = run_analysis([folder])
    page = build_page(doc, stem="r")
    blobs = [d.data if isinstance(d.data, (str, bytes)) else d.data() for d in page.downloads]
    for blob in blobs:
        text = blob.decode("utf-8", "replace") if isinstance(blob, bytes) else blob
        for s in SECRETS:
            assert s not in text


def test_collect_writes_no_secret(tmp_path):
    pytest.importorskip("torch")
    from fake_sglang_server import FakeSGLangServer

    from analyzer.cli import main

    class Leaky(FakeSGLangServer):
        def server_info(self):
            return {**super().server_info(), "api_key": SECRETS[6], "hf_token": SECRETS[0],
                    "admin_api_key": SECRETS[5]}

        def metrics_text(self):
            return super().metrics_text() + f'sglang:leak{{api_key="{SECRETS[6]}",t="{SECRETS[0]}"}} 1\n'

    srv = Leaky(tp_size=1)
    srv.start()
    try:
        out = tmp_path / "prof"
        rc = main(["collect", "--url", srv.url, "--num-steps", "2", "-o", str(out),
                   "--poll", "0.05", "--timeout", "60"])
    finally:
        srv.stop()
    assert rc == 0
    assert not (out / "CAPTURE_INCOMPLETE").exists()
    for f in out.iterdir():
        if f.suffix in (".json", ".prom"):
            text = f.read_text()
            for s in SECRETS:
                assert s not in text, (f.name, s)


# ------------------------------------------------------------------------------------------
# untrusted strings in their sinks
# ------------------------------------------------------------------------------------------

EVIL_NAME = ("k\x1b]8;;http://evil.example/\x07click\x1b]8;;\x07\x1b[2J![x](http://evil.example/p.png)"
             "<img src=x></script><script>alert(1)</script>")


def test_names_escaped_for_terminal_and_markdown(tmp_path):
    p = put(tmp_path / "t.json", kineto_doc(event(ts=60.0, dur=500.0, name=EVIL_NAME),
                                            deviceProperties=[{"id": 0, "name": "[GPU](http://evil.example)"}]))
    (tmp_path / "server_args.json").write_text(json.dumps({"model_path": "![m](http://evil.example/m.png)"}))
    text = cli("analyze", str(p)).stdout
    assert "\x1b" not in text and "\x07" not in text
    md = cli("analyze", str(p), "-f", "markdown").stdout
    assert not re.search(r"(?<!\\)\]\(", md)  # no live [text](url) or ![img](url)
    assert not re.search(r"(?<!\\)<img", md) and "http://evil" not in md
    html = cli("analyze", str(p), "-f", "html").stdout
    assert "<script>alert(1)" not in html and "<img src=x></script>" not in html


def test_error_line_with_newline_and_escape_in_file_name(tmp_path):
    p = tmp_path / "bad\nname\x1b[31m.json"
    p.write_text('{"traceEvents": [')
    res = cli("analyze", str(p))
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and "\x1b" not in res.stderr
    assert "bad\\nname\\x1b[31m.json" in res.stderr


# ------------------------------------------------------------------------------------------
# unreadable ranks, incomplete captures
# ------------------------------------------------------------------------------------------


def test_bad_rank_fails_unless_skipped(tmp_path):
    folder = tmp_path / "cap"
    folder.mkdir()
    put(folder / "p-TP-0.trace.json", kineto_doc())
    (folder / "p-TP-1.trace.json").write_text('{"traceEvents": [{"ph": "X", "ts": 1')
    res = cli("analyze", str(folder))
    assert res.returncode == 2 and "p-TP-1.trace.json" in res.stderr and "--skip-bad-ranks" in res.stderr
    ok = cli("analyze", str(folder), "--skip-bad-ranks")
    assert ok.returncode == 0, ok.stderr
    head = ok.stdout.split("Findings")[0]
    assert "warning:" in head and "p-TP-1.trace.json" in head


def test_incomplete_capture_warns(tmp_path):
    folder = tmp_path / "cap"
    folder.mkdir()
    put(folder / "p-TP-0.trace.json", kineto_doc())
    (folder / "CAPTURE_INCOMPLETE").write_text("capture started and not finished\n")
    res = cli("analyze", str(folder), "-f", "json")
    assert res.returncode == 0
    assert any("incomplete" in w for w in json.loads(res.stdout)["warnings"])


def test_nsys_export_cache_is_pruned(tmp_path, monkeypatch):
    import time

    from analyzer.readers.nsys_export import prune_cache

    now = time.time()
    for name, age_days, size in [("old", 40, 10), ("lru", 1, 10), ("x.partial-1", 2, 5), ("new", 0, 10)]:
        p = tmp_path / f"{name}.sqlite"
        p.write_bytes(b"x" * size)
        os.utime(p, (now - age_days * 86400,) * 2)
    monkeypatch.setenv("TRACE_ANALYZER_NSYS_CACHE_MAX_BYTES", "15")
    prune_cache(tmp_path, keep=tmp_path / "new.sqlite", now=now)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.sqlite"]


def test_app_upload_caps_cover_gzip(bombs):
    """The app reads a .json.gz upload under its own caps (not only zips)."""
    from analyzer.webapp import Limits as UploadLimits
    from analyzer.webapp import Upload, prepared_inputs, run_analysis
    from analyzer.webapp.uploads import reader_limits

    path = bombs["whitespace_in_events"]
    limits = UploadLimits.from_upload_mb(8)  # extracted/decompressed at most 64 MiB
    with prepared_inputs([Upload(path.name, path.read_bytes())], limits) as paths, \
            reader_limits(limits), pytest.raises(BadInputError, match="whitespace_in_events"):
        run_analysis(paths)
