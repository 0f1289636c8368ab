"""Stopping a training run cleanly when the cluster asks: SIGTERM (preemption, ``scancel``,
torchrun shutting its workers down), SIGUSR1 (SLURM's ``--signal=USR1@120`` warning before the
time limit) and SIGINT (Ctrl-C).

The handler only records the signal. GUNetModel reads the record at its once-per-iteration
agreement between ranks, so every rank finishes the same iteration, the state of that iteration
is saved, and the run exits with ``PREEMPTED_EXIT_CODE``. A second Ctrl-C stops at once.
"""
import shlex
import signal
import sys
import threading

STOP_SIGNALS = ('SIGTERM', 'SIGUSR1', 'SIGINT')
# sysexits' EX_TEMPFAIL: "try again later", which is what a preempted run asks for.
PREEMPTED_EXIT_CODE = 75


class StopSignals:
    """Records the first stop signal this process receives."""

    def __init__(self):
        self.received = None
        self._previous = {}

    def install(self):
        if threading.current_thread() is not threading.main_thread():
            return self  # Python delivers signals to the main thread only
        for name in STOP_SIGNALS:
            sig = getattr(signal, name, None)
            if sig is not None:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.received is not None and signum == signal.SIGINT:
            signal.signal(signum, self._previous.get(signum, signal.default_int_handler))
            raise KeyboardInterrupt
        self.received = self.received or signal.Signals(signum).name


def resume_command():
    """This run's script and arguments with ``--auto_resume`` (a launcher's own per-rank flag
    left out), for the log line that says how to continue."""
    argv = [a for a in sys.argv if not a.startswith(('--local_rank', '--local-rank'))]
    if '--auto_resume' not in argv:
        argv.append('--auto_resume')
    return shlex.join(argv)
