"""Safe extraction of a ``.zip`` of traces into a temporary directory.

Rejected (``BadInputError``): absolute member names, ``..`` components, symlinks, more than
``MAX_MEMBERS`` members, or more than ``MAX_TOTAL_BYTES`` uncompressed (counted while
writing, so a member that lies about its size is caught too).

    >>> with extracted_zip(Path("traces.zip")) as root:      # doctest: +SKIP
    ...     files = sorted(root.rglob("*"))
"""

from __future__ import annotations

import shutil
import stat
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from analyzer.model import BadInputError

__all__ = ["MAX_MEMBERS", "MAX_TOTAL_BYTES", "ZIP_MAGIC", "check_zip", "extract_zip", "extracted_zip"]

ZIP_MAGIC = b"PK\x03\x04"
MAX_MEMBERS = 10_000
MAX_TOTAL_BYTES = 64 << 30  # 64 GiB uncompressed
_COPY_BLOCK = 1 << 20
_RATIO_MIN_BYTES = 10 << 20  # small members may compress well without being bombs


def _safe_name(zip_name: str, member: zipfile.ZipInfo) -> PurePosixPath:
    name = member.filename.replace("\\", "/")
    p = PurePosixPath(name)
    if name.startswith("/") or (len(name) > 1 and name[1] == ":") or p.is_absolute():
        raise BadInputError(f"{zip_name}: unsafe member name {member.filename!r} (absolute path)")
    if any(part == ".." for part in p.parts):
        raise BadInputError(f"{zip_name}: unsafe member name {member.filename!r} (path traversal)")
    mode = member.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise BadInputError(f"{zip_name}: member {member.filename!r} is a symlink")
    return p


def check_zip(
    path: Path, *, max_members: int, max_total_bytes: int, max_ratio: float | None = None
) -> list[zipfile.ZipInfo]:
    """The members of a zip archive, after checking names, count, declared sizes and (for
    members over 10 MB) the compression ratio: JSON traces compress 5-30x, zip bombs 1000x."""
    try:
        with zipfile.ZipFile(path) as zf:
            members = zf.infolist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise BadInputError(f"{path.name}: not a readable zip archive ({exc})") from None
    if len(members) > max_members:
        raise BadInputError(f"{path.name}: too many members ({len(members)} > {max_members})")
    for m in members:
        _safe_name(path.name, m)
        if (max_ratio is not None and m.file_size > _RATIO_MIN_BYTES and m.compress_size > 0
                and m.file_size / m.compress_size > max_ratio):
            raise BadInputError(
                f"{path.name}: member {m.filename!r} expands {m.file_size / m.compress_size:.0f}x "
                f"(over {max_ratio:.0f}x): refusing a possible zip bomb"
            )
    declared = sum(m.file_size for m in members)
    if declared > max_total_bytes:
        raise BadInputError(_too_large(path, max_total_bytes))
    return members


def _too_large(path: Path, limit: int) -> str:
    return (f"{path.name}: too large once extracted (over {limit:,} bytes): "
            "refusing a possible zip bomb")


def extract_zip(
    path: Path, dest: Path, *, max_members: int, max_total_bytes: int,
    max_ratio: float | None = None,
) -> Path:
    """Extract a checked archive under ``dest`` (returned). Bytes are counted while writing,
    so a member that lies about its size is stopped too."""
    members = check_zip(path, max_members=max_members, max_total_bytes=max_total_bytes,
                        max_ratio=max_ratio)
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    written = 0
    try:
        with zipfile.ZipFile(path) as zf:
            for m in members:
                rel = _safe_name(path.name, m)
                target = dest.joinpath(*rel.parts) if rel.parts else dest
                if not target.resolve().is_relative_to(root):
                    raise BadInputError(f"{path.name}: unsafe member name {m.filename!r}")
                if m.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(m) as src, open(target, "wb") as dst:
                    while block := src.read(_COPY_BLOCK):
                        written += len(block)
                        if written > max_total_bytes:
                            raise BadInputError(_too_large(path, max_total_bytes))
                        dst.write(block)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError,
            RuntimeError) as exc:
        raise BadInputError(f"{path.name}: damaged zip archive ({exc})") from None
    return dest


@contextmanager
def extracted_zip(path: Path) -> Iterator[Path]:
    """Extract ``path`` into a fresh temporary directory, yield it, and remove it after."""
    tmp = Path(tempfile.mkdtemp(prefix="trace-analyzer-zip-"))
    try:
        yield extract_zip(path, tmp, max_members=MAX_MEMBERS, max_total_bytes=MAX_TOTAL_BYTES)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
