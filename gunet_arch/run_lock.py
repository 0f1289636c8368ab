"""One training run per experiment. Two runs writing to one experiment folder would overwrite each
other's checkpoints, and BasicSR would archive (rename) the folder of a run that is still going.

Rank 0 holds an exclusive ``flock`` on ``<experiments root>/.<name>.lock`` for its lifetime; the
file says who holds it. The kernel releases the lock when the process dies, however it dies, so a
lock left by a crashed run is simply taken over. The lock sits beside the experiment folder, not
in it, so BasicSR's archiving of a finished experiment's folder stays as it is.
"""
import atexit
import datetime
import fcntl
import os
import socket

_HELD = {}  # lock path -> open file, for the life of the process


class ExperimentLockedError(RuntimeError):
    """Another process is training this experiment."""


def lock_path(experiment_dir):
    experiment_dir = os.path.abspath(experiment_dir)
    return os.path.join(os.path.dirname(experiment_dir), f'.{os.path.basename(experiment_dir)}.lock')


def acquire(experiment_dir):
    """Lock ``experiment_dir`` for this process (again-safe); ExperimentLockedError names the
    process that holds it. Returns the holder of a stale lock (one whose run crashed) that was
    taken over, else None."""
    path = lock_path(experiment_dir)
    if path in _HELD:
        return None
    os.makedirs(os.path.dirname(path), exist_ok=True)
    f = open(path, 'a+')
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or 'an unknown process'
        f.close()
        raise ExperimentLockedError(
            f'experiment {experiment_dir} is being trained by {holder} (lock {path}); wait for that run to end or '
            'stop it, or give this run another name') from None
    f.seek(0)
    previous = f.read().strip() or None
    f.seek(0)
    f.truncate()
    started = datetime.datetime.now().isoformat(timespec='seconds')
    f.write(f'pid {os.getpid()} on {socket.gethostname()}, started {started}')
    f.flush()
    _HELD[path] = f
    return previous


@atexit.register
def _release_all():
    # An empty lock file tells the next run that this one ended cleanly; the lock itself goes
    # with the process.
    for f in _HELD.values():
        f.truncate(0)
        f.close()
    _HELD.clear()
