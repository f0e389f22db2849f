"""Writing output files safely: whole or not at all."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import BadInputError


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temp file + rename: no partial file on failure."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise BadInputError(f"output directory {directory} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
