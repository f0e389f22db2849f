"""Kernel names are matched in one place only: analyzer/classify (rules as data).

Anywhere else, a test like ``"nccl" in name`` or ``name.startswith("flash")`` is a second,
drifting copy of the taxonomy. This test walks the source (AST) and forbids it.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "analyzer"
ALLOWED = {"classify", "synthetic"}  # the rules themselves; the generator writes names
FRAGMENTS = ("nccl", "rccl", "flash", "gemm", "cutlass", "nvjet", "cublas", "xmma", "cijk",
             "batchdecode", "batchprefill", "paged_attention", "fused_moe", "allreduce",
             "all_reduce", "kvcache", "kv_cache_kernel", "triton_")
MATCH_CALLS = {"startswith", "endswith", "contains", "match", "search", "fullmatch", "find"}


def _kernelish(node: ast.AST) -> bool:
    return (isinstance(node, ast.Constant) and isinstance(node.value, str)
            and any(f in node.value.lower() for f in FRAGMENTS))


def offending(tree: ast.AST) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and _kernelish(node.left) and any(
            isinstance(op, (ast.In, ast.NotIn)) for op in node.ops
        ):
            lines.append(node.lineno)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr in MATCH_CALLS and node.args and _kernelish(node.args[0])):
            lines.append(node.lineno)
    return lines


def test_no_kernel_name_matching_outside_classify():
    bad = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] in ALLOWED:
            continue
        for line in offending(ast.parse(path.read_text(), filename=str(path))):
            bad.append(f"{rel}:{line}")
    assert not bad, "kernel-name matching outside analyzer/classify: " + ", ".join(bad)


def test_the_check_catches_it():
    assert offending(ast.parse('x = "ncclKernel" in name or name.startswith("flash_fwd")')) == [1, 1]
