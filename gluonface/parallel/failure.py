"""How a failing worker of a multi-process job leaves: report the error, then exit at once.

Why not a normal exit: with the parameter-server engine an exception that ends ``train`` is followed by
interpreter shutdown, whose garbage collection destroys the dist kvstore. MXNet 1.9.1's
``KVStoreDist::~KVStoreDist`` first waits for every queued operation and then enters ps-lite's exit
barrier (``Postoffice::Barrier``, seen in gdb), which completes only when every other worker arrives;
they never do, they wait in ``dist_sync`` for this worker's next gradients. So the failed worker never
exited, the launcher (which watches exits) saw nothing, and the whole job hung. Horovod's shutdown at
exit waits for its background thread the same way, only with its own timeout.

So after the error is printed (and sent to the launcher as a ``failed`` heartbeat) the process leaves with
``os._exit``: no destructors, no barriers. Nothing is lost by that: checkpoints are complete or not
published (``gluonface.engine.checkpoint``), the logs are flushed here, and the launcher stops the peers.
"""
import contextlib
import os
import sys
import traceback

from gluonface.errors import GluonFaceError

EXIT_USER_ERROR = 2     # what the CLI returns for a GluonFaceError
EXIT_FAILURE = 1
EXIT_INTERRUPTED = 130


def error_line(exc):
    """The one line that says what went wrong (the last line a traceback would print)."""
    text = str(exc).strip().splitlines()
    last = text[-1] if text else ""
    name = type(exc).__name__
    return f"{name}: {last}" if last else name


def _exit_code(exc):
    if isinstance(exc, GluonFaceError):
        return EXIT_USER_ERROR
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(exc, SystemExit):
        return exc.code if isinstance(exc.code, int) and exc.code else EXIT_FAILURE
    return EXIT_FAILURE


def report_and_exit(exc, heartbeat=None, stream=None):
    """Print ``exc`` like the CLI would (a GluonFaceError without traceback), tell the launcher, exit now."""
    stream = stream or sys.stderr
    try:
        if isinstance(exc, GluonFaceError):
            print(f"error: {exc}", file=stream)
        else:
            traceback.print_exception(type(exc), exc, exc.__traceback__, file=stream)
        sys.stdout.flush()
        stream.flush()
        if heartbeat is not None:
            heartbeat.failed(error_line(exc))
    finally:
        os._exit(_exit_code(exc))


def must_leave_at_once(dist_ctx):
    """Whether a failure of this process has to skip interpreter shutdown (multi-process engines)."""
    return dist_ctx is not None and dist_ctx.engine in ("kvstore", "horovod")


@contextlib.contextmanager
def leave_on_failure(dist_ctx, heartbeat=None):
    """Run the body; if it raises in a multi-process job, report the error and exit the process at once.

    In a single-process (``local``) job the exception propagates as usual."""
    try:
        yield
    except BaseException as exc:
        if not must_leave_at_once(dist_ctx):
            raise
        report_and_exit(exc, heartbeat)
