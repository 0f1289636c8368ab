"""scripts/prepare_lmdb.py and the LMDB side of PairedDehazeDataset."""
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import cv2
import lmdb
import numpy as np
import pytest
from basicsr.utils import FileClient, imfrombytes
from basicsr.utils.lmdb_util import make_lmdb_from_imgs
from fixtures_dehaze import (
    HAZY_HW,
    MAKERS,
    check_item,
    check_mixed_formats,
    clear_pixels,
    make_its,
    make_mixed_formats,
    write_image,
)

import gunet_arch  # noqa: F401
from gunet_arch.data import lmdb_writer
from gunet_arch.data.image_codec import ImageDecodeError
from gunet_arch.data.lmdb_store import LmdbFormatError, read_meta_info
from gunet_arch.data.lmdb_writer import OutputExistsError, prepare_lmdb, verify_lmdb
from gunet_arch.data.paired_dehaze_dataset import PairedDehazeDataset
from gunet_arch.data.pairing import PairingError, PairSizeError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, 'scripts', 'prepare_lmdb.py')
sys.path.insert(0, os.path.join(ROOT, 'scripts'))
import prepare_lmdb as prepare_cli  # noqa: E402


def quiet(*_):
    pass


def prepare(fixture, output, **kwargs):
    kwargs.setdefault('dataset', fixture.dataset)
    return prepare_lmdb(fixture.hazy_dir, fixture.clear_dir, str(output), workers=2, progress=False,
                        log=quiet, **kwargs)


def dataset(hazy_db, clear_db, **extra):
    opt = {'dataroot_lq': str(hazy_db), 'dataroot_gt': str(clear_db), 'io_backend': {'type': 'lmdb'},
           'phase': 'val'}
    opt.update(extra)
    return PairedDehazeDataset(opt)


def lmdb_dataset(output, **extra):
    return dataset(os.path.join(output, 'hazy.lmdb'), os.path.join(output, 'clear.lmdb'), **extra)


def disk_dataset(fixture, **extra):
    opt = {'dataroot_lq': fixture.hazy_dir, 'dataroot_gt': fixture.clear_dir, 'io_backend': {'type': 'disk'},
           'phase': 'val'}
    opt.update(extra)
    return PairedDehazeDataset(opt)


def stored_keys(db_path):
    env = lmdb.open(db_path, readonly=True, lock=False)
    with env.begin() as txn:
        keys = [k.decode() for k in txn.cursor().iternext(values=False)]
    env.close()
    return keys


@pytest.mark.parametrize('storage', ['auto', 'png', 'raw'])
@pytest.mark.parametrize('name', sorted(MAKERS))
def test_round_trip_of_every_dataset(tmp_path, name, storage):
    fixture = MAKERS[name](str(tmp_path / 'src'))
    output = str(tmp_path / 'out')
    summary = prepare(fixture, output, storage=storage)
    assert summary['pairs'] == len(fixture.pairs)
    from_disk, from_lmdb = disk_dataset(fixture), lmdb_dataset(output)
    assert len(from_lmdb) == len(fixture.pairs)
    for index, expected in enumerate(fixture.pairs):
        disk_item, lmdb_item = from_disk[index], from_lmdb[index]
        # Stored pixels are exactly the decoded source pixels (JPEG sources included).
        assert np.array_equal(disk_item['lq'].numpy(), lmdb_item['lq'].numpy())
        assert np.array_equal(disk_item['gt'].numpy(), lmdb_item['gt'].numpy())
        check_item(lmdb_item, expected, fixture.lossy, same_clear_content=name == 'paired')


@pytest.mark.parametrize('storage', ['auto', 'png', 'raw'])
def test_grayscale_rgba_and_16_bit_round_trip(tmp_path, storage):
    hazy_dir, clear_dir = make_mixed_formats(str(tmp_path / 'src'))
    prepare_lmdb(hazy_dir, clear_dir, str(tmp_path / 'out'), storage=storage, verify=True, workers=1,
                 progress=False, log=quiet)
    check_mixed_formats(lmdb_dataset(str(tmp_path / 'out'), phase='test'))


def test_auto_storage_keeps_jpeg_files_as_downloaded(tmp_path):
    fixture = MAKERS['ots'](str(tmp_path / 'src'))
    prepare(fixture, tmp_path / 'out')
    clear_db = str(tmp_path / 'out' / 'clear.lmdb')
    assert open(os.path.join(clear_db, 'meta_info.txt')).readline() == '0005.jpg (32,40,3) source\n'
    client = FileClient('lmdb', db_paths=[clear_db], client_keys=['gt'])
    assert client.get('0005', 'gt') == open(os.path.join(fixture.clear_dir, '0005.jpg'), 'rb').read()


def test_clear_copies_of_the_official_rearrangement_are_stored_once(tmp_path):
    fixture = MAKERS['paired'](str(tmp_path / 'src'))  # 4 GT files, copies of 2 images
    summary = prepare(fixture, tmp_path / 'out')
    assert summary['pairs'] == 4 and summary['clear'] == 2
    assert len(stored_keys(str(tmp_path / 'out' / 'clear.lmdb'))) == 2


def test_each_clear_image_is_stored_once(tmp_path):
    fixture = make_its(str(tmp_path / 'src'))  # 6 hazy, 3 clear
    prepare(fixture, tmp_path / 'out')
    clear_db, hazy_db = str(tmp_path / 'out' / 'clear.lmdb'), str(tmp_path / 'out' / 'hazy.lmdb')
    assert sorted(stored_keys(clear_db)) == ['1', '2', '3']
    assert len(stored_keys(hazy_db)) == 6
    assert '1_1_0.11179' in stored_keys(hazy_db)  # the whole name, dots and all


def test_basicsr_reads_the_output(tmp_path):
    fixture = make_its(str(tmp_path / 'src'))
    prepare(fixture, tmp_path / 'out')
    hazy_db, clear_db = str(tmp_path / 'out' / 'hazy.lmdb'), str(tmp_path / 'out' / 'clear.lmdb')
    lines = open(os.path.join(hazy_db, 'meta_info.txt')).read().splitlines()
    assert lines[0] == '1_1_0.11179.png (32,40,3) 1'
    client = FileClient('lmdb', db_paths=[hazy_db, clear_db], client_keys=['lq', 'gt'])
    hazy = imfrombytes(client.get('1_1_0.11179', 'lq'))
    clear = imfrombytes(client.get('1', 'gt'))
    assert hazy.shape == clear.shape == (*HAZY_HW, 3)


def test_basicsr_made_lmdbs_with_identical_keys_are_accepted(tmp_path):
    fixture = MAKERS['paired'](str(tmp_path / 'src'))
    names = sorted(os.listdir(fixture.hazy_dir))
    keys = [os.path.splitext(n)[0] for n in names]
    for folder, db in ((fixture.hazy_dir, 'lq.lmdb'), (fixture.clear_dir, 'gt.lmdb')):
        make_lmdb_from_imgs(folder, str(tmp_path / db), names, keys, map_size=1 << 24)
    ds = dataset(tmp_path / 'lq.lmdb', tmp_path / 'gt.lmdb')
    for index, expected in enumerate(fixture.pairs):
        check_item(ds[index], expected)
    assert verify_lmdb(str(tmp_path / 'lq.lmdb'), str(tmp_path / 'gt.lmdb'), workers=1, progress=False)['pairs'] == 4


def test_lmdb_training_crops_match_disk(tmp_path):
    fixture = make_its(str(tmp_path / 'src'))
    prepare(fixture, tmp_path / 'out', storage='raw')
    opt = {'phase': 'train', 'gt_size': 16, 'use_hflip': True, 'use_rot': True, 'edge_decay': 0.1}
    from_disk, from_lmdb = disk_dataset(fixture, **opt), lmdb_dataset(str(tmp_path / 'out'), **opt)
    for index in range(len(from_disk)):
        random.seed(index)
        disk_item = from_disk[index]
        random.seed(index)
        lmdb_item = from_lmdb[index]
        assert np.array_equal(disk_item['lq'].numpy(), lmdb_item['lq'].numpy())
        check_item(lmdb_item, fixture.pairs[index])


def test_map_grows_with_the_data(tmp_path, monkeypatch):
    monkeypatch.setattr(lmdb_writer, '_MIN_MAP_SIZE', 1 << 15)
    monkeypatch.setattr(lmdb_writer, '_COMMIT_EVERY', 2)
    fixture = make_its(str(tmp_path / 'src'))
    for name in os.listdir(fixture.hazy_dir):  # make the images much bigger than the map guess
        path = os.path.join(fixture.hazy_dir, name)
        write_image(path, np.tile(cv2.imread(path), (4, 4, 1)))
    for name in os.listdir(fixture.clear_dir):
        path = os.path.join(fixture.clear_dir, name)
        write_image(path, np.tile(cv2.imread(path), (4, 4, 1)))
    prepare(fixture, tmp_path / 'out', storage='raw')
    assert len(lmdb_dataset(str(tmp_path / 'out'))) == 6


def test_existing_output_is_refused_unless_overwrite(tmp_path):
    fixture = make_its(str(tmp_path / 'src'))
    prepare(fixture, tmp_path / 'out')
    with pytest.raises(OutputExistsError, match='--overwrite'):
        prepare(fixture, tmp_path / 'out')
    prepare(fixture, tmp_path / 'out', overwrite=True, storage='raw')
    assert lmdb_dataset(str(tmp_path / 'out'))[0]['lq'].shape == (3, *HAZY_HW)
    assert sorted(os.listdir(tmp_path / 'out')) == ['clear.lmdb', 'hazy.lmdb']  # no staging left


def test_databases_of_two_runs_are_refused_and_a_rerun_repairs(tmp_path):
    fixture = make_its(str(tmp_path / 'src'))
    prepare(fixture, tmp_path / 'a')
    prepare(fixture, tmp_path / 'b')
    # What a kill between the two final renames leaves: the new clear.lmdb beside an old hazy.lmdb.
    shutil.rmtree(tmp_path / 'a' / 'clear.lmdb')
    shutil.move(str(tmp_path / 'b' / 'clear.lmdb'), str(tmp_path / 'a' / 'clear.lmdb'))
    with pytest.raises(LmdbFormatError, match='one complete run'):
        lmdb_dataset(str(tmp_path / 'a'))
    prepare(fixture, tmp_path / 'a')  # no --overwrite needed for an incomplete output
    assert len(lmdb_dataset(str(tmp_path / 'a'))) == 6


def _slow_fixture(root, count=200, hw=(96, 128)):
    """Enough noisy images that preparing them at PNG level 9 takes seconds on one worker."""
    rng = np.random.default_rng(0)
    hazy_dir, clear_dir = os.path.join(root, 'IN'), os.path.join(root, 'GT')
    os.makedirs(hazy_dir)
    os.makedirs(clear_dir)
    for i in range(count):
        name = f'{i:04d}_0.5.png'
        cv2.imwrite(os.path.join(clear_dir, name), rng.integers(0, 256, (*hw, 3), dtype=np.uint8))
        os.link(os.path.join(clear_dir, name), os.path.join(hazy_dir, name))
    return hazy_dir, clear_dir


@pytest.mark.system
@pytest.mark.parametrize('sig', [signal.SIGKILL, signal.SIGINT], ids=['kill', 'ctrl-c'])
def test_interrupted_run_leaves_nothing_accepted_and_rerun_finishes(tmp_path, sig):
    hazy_dir, clear_dir = _slow_fixture(str(tmp_path / 'src'))
    output = str(tmp_path / 'out')
    cmd = [sys.executable, SCRIPT, '--dataset', 'rshaze', '--hazy', hazy_dir, '--clear', clear_dir,
           '--output', output, '--workers', '1', '--compress-level', '9', '--no-progress']
    # SIGINT as a terminal's Ctrl-C finds it: a shell starts background jobs with SIGINT ignored,
    # and that would pass down to the child from a test run launched with `&`.
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    staging_db = os.path.join(output, lmdb_writer.STAGING_DIR, 'clear.lmdb', 'data.mdb')
    deadline = time.time() + 120
    while not os.path.exists(staging_db) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    time.sleep(0.2)  # mid-way through the clear images
    proc.send_signal(sig)
    assert proc.wait() != 0, 'the preparation finished before it could be interrupted'

    if sig == signal.SIGKILL:
        assert os.path.exists(staging_db)  # killed mid-way: the staging folder is all there is
    else:
        assert not os.path.exists(os.path.dirname(os.path.dirname(staging_db)))  # Ctrl-C cleans up
    assert not os.path.exists(os.path.join(output, 'hazy.lmdb'))
    assert not os.path.exists(os.path.join(output, 'clear.lmdb'))
    with pytest.raises(LmdbFormatError):
        lmdb_dataset(output)
    # The same preparation again (in-process, to save an interpreter start) finishes the job.
    prepare_lmdb(hazy_dir, clear_dir, output, dataset='rshaze', workers=2, progress=False, log=quiet)
    assert not os.path.exists(os.path.join(output, lmdb_writer.STAGING_DIR))
    assert len(lmdb_dataset(output)) == 200


def test_cli_verify_prints_a_summary(tmp_path, capsys):
    fixture = make_its(str(tmp_path / 'src'))
    args = ['--dataset', 'its', '--hazy', fixture.hazy_dir, '--clear', fixture.clear_dir, '--output',
            str(tmp_path / 'out'), '--verify', '--no-progress', '--workers', '1']
    assert prepare_cli.main(args) == 0
    assert 'Verified 6 pairs: 6 hazy and 3 clear images' in capsys.readouterr().out
    assert prepare_cli.main(['--verify', '--output', str(tmp_path / 'out'), '--no-progress']) == 0
    assert 'Verified 6 pairs' in capsys.readouterr().out
    assert prepare_cli.main(args) == 1  # exists
    assert '--overwrite' in capsys.readouterr().err


# Bad input: each is an error naming the file, and nothing is left behind.

def _assert_nothing_written(output):
    assert not os.path.exists(output) or not set(os.listdir(output)) & {'hazy.lmdb', 'clear.lmdb',
                                                                          lmdb_writer.STAGING_DIR}


def test_cli_unpaired_images_are_listed_then_skipped_on_request(tmp_path, capsys):
    fixture = make_its(str(tmp_path / 'src'))
    write_image(os.path.join(fixture.hazy_dir, '9_1_0.5.png'), clear_pixels(1, HAZY_HW))
    args = ['--dataset', 'its', '--hazy', fixture.hazy_dir, '--clear', fixture.clear_dir, '--output',
            str(tmp_path / 'out'), '--no-progress', '--workers', '1']
    assert prepare_cli.main(args) == 1
    assert '1 of 7 hazy images' in capsys.readouterr().err
    _assert_nothing_written(str(tmp_path / 'out'))
    assert prepare_cli.main(args + ['--skip-unpaired']) == 0
    assert '9_1_0.5.png' in capsys.readouterr().out
    assert len(lmdb_dataset(str(tmp_path / 'out'))) == 6


def test_truncated_source_image_is_named_and_nothing_written(tmp_path):
    fixture = make_its(str(tmp_path / 'src'))
    path = os.path.join(fixture.hazy_dir, fixture.pairs[3].hazy)
    data = open(path, 'rb').read()
    open(path, 'wb').write(data[:-30])
    with pytest.raises(ImageDecodeError, match=fixture.pairs[3].hazy.replace('.', r'\.')):
        prepare(fixture, tmp_path / 'out')
    _assert_nothing_written(str(tmp_path / 'out'))


def test_mismatched_sizes_name_both_files_and_nothing_written(tmp_path):
    fixture = make_its(str(tmp_path / 'src'))
    write_image(os.path.join(fixture.clear_dir, '2.png'), clear_pixels(60, (HAZY_HW[0], HAZY_HW[1] - 8)))
    with pytest.raises(PairSizeError, match=r'2_1_0\.12179\.png is 32x40.*2\.png is 32x32'):
        prepare(fixture, tmp_path / 'out')
    _assert_nothing_written(str(tmp_path / 'out'))


def test_empty_folder(tmp_path):
    (tmp_path / 'hazy').mkdir()
    (tmp_path / 'clear').mkdir()
    with pytest.raises(PairingError, match='No images'):
        prepare_lmdb(str(tmp_path / 'hazy'), str(tmp_path / 'clear'), str(tmp_path / 'out'), log=quiet)
    _assert_nothing_written(str(tmp_path / 'out'))


def test_image_smaller_than_gt_size_is_named_at_creation(tmp_path):
    fixture = make_its(str(tmp_path / 'src'))
    prepare(fixture, tmp_path / 'out')
    with pytest.raises(PairSizeError, match=r'1_1_0\.11179\.png is 32x40.*smaller than gt_size 48'):
        lmdb_dataset(str(tmp_path / 'out'), phase='train', gt_size=48)


def test_key_missing_from_the_database_is_named(tmp_path):
    fixture = make_its(str(tmp_path / 'src'))
    prepare(fixture, tmp_path / 'out')
    hazy_db = str(tmp_path / 'out' / 'hazy.lmdb')
    env = lmdb.open(hazy_db)
    with env.begin(write=True) as txn:
        txn.delete(b'2_2_0.22179')
    env.close()
    with pytest.raises(LmdbFormatError, match=r'2_2_0\.22179'):
        lmdb_dataset(str(tmp_path / 'out'))
    with pytest.raises(LmdbFormatError, match=r'missing from the database'):
        verify_lmdb(hazy_db, str(tmp_path / 'out' / 'clear.lmdb'), workers=1, progress=False)


def test_corrupt_entry_is_found_by_verify(tmp_path):
    fixture = make_its(str(tmp_path / 'src'))
    prepare(fixture, tmp_path / 'out')
    clear_db = str(tmp_path / 'out' / 'clear.lmdb')
    env = lmdb.open(clear_db)
    with env.begin(write=True) as txn:
        txn.put(b'3', txn.get(b'3')[:40])
    env.close()
    with pytest.raises(ImageDecodeError, match=r"key '3'"):
        verify_lmdb(str(tmp_path / 'out' / 'hazy.lmdb'), clear_db, workers=1, progress=False)


def test_meta_info_parsing_keeps_dots(tmp_path):
    (tmp_path / 'meta_info.txt').write_text('1_1_0.90179.png (460,620,3) 1\n')
    entry = read_meta_info(str(tmp_path))['1_1_0.90179']
    assert entry.shape == (460, 620, 3) and entry.name == '1_1_0.90179.png'


def test_loader_workers_read_an_lmdb_the_main_process_has_open(tmp_path):
    """py-lmdb refuses a second handle on one database in a process, and forked workers inherit
    the parent's: reading in the parent first, then in worker processes, must still work."""
    import torch.utils.data
    fixture = make_its(str(tmp_path / 'src'))
    prepare(fixture, tmp_path / 'out')
    ds = lmdb_dataset(str(tmp_path / 'out'))
    ds[0]
    again = lmdb_dataset(str(tmp_path / 'out'))  # a second dataset on the same files
    loader = torch.utils.data.DataLoader(again, batch_size=3, num_workers=2)
    assert sum(batch['lq'].shape[0] for batch in loader) == 6
    verify_lmdb(str(tmp_path / 'out' / 'hazy.lmdb'), str(tmp_path / 'out' / 'clear.lmdb'), workers=2,
                progress=False)


def test_an_lmdb_read_as_folders_says_so(tmp_path):
    fixture = make_its(str(tmp_path / 'src'))
    prepare(fixture, tmp_path / 'out')
    with pytest.raises(ValueError, match='is an LMDB; read it with io_backend'):
        PairedDehazeDataset({'dataroot_lq': str(tmp_path / 'out' / 'hazy.lmdb'),
                             'dataroot_gt': str(tmp_path / 'out' / 'clear.lmdb'), 'io_backend': {'type': 'disk'},
                             'phase': 'val'})
