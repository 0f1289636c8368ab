"""How the processes of a distributed run leave: with the run's own exit status, never SIGABRT.

torch's gloo backend runs collectives on worker threads of its own. When such a thread lets go of
a collective's tensors, a tensor that Python also holds needs the GIL. If the main thread keeps the
GIL from that moment until the interpreter starts to shut down (a rank that leaves right after
its last collective does so on a busy CPU, e.g. a Slurm task with one CPU), the worker only gets
the GIL during the shutdown, and Python 3.11 ends such a thread with ``pthread_exit``. Unwinding
it through torch's C++ code ends in ``std::terminate``: "terminate called without an active
exception", SIGABRT, exit status 134 instead of 0 or 75, and a preempted Slurm job that fails
instead of being requeued.

So when a distributed run is done (it returned, or stopped with ``SystemExit`` such as the
stop-signal exit status 75), its process runs the ``atexit`` handlers (log files flushed and
closed, the run lock released, loader workers stopped), flushes stdout and stderr, and leaves with
``os._exit``: the interpreter is never shut down while torch's threads are alive. Runs without a
process group, and runs that end in an error, leave as Python always does.
"""
import atexit
import contextlib
import os
import sys

import torch.distributed as dist


def _exit_status(code):
    """The status Python itself would leave with for ``SystemExit(code)``."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _leave(status):
    atexit._run_exitfuncs()  # what interpreter shutdown would run first
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.flush()
    os._exit(status)


def _in_process_group():
    return dist.is_available() and dist.is_initialized()


@contextlib.contextmanager
def leave_without_interpreter_shutdown():
    """Around a whole training or test pipeline: once it is done, a process that belongs to a
    process group leaves through ``_leave`` (see the module docstring)."""
    status = 0
    try:
        yield
    except SystemExit as stop:
        if not _in_process_group():
            raise
        status = _exit_status(stop.code)
    if _in_process_group():
        _leave(status)
