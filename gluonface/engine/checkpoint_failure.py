"""A checkpoint that could not be written: say which path, why, what is still safe, and the fix.

The errors come in three shapes: Python's ``OSError`` (ENOSPC, EDQUOT, EFBIG from ``ulimit -f``, EROFS,
EACCES...), MXNet's ``MXNetError`` from dmlc-core (``FileStream.Write incomplete``, no errno), and a file
MXNet cut short without any error (``TruncatedFile``, found by ``params_file``). All become one
``GluonFaceError`` (the ``--resume auto`` advice holds because nothing of the failed checkpoint is
published: ``latest`` still names the previous one).
"""
import errno
import os

from gluonface.errors import GluonFaceError


class TruncatedFile(OSError):
    """An NDArray file shorter than its own headers say (MXNet's unchecked last write)."""


_SPACE = (errno.ENOSPC, errno.EDQUOT)


def _reason(exc):
    """(why, fix) for a write failure, or None when ``exc`` is not one."""
    space_fix = ("free space on that file system (`df -h`), lower train.keep_checkpoints or point "
                 "train.run_dir at a larger disk")
    if isinstance(exc, TruncatedFile):
        return (f"{exc}: the disk is full, a quota is exhausted or the file-size limit (`ulimit -f`) was hit, "
                "and MXNet does not report its last failed write", space_fix + ", or raise `ulimit -f`")
    if isinstance(exc, OSError) and exc.errno is not None:
        why = f"{os.strerror(exc.errno)} ({errno.errorcode.get(exc.errno, exc.errno)})"
        if exc.errno in _SPACE:
            return why, space_fix
        if exc.errno == errno.EFBIG:
            return why, "raise the file-size limit of the training processes (`ulimit -f unlimited`)"
        return why, "make the run directory writable by the training processes"
    text = str(exc)
    if type(exc).__name__ == "MXNetError" and ("Write incomplete" in text or "fwrite" in text):
        return ("MXNet could not write the file (FileStream.Write incomplete): the disk is full or the "
                "file-size limit was hit", space_fix + ", or raise `ulimit -f`")
    return None


def write_failure(exc, path, name, previous):
    """A ``GluonFaceError`` for checkpoint ``name`` that failed while writing ``path`` (``previous``: the
    name ``latest`` still holds, or None), or None if ``exc`` is not a write failure (then it should
    propagate unchanged)."""
    reason = _reason(exc)
    if reason is None:
        return None
    why, fix = reason
    path = getattr(exc, "filename", None) or path
    safe = (f"the previous checkpoint {previous} is intact and `latest` still names it" if previous
            else "no earlier checkpoint exists")
    return GluonFaceError(f"could not write checkpoint {name} to {path}: {why}; nothing of it was published "
                          f"({safe}); fix: {fix}, then continue with --resume auto")
