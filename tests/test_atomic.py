"""gunet_arch/atomic.py: the one safe way to write a file."""
import os

import numpy as np
import pytest
import torch

from gunet_arch.atomic import atomic_path, atomic_torch_save, atomic_write_bytes
from gunet_arch.data.lmdb_store import MARKER_FILE, read_marker, write_marker
from gunet_arch.tools.image_io import write_image


@pytest.fixture
def fsynced(monkeypatch):
    """(device, inode) of everything fsynced, in order."""
    seen, real_fsync = [], os.fsync

    def record(fd):
        st = os.fstat(fd)
        seen.append((st.st_dev, st.st_ino))
        real_fsync(fd)

    monkeypatch.setattr(os, 'fsync', record)
    return seen


def _inode(path):
    st = os.stat(path)
    return st.st_dev, st.st_ino


def test_failed_block_leaves_neither_file_nor_temporary(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / 'out.png') as tmp:
            with open(tmp, 'wb') as f:
                f.write(b'half an image')
            raise RuntimeError('killed mid-write')
    assert os.listdir(tmp_path) == []


def test_old_file_stays_until_the_new_one_is_complete(tmp_path):
    atomic_write_bytes(tmp_path / 'a.csv', b'old')
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / 'a.csv') as tmp:
            with open(tmp, 'wb') as f:
                f.write(b'new')
            raise RuntimeError
    assert (tmp_path / 'a.csv').read_bytes() == b'old'
    atomic_write_bytes(tmp_path / 'a.csv', b'new')
    assert (tmp_path / 'a.csv').read_bytes() == b'new' and os.listdir(tmp_path) == ['a.csv']


def test_temporary_is_in_the_same_folder_with_the_extension(tmp_path):
    with atomic_path(tmp_path / 'sub' / 'net.pth') as tmp:
        assert os.path.dirname(tmp) == str(tmp_path / 'sub')
        assert os.path.basename(tmp).startswith('.net.') and tmp.endswith('.partial.pth')
        assert not (tmp_path / 'sub' / 'net.pth').exists()
        open(tmp, 'wb').close()
    assert os.listdir(tmp_path / 'sub') == ['net.pth']


@pytest.mark.skipif(os.name != 'posix', reason='folders are fsynced on POSIX only')
def test_file_is_fsynced_before_the_rename_and_the_folder_after(tmp_path, fsynced, monkeypatch):
    renamed, real_replace = [], os.replace

    def replace(src, dst):
        renamed.append(len(fsynced))  # how many fsyncs had happened when the rename came
        real_replace(src, dst)

    monkeypatch.setattr(os, 'replace', replace)
    atomic_write_bytes(tmp_path / 'marker.json', b'{}')
    # The temporary becomes the final file, so its inode is the final file's.
    assert fsynced == [_inode(tmp_path / 'marker.json'), _inode(tmp_path)]
    assert renamed == [1]


def test_torch_save_goes_through_it(tmp_path, fsynced):
    atomic_torch_save({'x': torch.zeros(2)}, tmp_path / 'net.pth')
    assert _inode(tmp_path / 'net.pth') in fsynced
    assert torch.load(tmp_path / 'net.pth')['x'].shape == (2, )


def test_lmdb_markers_and_images_go_through_it(tmp_path, fsynced):
    write_marker(str(tmp_path), {'run_id': 'x'})
    write_image(str(tmp_path / 'a.png'), np.zeros((2, 3), np.uint8))
    assert read_marker(str(tmp_path))['run_id'] == 'x'
    assert {_inode(tmp_path / MARKER_FILE), _inode(tmp_path / 'a.png')} <= set(fsynced)
    assert sorted(os.listdir(tmp_path)) == ['a.png', MARKER_FILE]
