"""The public API is pinned: changing it is a deliberate act (update this test and the docs)."""

from __future__ import annotations

import subprocess
import sys

import analyzer


def test_public_names():
    assert sorted(analyzer.__all__) == sorted([
        "__version__", "analyze", "load", "Report", "Finding", "Trace", "TraceSet",
        "BadInputError", "validate_report",
    ])
    for name in analyzer.__all__:
        assert hasattr(analyzer, name)


def test_core_imports_without_optional_extras():
    """The library imports without streamlit, torch or HTA (they are extras)."""
    code = (
        "import sys\n"
        "for m in ('streamlit', 'torch', 'hta'):\n"
        "    sys.modules[m] = None\n"
        "import analyzer, analyzer.cli, analyzer.render\n"
        "analyzer.cli.build_parser()\n"
        "print('ok')\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ok"
