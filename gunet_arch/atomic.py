"""The one way this package writes a file: a temporary name in the same folder, flushed and
fsynced, renamed over the final name, then the folder fsynced. A crash or kill never leaves a
truncated file under the final name, and once the call returns the file survives a power cut."""
import contextlib
import os
import tempfile


def _fsync(path, flags):
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_folder(folder):
    """Make renames and new names in ``folder`` durable (POSIX only: Windows opens no folder)."""
    if os.name == 'posix':
        _fsync(folder, os.O_RDONLY)


def _new_file_mode():
    """What ``open()`` gives a new file: 0666 less the umask. mkstemp's 0600 would hide
    checkpoints and results from the rest of a group on a shared cluster."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path in the same folder as ``path``; it replaces ``path`` only when the
    block finishes without an exception, and is removed otherwise. Close what you write to it
    inside the block. The temporary name keeps the extension so writers that choose a format by
    extension (cv2.imwrite) still work."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    stem, ext = os.path.splitext(os.path.basename(path))
    fd, tmp = tempfile.mkstemp(prefix=f'.{stem}.', suffix=f'.partial{ext}', dir=folder)
    os.close(fd)
    os.chmod(tmp, _new_file_mode())
    try:
        yield tmp
        _fsync(tmp, os.O_RDWR)  # read-write: Windows fsyncs no read-only handle
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise
    fsync_folder(folder)


def atomic_write_bytes(path, data):
    with atomic_path(path) as tmp, open(tmp, 'wb') as f:
        f.write(data)


def atomic_torch_save(obj, path):
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
