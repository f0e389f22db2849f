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

__all__ = ["MAX_MEMBERS", "MAX_TOTAL_BYTES", "ZIP_MAGIC", "extracted_zip"]

ZIP_MAGIC = b"PK\x03\x04"
MAX_MEMBERS = 10_000
MAX_TOTAL_BYTES = 64 << 30  # 64 GiB uncompressed
_COPY_BLOCK = 1 << 20


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


@contextmanager
def extracted_zip(path: Path) -> Iterator[Path]:
    """Extract ``path`` into a fresh temporary directory, yield it, and remove it after."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise BadInputError(f"{path.name}: not a readable zip archive ({exc})") from None
    tmp = Path(tempfile.mkdtemp(prefix="trace-analyzer-zip-"))
    try:
        with zf:
            members = zf.infolist()
            if len(members) > MAX_MEMBERS:
                raise BadInputError(
                    f"{path.name}: too many members ({len(members)} > {MAX_MEMBERS})"
                )
            declared = sum(m.file_size for m in members)
            if declared > MAX_TOTAL_BYTES:
                raise BadInputError(
                    f"{path.name}: too large uncompressed ({declared} bytes > {MAX_TOTAL_BYTES})"
                )
            written = 0
            for m in members:
                rel = _safe_name(path.name, m)
                target = tmp.joinpath(*rel.parts) if rel.parts else tmp
                if m.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(m) as src, open(target, "wb") as dst:
                    while block := src.read(_COPY_BLOCK):
                        written += len(block)
                        if written > MAX_TOTAL_BYTES:
                            raise BadInputError(
                                f"{path.name}: too large uncompressed (> {MAX_TOTAL_BYTES} bytes)"
                            )
                        dst.write(block)
        yield tmp
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError) as exc:
        raise BadInputError(f"{path.name}: damaged zip archive ({exc})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
