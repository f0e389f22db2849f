"""Uploaded files: size limits, a content-hash cache key, a temporary workspace, safe zips.

The app hands the browser's uploads (name + bytes) to :func:`prepared_inputs`, which checks
the sizes, writes the files into a fresh temporary directory, extracts ``.zip`` archives
there with the app's own caps (member count, total uncompressed bytes counted while writing,
compression ratio, no absolute names, ``..`` or symlinks), yields the paths to analyse, and
removes the directory afterwards, whatever happens.

    >>> limits = Limits.from_upload_mb(1024)                     # server.maxUploadSize
    >>> key = content_key([Upload("a.json.gz", data)])           # doctest: +SKIP
    >>> with prepared_inputs([Upload("a.json.gz", data)], limits) as paths:   # doctest: +SKIP
    ...     report = analyze(paths)
"""

from __future__ import annotations

import hashlib
import re
import shutil
import tempfile
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any

from ..model import BadInputError
from ..readers import archive

#: Extensions the uploader accepts (``.json.gz`` arrives as ``gz``; Nsight: ``.sqlite``).
UPLOAD_TYPES: tuple[str, ...] = ("json", "gz", "sqlite", "zip", "nsys-rep")
TRACE_SUFFIXES: tuple[str, ...] = (".json", ".json.gz", ".sqlite", ".zip", ".nsys-rep")
MB = 1 << 20
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._+=@-]+")


@dataclass(frozen=True)
class Limits:
    """Caps on what one analysis may upload.

    ``max_upload_bytes``: all uploads together (Streamlit's ``server.maxUploadSize`` caps
    each file; this caps their sum). Zip archives: at most ``max_zip_members`` members,
    ``max_unzipped_bytes`` in all once extracted, and no member whose compression ratio
    exceeds ``max_zip_ratio`` (JSON traces compress 5-30x; zip bombs 1000x).
    """

    max_upload_bytes: int
    max_unzipped_bytes: int
    max_zip_members: int = 2000
    max_zip_ratio: float = 100.0

    @classmethod
    def from_upload_mb(cls, upload_mb: float, *, unzip_factor: int = 8) -> Limits:
        """Limits from ``server.maxUploadSize`` (MB): extracted zips may be ``unzip_factor``x."""
        up = int(float(upload_mb) * MB)
        return cls(max_upload_bytes=up, max_unzipped_bytes=up * unzip_factor)


def reader_limits(limits: Limits) -> AbstractContextManager[Any]:
    """Run the readers with caps no looser than the app's (``readers/limits.py``): every
    format, not only zips, is bounded by the extracted-size cap and the ratio cap, so one
    small .json.gz cannot take the server's memory."""
    from ..readers.limits import active, using

    base = active()
    return using(replace(
        base,
        max_input_bytes=min(base.max_input_bytes, limits.max_unzipped_bytes),
        max_zip_bytes=min(base.max_zip_bytes, limits.max_unzipped_bytes),
        max_zip_members=min(base.max_zip_members, limits.max_zip_members),
        max_ratio=min(base.max_ratio, limits.max_zip_ratio),
        max_events=min(base.max_events, max(1_000_000, limits.max_unzipped_bytes // 40)),
    ))


@dataclass(frozen=True)
class Upload:
    """One uploaded file: its name in the browser and its bytes."""

    name: str
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'; binary units, as Streamlit's upload limit is in MiB."""
    for unit, div in (("GiB", 1 << 30), ("MiB", MB), ("KiB", 1 << 10)):
        if abs(n) >= div:
            return f"{n / div:.1f} {unit}"
    return f"{int(n)} B"


def content_key(uploads: Iterable[Upload], *extra: object) -> str:
    """SHA-256 over the uploads' names and bytes (order-independent) plus ``extra`` options.

    The same files give the same key in any order, so the analysis is cached across reruns;
    a changed byte or option gives a new key.
    """
    h = hashlib.sha256(b"trace-analyzer-upload-v1")
    for up in sorted(uploads, key=lambda u: (u.name, hashlib.sha256(u.data).digest())):
        h.update(len(up.name).to_bytes(4, "little") + up.name.encode())
        h.update(len(up.data).to_bytes(8, "little"))
        h.update(up.data)
    for x in extra:
        h.update(b"\0" + repr(x).encode())
    return h.hexdigest()


def check_sizes(uploads: Sequence[Upload], limits: Limits) -> None:
    """Raise BadInputError when nothing was uploaded, a file is empty, or the sum is too big."""
    if not uploads:
        raise BadInputError("no file uploaded")
    total = sum(u.size for u in uploads)
    if total > limits.max_upload_bytes:
        raise BadInputError(
            f"the uploads total {human_bytes(total)}, over the {human_bytes(limits.max_upload_bytes)} "
            "limit (server.maxUploadSize in .streamlit/config.toml); analyse big captures with the "
            "CLI: trace-analyzer analyze PATH --format html -o report.html"
        )
    for u in uploads:
        if u.size == 0:
            raise BadInputError(f"{u.name}: the file is empty")
        if not u.name.lower().endswith(TRACE_SUFFIXES) and u.name.lower() != "server_args.json":
            raise BadInputError(
                f"{u.name}: not a trace file (expected .json, .json.gz, .sqlite, .nsys-rep or .zip)"
            )


def safe_filename(name: str) -> str:
    """The base name of an uploaded file with odd characters replaced (keeps rank naming)."""
    base = PurePosixPath(name.replace("\\", "/")).name
    base = _SAFE_NAME.sub("_", base).lstrip(".")
    return base or "upload"


def check_zip(path: Path, limits: Limits) -> list[zipfile.ZipInfo]:
    """The members of a zip archive, checked against the app's limits (readers/archive.py)."""
    return archive.check_zip(path, max_members=limits.max_zip_members,
                             max_total_bytes=limits.max_unzipped_bytes, max_ratio=limits.max_zip_ratio)


def extract_zip(path: Path, dest: Path, limits: Limits) -> Path:
    """Extract a checked archive under ``dest`` with the app's limits; returns the folder."""
    return archive.extract_zip(path, dest, max_members=limits.max_zip_members,
                               max_total_bytes=limits.max_unzipped_bytes, max_ratio=limits.max_zip_ratio)


@contextmanager
def workspace(prefix: str = "trace-analyzer-upload-") -> Iterator[Path]:
    """A fresh temporary directory, removed on exit (also after an error)."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class PreparedPaths(list):
    """The paths to analyse (a list) and the ``pairs`` that map their server paths back to
    the uploaded names (:func:`scrub`)."""

    pairs: list[tuple[str, str]] = []


@contextmanager
def prepared_inputs(uploads: Sequence[Upload], limits: Limits) -> Iterator[list[Path]]:
    """Write ``uploads`` into a temporary directory and yield the paths to analyse.

    Plain traces are written under their own (sanitised) names, so SGLang's
    ``-TP-<n>-PP-<m>`` rank naming and a ``server_args.json`` beside them still work; a name
    uploaded twice goes into its own sub-folder. A ``.zip`` is extracted (checked, capped) and
    its folder is analysed. Everything is removed when the ``with`` block ends. A
    ``BadInputError`` raised inside the block comes out with the server paths replaced by the
    uploaded names (:func:`scrub`).
    """
    check_sizes(uploads, limits)
    with workspace() as tmp:
        files_dir = tmp / "files"
        files_dir.mkdir()
        paths: list[Path] = []
        loose: list[Path] = []
        used: set[str] = set()
        for i, up in enumerate(uploads):
            name = safe_filename(up.name)
            folder = files_dir if name not in used else files_dir / f"dup{i}"
            used.add(name)
            folder.mkdir(exist_ok=True)
            target = folder / name
            target.write_bytes(up.data)
            if name.lower().endswith(".zip"):
                paths.append(extract_zip(target, tmp / f"zip{i}", limits))
                target.unlink()
            elif name.lower() == "server_args.json":
                continue  # found beside the traces by the readers
            else:
                loose.append(target)
        if loose and not paths and all(p.parent == files_dir for p in loose):
            paths.append(files_dir)  # one folder: rank discovery and server_args.json as on disk
        else:
            paths.extend(loose)
        pairs = display_names(uploads, tmp)
        out = PreparedPaths(paths)
        out.pairs = pairs
        try:
            yield out
        except BadInputError as exc:  # name the uploaded file, never the server's temp path
            raise BadInputError(str(scrub(str(exc), pairs))) from None


def display_names(uploads: Sequence[Upload], root: Path) -> list[tuple[str, str]]:
    """``(server path prefix, what the user knows it as)`` pairs, longest prefix first, for
    :func:`scrub`: the workspace layout of :func:`prepared_inputs` mapped back to the names
    the files had in the browser (a zip member reads ``archive.zip!member``)."""
    pairs: list[tuple[str, str]] = []
    for i, up in enumerate(uploads):
        pairs.append((str(root / f"zip{i}") + "/", f"{up.name}!"))
        pairs.append((str(root / "files" / f"dup{i}") + "/", ""))
    pairs.append((str(root / "files") + "/", ""))
    pairs.append((str(root / "files"), "the uploaded files"))
    pairs.append((str(root), "the uploads"))
    return sorted(pairs, key=lambda p: -len(p[0]))


def scrub(value: object, pairs: Sequence[tuple[str, str]]) -> object:
    """``value`` (a string, or a report dict/list holding strings) with every server path of
    the upload workspace replaced by the file's upload name: no server path reaches the page."""
    if isinstance(value, str):
        for prefix, name in pairs:
            value = value.replace(prefix, name)
        return value
    if isinstance(value, dict):
        return {k: scrub(v, pairs) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v, pairs) for v in value]
    return value
