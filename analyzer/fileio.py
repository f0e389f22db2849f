"""Writing output files safely: whole or not at all, into the existing file's place.

``write_atomically(path, text)`` (the CLI's ``-o``, ``plan -o``, calibration files):

* a regular file is replaced atomically (temp file in the same folder + rename), keeping
  its permission bits (and owner, when allowed); a new file gets ``0666 & ~umask``;
* a symlink is followed: its target is written (the link stays a link);
* a character or block device (``/dev/null``, ``/dev/stdout``) is written through, never
  replaced by a regular file;
* a FIFO or socket, a directory, one of ``inputs`` (the trace being analysed), a folder
  that does not exist or cannot be written raise ``BadInputError`` (exit 2, one line);
* on any failure no temp file is left and an existing file is untouched.

A regular file with several hard links is rewritten in place (the links stay one file):
that write is not atomic.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path

from .errors import BadInputError


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _same_file(a: Path, b: str | Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def write_atomically(path: Path, text: str, *, inputs: Iterable[str | Path] = ()) -> None:
    """Write ``text`` to ``path`` safely (see the module docstring); ``BadInputError`` if not."""
    shown = os.fspath(path)
    target = Path(os.path.realpath(path))  # follow symlinks (the link itself stays)
    try:
        st = os.stat(target)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise BadInputError(f"cannot write {shown!r}: {exc.strerror or exc}") from None
    data = text.encode("utf-8")
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            raise BadInputError(f"cannot write {shown!r}: it is a directory")
        if stat.S_ISFIFO(st.st_mode) or stat.S_ISSOCK(st.st_mode):
            raise BadInputError(f"cannot write {shown!r}: it is a FIFO or socket, not a file")
        if any(_same_file(target, p) for p in inputs):
            raise BadInputError(f"cannot write {shown!r}: it is one of the input files")
        if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            _write_through(target, data, shown)
            return
        if st.st_nlink > 1:
            _write_through(target, data, shown)
            return
    directory = target.parent
    if not directory.is_dir():
        raise BadInputError(f"cannot write {shown!r}: folder {str(directory)!r} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise BadInputError(f"cannot write {shown!r}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if st is not None:
            os.chmod(tmp, stat.S_IMODE(st.st_mode))
            if hasattr(os, "chown") and (st.st_uid, st.st_gid) != (os.getuid(), os.getgid()):
                try:
                    os.chown(tmp, st.st_uid, st.st_gid)
                except OSError:
                    pass  # not allowed: the replacement is ours
        else:
            os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise BadInputError(f"cannot write {shown!r}: {exc.strerror or exc}") from None
        raise


def _write_through(target: Path, data: bytes, shown: str) -> None:
    """Write into an existing device or multiply linked file without replacing it."""
    try:
        flags = os.O_WRONLY | (os.O_TRUNC if target.is_file() else 0)
        fd = os.open(target, flags)
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                if n <= 0:
                    raise OSError(errno.EIO, "short write")
                view = view[n:]
        finally:
            os.close(fd)
    except OSError as exc:
        raise BadInputError(f"cannot write {shown!r}: {exc.strerror or exc}") from None
