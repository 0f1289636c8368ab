"""Prepared LMDBs and image folders as untrusted input: record checksums verified on every read,
damaged and doctored databases named, older databases still read, read-only storage, and
decompression bombs refused before anything large is allocated (measured in a process of its own)."""
import json
import logging
import multiprocessing
import os
import re
import resource
import shutil
import signal
import sys
import tempfile

import lmdb
import pytest
import xxhash
from basicsr.data.data_util import paths_from_lmdb
from basicsr.utils import FileClient
from basicsr.utils.lmdb_util import make_lmdb_from_imgs
from fixtures_dehaze import HAZY_HW, clear_pixels, make_its, write_image
from hostile_images import BOMBS, png_bomb

import gunet_arch  # noqa: F401
from gunet_arch.data import lmdb_writer
from gunet_arch.data.image_codec import ImageDecodeError, ImageTooLargeError
from gunet_arch.data.lmdb_store import CorruptRecordError, LmdbFormatError, close_env, file_checksums
from gunet_arch.data.lmdb_writer import prepare_lmdb, verify_lmdb
from gunet_arch.data.paired_dehaze_dataset import PairedDehazeDataset
from gunet_arch.data.pairing import PairingError, PairSizeError

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)
sys.path.insert(0, os.path.join(ROOT, 'scripts'))
import prepare_lmdb as prepare_cli  # noqa: E402


def quiet(*_):
    pass


def prepare(root, storage='auto'):
    fixture = make_its(os.path.join(root, 'src'))
    output = os.path.join(root, 'out')
    prepare_lmdb(fixture.hazy_dir, fixture.clear_dir, output, dataset='its', storage=storage, workers=2,
                 progress=False, log=quiet)
    return fixture, os.path.join(output, 'hazy.lmdb'), os.path.join(output, 'clear.lmdb')


def lmdb_dataset(hazy_db, clear_db, **extra):
    return PairedDehazeDataset(dict({'dataroot_lq': hazy_db, 'dataroot_gt': clear_db, 'io_backend': {'type': 'lmdb'},
                                     'phase': 'val'}, **extra))


def stored(db_path, key):
    env = lmdb.open(db_path, readonly=True, lock=False)
    with env.begin() as txn:
        value = txn.get(key.encode())
    env.close()
    return value


def flip_record_byte(db_path, key):
    """Damage one byte of ``key``'s value inside data.mdb itself, found by its content."""
    value = stored(db_path, key)
    close_env(db_path)
    path = os.path.join(db_path, 'data.mdb')
    data = bytearray(open(path, 'rb').read())
    assert data.count(value) == 1  # an LMDB stores a value in one piece (in its leaf page or overflow pages)
    data[data.index(value) + len(value) // 2] ^= 0x10
    open(path, 'r+b').write(data)


def items(ds):
    return [ds[i] for i in range(len(ds))]


def test_checksums_sit_beside_the_basicsr_format(tmp_path):
    _, hazy_db, clear_db = prepare(str(tmp_path))
    for db in (hazy_db, clear_db):
        # meta_info keeps BasicSR's "KEY.png (h,w,c) level" lines, which its own reader takes.
        lines = open(os.path.join(db, 'meta_info.txt')).read().splitlines()
        assert all(re.fullmatch(r'[\w.]+\.png \(32,40,3\) 1', line) for line in lines), lines
        keys = [line.rsplit(' ', 2)[0].rsplit('.', 1)[0] for line in lines]
        sums = dict(line.split('\t') for line in open(os.path.join(db, 'checksums.txt')).read().splitlines())
        assert sorted(sums) == sorted(keys)
        marker = json.load(open(os.path.join(db, 'gunet_lmdb.json')))
        assert marker['checksum'] == 'xxh3_64' and marker['files'] == file_checksums(db, sorted(marker['files']))
        if db == clear_db:  # BasicSR's reader cuts names at their first dot: the hazy keys hold dots
            assert paths_from_lmdb(db) == keys == ['1', '2', '3']
        # Only image records are in the database: nothing else for a key scan to trip over.
        env = lmdb.open(db, readonly=True, lock=False)
        with env.begin() as txn:
            assert sorted(k.decode() for k in txn.cursor().iternext(values=False)) == sorted(keys)
        env.close()
        client = FileClient('lmdb', db_paths=[db], client_keys=['x'])
        for key in keys:
            assert int(sums[key], 16) == xxhash.xxh3_64_intdigest(client.get(key, 'x'))
        client.client._client['x'].close()


@pytest.mark.parametrize('storage', ['auto', 'raw'])
def test_a_damaged_record_is_never_trained_on(tmp_path, storage, capsys):
    _, hazy_db, clear_db = prepare(str(tmp_path), storage)
    flip_record_byte(hazy_db, '2_1_0.12179')
    flip_record_byte(clear_db, '3')
    ds = lmdb_dataset(hazy_db, clear_db)  # creation reads no record
    names = [os.path.basename(p) for p, _ in ds.paths]
    good = names.index('1_1_0.11179.png')
    assert ds[good]['lq'].shape == (3, *HAZY_HW)
    with pytest.raises(CorruptRecordError, match=rf"Corrupt record: {re.escape(hazy_db)} key '2_1_0.12179' "
                       r'\(from 2_1_0\.12179\.png\) fails its xxh3_64 check'):
        ds[names.index('2_1_0.12179.png')]
    with pytest.raises(CorruptRecordError, match=rf"{re.escape(clear_db)} key '3' \(from 3\.png\)"):
        ds[names.index('3_2_0.23179.png')]
    # --verify uses the same checksums and lists every damaged record.
    assert prepare_cli.main(['--verify', '--output', os.path.dirname(hazy_db), '--no-progress']) == 1
    err = capsys.readouterr().err
    assert err.startswith('error: 2 of the 9 entries') and "key '2_1_0.12179'" in err and "key '3'" in err


def test_training_stops_on_a_damaged_record(tmp_path):
    """The batch holding it fails: no other sample stands in for it. (In-process: a loader worker
    re-raises the same error type, and an unfinished worker costs seconds to stop.)"""
    import torch.utils.data
    _, hazy_db, clear_db = prepare(str(tmp_path), 'raw')
    flip_record_byte(hazy_db, '3_2_0.23179')
    batches = iter(torch.utils.data.DataLoader(lmdb_dataset(hazy_db, clear_db), batch_size=3))
    assert next(batches)['lq'].shape == (3, 3, *HAZY_HW)
    with pytest.raises(CorruptRecordError, match="key '3_2_0.23179'"):
        next(batches)


def _edit_meta(db_path, old, new, keep_marker_consistent):
    path = os.path.join(db_path, 'meta_info.txt')
    text = open(path).read()
    assert old in text
    open(path, 'w').write(text.replace(old, new))
    if keep_marker_consistent:  # what a doctored (not merely damaged) database looks like
        marker_path = os.path.join(db_path, 'gunet_lmdb.json')
        marker = json.load(open(marker_path))
        marker['files'].update(file_checksums(db_path, ['meta_info.txt']))
        json.dump(marker, open(marker_path, 'w'))


def test_damaged_meta_info_is_named(tmp_path):
    _, hazy_db, clear_db = prepare(str(tmp_path))
    _edit_meta(clear_db, '2.png (32,40,3)', '2.png (32,41,3)', keep_marker_consistent=False)
    with pytest.raises(LmdbFormatError, match=rf'{re.escape(clear_db)}/meta_info.txt is damaged'):
        lmdb_dataset(hazy_db, clear_db)


def test_record_that_disagrees_with_meta_info_is_refused_before_decoding(tmp_path):
    _, hazy_db, clear_db = prepare(str(tmp_path))
    _edit_meta(hazy_db, '1_2_0.21179.png (32,40,3)', '1_2_0.21179.png (40,48,3)', keep_marker_consistent=True)
    _edit_meta(clear_db, '1.png (32,40,3)', '1.png (40,48,3)', keep_marker_consistent=True)
    ds = lmdb_dataset(hazy_db, clear_db)
    with pytest.raises(CorruptRecordError, match=rf"{re.escape(hazy_db)} key '1_2_0.21179' \(from 1_2_0.21179.png\): "
                       'the stored image header says 40x32 but meta_info.txt records 48x40; refused before decoding'):
        ds[1]


def test_pair_sizes_that_disagree_name_the_lmdb_the_keys_and_the_files(tmp_path):
    """BasicSR-made databases (no checksums, identical keys) are read too, with a log line."""
    for folder, hw in (('lq', HAZY_HW), ('gt', (HAZY_HW[0], HAZY_HW[1] - 8))):
        write_image(str(tmp_path / folder / '0001.png'), clear_pixels(30, hw))
        make_lmdb_from_imgs(str(tmp_path / folder), str(tmp_path / f'{folder}.lmdb'), ['0001.png'], ['0001'],
                            map_size=1 << 22)
    with pytest.raises(PairSizeError, match=rf"hazy {re.escape(str(tmp_path / 'lq.lmdb'))}:0001.png is 32x40 .* "
                       rf"clear {re.escape(str(tmp_path / 'gt.lmdb'))}:0001.png is 32x32.*\[keys '0001' and '0001'\]"):
        lmdb_dataset(str(tmp_path / 'lq.lmdb'), str(tmp_path / 'gt.lmdb'))


def test_lmdb_of_the_previous_version_still_loads_unverified_and_says_so(tmp_path, caplog):
    fixture, hazy_db, clear_db = prepare(str(tmp_path), 'raw')
    for db in (hazy_db, clear_db):  # what the previous version wrote: no checksums anywhere
        os.remove(os.path.join(db, 'checksums.txt'))
        marker = json.load(open(os.path.join(db, 'gunet_lmdb.json')))
        del marker['checksum'], marker['files']
        json.dump(marker, open(os.path.join(db, 'gunet_lmdb.json'), 'w'))
    with caplog.at_level(logging.WARNING, logger='basicsr'):
        ds = lmdb_dataset(hazy_db, clear_db)
    assert f'{hazy_db} has no record checksums' in caplog.text and f'{clear_db} has no record checksums' in caplog.text
    assert len(items(ds)) == len(fixture.pairs)
    summary = verify_lmdb(hazy_db, clear_db, workers=1, progress=False, log=quiet)
    assert summary['checksummed'] == 0
    # A new-version database whose checksums file went missing is not mistaken for an old one.
    _, hazy_db, clear_db = prepare(str(tmp_path / 'new'))
    os.remove(os.path.join(clear_db, 'checksums.txt'))
    with pytest.raises(LmdbFormatError, match='checksums.txt is unreadable'):
        lmdb_dataset(hazy_db, clear_db)


def test_opens_without_lock_file_and_writes_nothing(tmp_path):
    fixture, hazy_db, clear_db = prepare(str(tmp_path))
    for db in (hazy_db, clear_db):
        os.remove(os.path.join(db, 'lock.mdb'))
    before = {os.path.join(d, f): os.stat(os.path.join(d, f)).st_mtime_ns for d in (hazy_db, clear_db)
              for f in os.listdir(d)}
    assert len(items(lmdb_dataset(hazy_db, clear_db))) == len(fixture.pairs)
    verify_lmdb(hazy_db, clear_db, workers=1, progress=False, log=quiet)
    after = {os.path.join(d, f): os.stat(os.path.join(d, f)).st_mtime_ns for d in (hazy_db, clear_db)
             for f in os.listdir(d)}
    assert after == before


def test_lmdb_records_over_max_pixels_are_refused_at_creation(tmp_path):
    _, hazy_db, clear_db = prepare(str(tmp_path))
    with pytest.raises(LmdbFormatError, match=rf"9 images are refused before decoding: {re.escape(hazy_db)} key "
                       r"'1_1_0.11179' \(from 1_1_0.11179.png\) is 40x32 pixels, over the limit of 0.001 megapixels "
                       r'\(max_pixels raises it\)'):
        lmdb_dataset(hazy_db, clear_db, max_pixels=1000)
    assert len(lmdb_dataset(hazy_db, clear_db, max_pixels=1280)) == 6
    with pytest.raises(ValueError, match='max_pixels must be a whole number'):
        lmdb_dataset(hazy_db, clear_db, max_pixels='300M')


def test_image_folders_refuse_bombs_non_images_and_gifs(tmp_path):
    fixture = make_its(str(tmp_path / 'src'))
    opt = {'dataroot_lq': fixture.hazy_dir, 'dataroot_gt': fixture.clear_dir, 'io_backend': {'type': 'disk'},
           'phase': 'val'}
    with pytest.raises(ImageTooLargeError, match=r'1_1_0.11179.png: 40x32 pixels .* over the limit of 0.001 '
                       r'megapixels; refused before decoding \(max_pixels raises the limit\)'):
        PairedDehazeDataset(dict(opt, max_pixels=1000))[0]
    with open(os.path.join(fixture.hazy_dir, '1_1_0.11179.png'), 'wb') as f:
        f.write(BOMBS['jpg']())  # a JPEG bomb under a .png name: the content decides
    with pytest.raises(ImageTooLargeError, match=r'1_1_0.11179.png: 20000x20000 pixels'):
        PairedDehazeDataset(opt)[0]
    with open(os.path.join(fixture.hazy_dir, '1_1_0.11179.png'), 'wb') as f:
        f.write(b'<html>not an image</html>')
    with pytest.raises(ImageDecodeError, match=r"1_1_0.11179.png: not an image file .* starts with b'<html>no'"):
        PairedDehazeDataset(opt)[0]
    with open(os.path.join(fixture.clear_dir, '9.gif'), 'wb') as f:
        f.write(b'GIF89a')
    with pytest.raises(PairingError, match=r'1 image files are refused:\n  .*9.gif: a GIF image'):
        PairedDehazeDataset(opt)


# Each check below runs in a process of its own, forked from the server process that
# prepare_lmdb's pool workers fork from (everything imported already, so it starts in milliseconds):
# its peak memory (ru_maxrss) grows from a known baseline, a SIGBUS would kill only it, and it can
# give up root to find out what read-only storage allows.

def _child(conn, function, args):
    try:
        conn.send(('ok', function(*args)))
    except BaseException as err:  # noqa: BLE001 - reported to the test
        conn.send(('raised', f'{type(err).__name__}: {err}'))


def in_own_process(function, *args):
    """(exit code, what ``function(*args)`` returned or raised) from a freshly forked process."""
    context = multiprocessing.get_context('forkserver')
    context.set_forkserver_preload([lmdb_writer.__name__])  # as lmdb_writer._pool does
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(send, function, args))
    process.start()
    send.close()
    result = receive.recv() if receive.poll(120) else ('none', None)
    process.join(30)
    return process.exitcode, result


def _outcome(call):
    try:
        value = call()
    except Exception as err:  # noqa: BLE001 - the outcome is what is checked
        return [type(err).__name__, str(err)]
    return [type(value).__name__, str(value)]


def _peak_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _decode_probe(bombs, folders, control):
    """Each bomb through prepare_lmdb's per-file work and through the dataset, with the growth of
    this process's peak memory; a control image under the limit shows what a decode costs."""
    out = {}
    for path, limit in bombs + [(control, 0)]:
        before = _peak_mib()
        result = lmdb_writer._encode_file((path, 'raw', 1, limit))  # the exception when the file is refused
        result = [type(result).__name__, str(result) if isinstance(result, Exception) else str(result.shape)]
        out[os.path.basename(path)] = {'result': result, 'growth_mib': _peak_mib() - before}
    before = _peak_mib()
    opt = {'dataroot_lq': folders[0], 'dataroot_gt': folders[1], 'io_backend': {'type': 'disk'}, 'phase': 'val'}
    out['dataset'] = {'result': _outcome(lambda: PairedDehazeDataset(opt)[0]), 'growth_mib': _peak_mib() - before}
    return out


def _read_only_probe(output):
    """Read a prepared set as a user who may not write to it (nobody, when the tests run as root)."""
    if os.geteuid() == 0:
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)
    out = {'user': os.geteuid()}
    try:
        open(os.path.join(output, 'hazy.lmdb', 'probe'), 'w').close()
        out['write'] = 'allowed'
    except OSError as err:
        out['write'] = err.strerror
    hazy, clear = os.path.join(output, 'hazy.lmdb'), os.path.join(output, 'clear.lmdb')
    ds = PairedDehazeDataset({'dataroot_lq': hazy, 'dataroot_gt': clear, 'io_backend': {'type': 'lmdb'},
                              'phase': 'val'})
    out['items'] = len(items(ds))
    out['files'] = sorted(os.listdir(hazy) + os.listdir(clear))
    return out


def _open_probe(output):
    return _outcome(lambda: len(lmdb_dataset(os.path.join(output, 'hazy.lmdb'), os.path.join(output, 'clear.lmdb'))))


@pytest.fixture(scope='module')
def bomb_files(tmp_path_factory):
    root = tmp_path_factory.mktemp('bombs')
    bombs = []
    for ext, make in sorted(BOMBS.items()):
        (root / f'bomb.{ext}').write_bytes(make())
        # A WebP cannot exceed 16383 x 16383 = 268 megapixels, under the default limit.
        bombs.append((str(root / f'bomb.{ext}'), 100_000_000 if ext == 'webp' else 300_000_000))
    folders = [str(root / 'IN'), str(root / 'GT')]
    for folder in folders:
        os.makedirs(folder)
        shutil.copy(root / 'bomb.png', os.path.join(folder, 'bomb.png'))
    (root / 'control.png').write_bytes(png_bomb(6000))  # 36 megapixels: under the limit, so decoded
    return bombs, folders, str(root / 'control.png')


def test_bombs_are_refused_before_anything_large_is_allocated(bomb_files):
    exit_code, (status, probe) = in_own_process(_decode_probe, *bomb_files)
    assert exit_code == 0 and status == 'ok', probe
    print(json.dumps(probe, indent=1))  # the figures, with -s
    # Decoding a bomb would take 0.8-2.3 GB (tests/hostile_images.py); the control, a 36-megapixel
    # image under the limit, shows that the measurement sees allocations well below that.
    assert probe['control.png']['result'] == ['Encoded', '(6000, 6000, 3)']
    assert probe['control.png']['growth_mib'] > 100
    for name, side in (('bomb.png', 30000), ('bomb.jpg', 20000), ('bomb.tif', 20000), ('bomb.webp', 16383)):
        kind, message = probe[name]['result']
        assert kind == 'ImageTooLargeError' and f'{name}: {side}x{side} pixels' in message, message
        assert '--max-pixels raises the limit' in message
        assert probe[name]['growth_mib'] < 20, (name, probe[name])
    kind, message = probe['dataset']['result']
    assert kind == 'ImageTooLargeError' and 'bomb.png: 30000x30000' in message and 'max_pixels raises' in message
    assert probe['dataset']['growth_mib'] < 20


def test_lmdb_reads_from_read_only_storage_without_lock_file():
    # Not under tmp_path, whose parents only root may enter.
    work = tempfile.mkdtemp(prefix='gunet_read_only_')
    try:
        _, hazy_db, clear_db = prepare(work)
        for db in (hazy_db, clear_db):
            os.remove(os.path.join(db, 'lock.mdb'))
        for folder, _, files in os.walk(work):  # chmod -R a-w, readable by everyone
            os.chmod(folder, 0o555)
            for name in files:
                os.chmod(os.path.join(folder, name), 0o444)
        exit_code, (status, probe) = in_own_process(_read_only_probe, os.path.dirname(hazy_db))
        assert exit_code == 0 and status == 'ok', probe
        assert probe['write'] == 'Permission denied' and probe['user'] != 0
        assert probe['items'] == 6
        assert 'lock.mdb' not in probe['files'] and 'probe' not in probe['files']
    finally:
        for folder, _, _ in os.walk(work):
            os.chmod(folder, 0o755)
        shutil.rmtree(work)


def test_truncated_data_mdb_is_an_error_naming_it_not_a_crash(tmp_path):
    _, _, clear_db = prepare(str(tmp_path))
    data = os.path.join(clear_db, 'data.mdb')
    os.truncate(data, os.path.getsize(data) // 2)
    exit_code, result = in_own_process(_open_probe, str(tmp_path / 'out'))
    assert exit_code != -signal.SIGBUS, 'a truncated data.mdb was read past its end'
    kind, message = result[1]
    assert kind == 'LmdbFormatError' and re.search(rf'{re.escape(clear_db)}/data.mdb is truncated: [\d,]+ bytes, but '
                                                   r'its pages end at byte [\d,]+', message), message
