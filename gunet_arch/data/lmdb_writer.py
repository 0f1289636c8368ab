"""Preparing a dehazing set (hazy + clear folders) as a pair of LMDBs, and verifying one.

The work happens in a staging folder next to the output (``OUTPUT/.prepare_lmdb.partial``) and
the finished databases are renamed into place only at the end, with completion markers written
last, so a run killed at any point leaves nothing the dataset accepts; the next run clears the
staging folder and starts again.
"""
import hashlib
import multiprocessing
import os
import shutil
import uuid
from collections import OrderedDict, namedtuple

import cv2
import lmdb
import numpy as np
from tqdm import tqdm

from ..atomic import atomic_write_bytes, fsync_folder
from .image_codec import decode_image, to_bgr
from .lmdb_store import (
    CLEAR_DB,
    HAZY_DB,
    META_FILE,
    PAIRS_FILE,
    STORAGE_FORMATS,
    Entry,
    LmdbFormatError,
    close_env,
    decode_entry,
    meta_line,
    open_pairs,
    read_marker,
    read_value,
    write_marker,
)
from .pairing import PairSizeError, pair_folders, pair_size_problem

STAGING_DIR = '.prepare_lmdb.partial'
# Entries per write transaction: a commit is a sync point; its buffer is what gets re-put when the
# map has to grow.
_COMMIT_EVERY = 128
_MIN_MAP_SIZE = 64 << 20

Preset = namedtuple('Preset', ['pairing', 'example', 'full_size'])
# ``full_size`` (hazy, clear) is only used to tell the user when a folder looks incomplete.
DATASET_PRESETS = OrderedDict([
    ('its', Preset('prefix', 'hazy 1_1_0.90179.png -> clear 1.png', (13990, 1399))),
    ('ots', Preset('prefix', 'hazy 0005_0.8_0.04.jpg -> clear 0005.jpg', (313950, None))),
    ('sots-indoor', Preset('prefix', 'hazy 1400_1.png -> clear 1400.png (clear centre-cropped)', (500, 50))),
    ('sots-outdoor', Preset('prefix', 'hazy 0001_0.8_0.2.jpg -> clear 0001.png', (500, 500))),
    ('haze4k', Preset('prefix', 'hazy 1_0.89_1.56.png -> clear 1.png', None)),
    ('rshaze', Preset('same_name', 'same name in hazy/ and GT/', None)),
    ('paired', Preset(None, 'any folders; same names or the prefix rule, detected', None)),
])


class OutputExistsError(FileExistsError):
    """The output already holds databases that this run would replace."""


def _pool(workers):
    """A worker pool started from a fresh server process: forking a process that already runs
    torch's (or any) worker threads can deadlock a child, which then hangs the whole pool."""
    context = multiprocessing.get_context('forkserver')
    # The server imports this module (and torch with it) once; every worker forks from it ready.
    context.set_forkserver_preload([__name__])
    return context.Pool(workers or os.cpu_count() or 1)


def _encode_file(task):
    """Pool worker: (path, storage, level) -> (shape, dtype, value bytes, pixel digest, kind of
    entry: 'png', 'raw' or 'source' for a file stored as it is)."""
    path, storage, level = task
    try:
        with open(path, 'rb') as f:
            buf = f.read()
    except OSError as err:
        raise LmdbFormatError(f'Cannot read image file {path}: {err}') from None
    decoded = decode_image(buf, path)
    img = np.ascontiguousarray(to_bgr(decoded))
    # Identifies copies of one clear image (the official IN/GT rearrangement has one per hazy
    # image) whatever file they came from, so each is stored once.
    digest = hashlib.blake2b(img.tobytes(), digest_size=16)
    digest.update(repr((img.shape, img.dtype.str)).encode())
    if storage == 'auto' and buf[:3] == b'\xff\xd8\xff':
        # A JPEG stays as downloaded (see lmdb_store); the recorded shape is what it decodes to.
        shape = decoded.shape if decoded.ndim == 3 else decoded.shape + (1,)
        return shape, str(decoded.dtype), buf, digest.hexdigest(), 'source'
    if storage == 'raw':
        value = img.tobytes()
    else:
        # Run-length deflate: in scripts/benchmark_data.py's measurements it decodes faster than
        # zlib's default strategy at the same level (and than typical level-6 downloads), at a
        # similar size; loader speed is what the LMDB is for.
        ok, encoded = cv2.imencode('.png', img, [cv2.IMWRITE_PNG_COMPRESSION, level,
                                                 cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE])
        if not ok:
            raise LmdbFormatError(f'PNG encoding failed for {path}')
        value = encoded.tobytes()
    return img.shape, str(img.dtype), value, digest.hexdigest(), 'raw' if storage == 'raw' else 'png'


class _GrowingLmdb:
    """An LMDB writer whose map grows when full, so the size follows the data (a fixed guess either
    wastes address space on small sets or fails with MapFullError on large ones)."""

    def __init__(self, path, initial_size):
        self.env = lmdb.open(path, map_size=max(_MIN_MAP_SIZE, initial_size), subdir=True)
        self.pending = []

    def put(self, key, value):
        self.pending.append((key.encode('ascii'), value))
        if len(self.pending) >= _COMMIT_EVERY:
            self.commit()

    def commit(self):
        while True:
            try:
                with self.env.begin(write=True) as txn:
                    for key, value in self.pending:
                        txn.put(key, value)
                break
            except lmdb.MapFullError:
                # The failed transaction was aborted; grow and replay it.
                self.env.set_mapsize(self.env.info()['map_size'] * 2)
        self.pending = []

    def close(self):
        self.commit()
        self.env.sync(True)
        self.env.close()


def _check_key(name, path):
    # BasicSR's LMDB backend encodes keys as ASCII, and meta_info/pairs.txt are line and
    # tab separated.
    if not name.isascii() or any(ch in name for ch in '\t\n\r'):
        raise LmdbFormatError(f'Image name must be ASCII without tabs or line breaks: {path}')


def _write_db(db_path, files, storage, level, pool, desc, progress, on_entry=None, dedupe=False):
    """Encode ``files`` (paths; the keys are their stems) into a new LMDB at ``db_path``.

    Returns (entries by key, {file name: name of the stored entry}, bytes stored). With
    ``dedupe``, a file whose pixels equal an earlier one's is not stored again but mapped to it.
    """
    keys = OrderedDict()
    for path in files:
        name = os.path.basename(path)
        _check_key(name, path)
        key = os.path.splitext(name)[0]
        if key in keys:
            raise LmdbFormatError(f'Two images would share the LMDB key {key!r}: {keys[key]} and {path}')
        keys[key] = path
    source_bytes = sum(os.path.getsize(p) for p in files)
    # PNG at a low compression level is often larger than the source; raw is far larger, and
    # the map grows from here when needed.
    writer = _GrowingLmdb(db_path, source_bytes * (8 if storage == 'raw' else 3))
    entries, stored_as, first_with, total = OrderedDict(), {}, {}, 0
    tasks = [(path, storage, level) for path in files]
    try:
        results = pool.imap(_encode_file, tasks, chunksize=4)
        for (key, path), (shape, dtype, value, digest, kind) in tqdm(
                zip(keys.items(), results), total=len(tasks), desc=desc, unit='img', disable=not progress):
            name = os.path.basename(path)
            if dedupe and digest in first_with:
                stored_as[name] = first_with[digest]
                continue
            entry = Entry(key, name, shape, kind, dtype)
            if on_entry is not None:
                on_entry(entry)
            writer.put(key, value)
            entries[key] = entry
            stored_as[name] = first_with[digest] = name
            total += len(value)
    finally:
        writer.close()
    meta = ''.join(meta_line(entry, level) + '\n' for entry in entries.values())
    atomic_write_bytes(os.path.join(db_path, META_FILE), meta.encode('utf-8'))
    return entries, stored_as, total


def output_state(output_dir):
    """'absent', 'complete' (a finished run), 'partial' (left by an interrupted run of this script)
    or 'foreign' (databases this script did not finish writing, e.g. BasicSR's own)."""
    paths = [os.path.join(output_dir, n) for n in (HAZY_DB, CLEAR_DB)]
    present = [p for p in paths if os.path.exists(p)]
    if not present:
        return 'absent'
    markers = []
    for path in present:
        try:
            markers.append(read_marker(path))
        except LmdbFormatError:
            return 'foreign'
    if any(m is None for m in markers):
        return 'foreign'
    if len(markers) == 2 and markers[0].get('run_id') == markers[1].get('run_id'):
        return 'complete'
    return 'partial'


def _install(staging, output_dir):
    """Move the finished databases into place: clear first, hazy last, so until the very last
    rename the markers never agree."""
    for name in (CLEAR_DB, HAZY_DB):
        final = os.path.join(output_dir, name)
        if os.path.exists(final):
            os.rename(final, os.path.join(staging, 'replaced-' + name))
        os.rename(os.path.join(staging, name), final)
    fsync_folder(output_dir)
    shutil.rmtree(staging)


def prepare_lmdb(hazy_dir, clear_dir, output_dir, dataset='paired', storage='auto', pairing=None,
                 overwrite=False, verify=False, skip_unpaired=False, workers=None, compress_level=1,
                 progress=True, log=print):
    """Write ``output_dir/hazy.lmdb`` and ``output_dir/clear.lmdb`` from two image folders.

    Args:
        dataset: a key of ``DATASET_PRESETS``; it picks the pairing rule.
        storage: 'auto' (PNG, but JPEG files as they are), 'png' (PNG throughout) or 'raw'
            (undecoded pixels: bigger, faster to read).
        pairing: 'prefix' or 'same_name' to override the preset's rule.
        overwrite: replace a complete (or foreign) output instead of refusing.
        verify: decode every stored entry before installing the output.
        skip_unpaired: list hazy images without a clear partner and leave them out.
        workers: encoding processes (default: every core).

    Returns:
        dict summary: pairs, hazy, clear, bytes (stored values), output paths.
    """
    if dataset not in DATASET_PRESETS:
        raise ValueError(f'Unknown dataset {dataset!r}; expected one of {", ".join(DATASET_PRESETS)}')
    if storage not in STORAGE_FORMATS:
        raise ValueError(f'Unknown storage {storage!r}; expected one of {STORAGE_FORMATS}')
    preset = DATASET_PRESETS[dataset]
    pairs, rule = pair_folders(hazy_dir, clear_dir, pairing or preset.pairing, skip_unpaired, log)

    clear_files = sorted({p.clear_path for p in pairs})
    log(f'{dataset}: {len(pairs)} hazy images paired with {len(clear_files)} clear images '
        f'(pairing rule {rule!r}, {preset.example})')
    if preset.full_size and preset.full_size[0] != len(pairs):
        log(f'Note: the full {dataset} set has {preset.full_size[0]} hazy images; preparing the '
            f'{len(pairs)} found')

    state = output_state(output_dir)
    if state in ('complete', 'foreign') and not overwrite:
        raise OutputExistsError(f'{output_dir} already holds {HAZY_DB}/{CLEAR_DB}'
                                f'{"" if state == "complete" else " not written by this script"}; '
                                'pass --overwrite to replace them')
    if state == 'partial':
        log(f'Replacing the incomplete output of an interrupted run in {output_dir}')

    staging = os.path.join(output_dir, STAGING_DIR)
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging)
    hazy_db, clear_db = os.path.join(staging, HAZY_DB), os.path.join(staging, CLEAR_DB)
    try:
        with _pool(workers) as pool:
            clear_entries, clear_stored_as, clear_bytes = _write_db(
                clear_db, clear_files, storage, compress_level, pool, 'clear', progress, dedupe=True)
            partner = {os.path.basename(p.hazy_path): p for p in pairs}
            clear_by_name = {e.name: e for e in clear_entries.values()}

            def check_size(entry):
                pair = partner[entry.name]
                clear = clear_by_name[clear_stored_as[os.path.basename(pair.clear_path)]]
                problem = pair_size_problem(pair.hazy_path, entry.shape[:2], pair.clear_path, clear.shape[:2])
                if problem:
                    raise PairSizeError(problem)

            hazy_entries, _, hazy_bytes = _write_db(hazy_db, [p.hazy_path for p in pairs], storage,
                                                    compress_level, pool, 'hazy', progress, check_size)
        if len(clear_entries) < len(clear_files):
            log(f'{len(clear_files) - len(clear_entries)} clear files are pixel-identical copies of others; '
                f'storing {len(clear_entries)} clear images')
        lines = (f'{os.path.basename(p.hazy_path)}\t{clear_stored_as[os.path.basename(p.clear_path)]}\n' for p in pairs)
        atomic_write_bytes(os.path.join(hazy_db, PAIRS_FILE), ''.join(lines).encode('utf-8'))
        marker = {'run_id': uuid.uuid4().hex, 'storage': storage, 'dataset': dataset, 'pairing': rule,
                  'pairs': len(pairs), 'clear_images': len(clear_entries)}
        write_marker(clear_db, dict(marker, role='clear', entries=len(clear_entries)))
        write_marker(hazy_db, dict(marker, role='hazy', entries=len(hazy_entries)))
        if verify:
            log(format_summary(verify_lmdb(hazy_db, clear_db, workers=workers, progress=progress)))
        _install(staging, output_dir)
    except BaseException:
        # Also on Ctrl-C: the staging folder is never something the dataset accepts, but there is
        # no reason to leave gigabytes of it behind.
        shutil.rmtree(staging, ignore_errors=True)
        raise
    summary = {'pairs': len(pairs), 'hazy': len(hazy_entries), 'clear': len(clear_entries),
               'bytes': hazy_bytes + clear_bytes, 'storage': storage, 'pairing': rule,
               'hazy_db': os.path.join(output_dir, HAZY_DB), 'clear_db': os.path.join(output_dir, CLEAR_DB)}
    log(f'Wrote {summary["hazy_db"]} and {summary["clear_db"]} ({storage}, {summary["bytes"] / 2**20:.1f} MiB)')
    return summary


def _verify_entry(task):
    """Pool worker: decode one entry and compare it with its meta_info shape."""
    db_path, entry = task
    value = read_value(db_path, entry.key)
    img = decode_entry(value, entry, db_path)
    shape = img.shape if img.ndim == 3 else img.shape + (1,)
    if tuple(shape) != tuple(entry.shape):
        raise LmdbFormatError(f'{db_path} key {entry.key!r} decodes to shape {tuple(shape)} but '
                              f'{META_FILE} records {tuple(entry.shape)}')
    return len(value)


def verify_lmdb(hazy_db, clear_db, workers=None, progress=True):
    """Re-read and decode every entry of a pair of databases; check shapes and pair sizes.

    Returns a summary dict: pairs, hazy, clear, bytes (stored values), disk_bytes (data files).
    """
    pairs = open_pairs(hazy_db, clear_db)
    hazy = OrderedDict((p.hazy.key, p.hazy) for p in pairs)
    clear = OrderedDict((p.clear.key, p.clear) for p in pairs)
    for p in pairs:
        problem = pair_size_problem(f'{hazy_db}:{p.hazy.name}', p.hazy.shape[:2],
                                    f'{clear_db}:{p.clear.name}', p.clear.shape[:2])
        if problem:
            raise PairSizeError(problem)
    tasks = [(hazy_db, e) for e in hazy.values()] + [(clear_db, e) for e in clear.values()]
    with _pool(workers) as pool:
        sizes = list(tqdm(pool.imap(_verify_entry, tasks, chunksize=8), total=len(tasks), desc='verify',
                          unit='img', disable=not progress))
    for db_path in (hazy_db, clear_db):
        close_env(db_path)  # do not hold the files open (or deleted) after the check
    disk = sum(os.path.getsize(os.path.join(d, f)) for d in (hazy_db, clear_db) for f in os.listdir(d)
               if os.path.isfile(os.path.join(d, f)))
    return {'pairs': len(pairs), 'hazy': len(hazy), 'clear': len(clear), 'bytes': sum(sizes),
            'disk_bytes': disk}


def format_summary(summary):
    return (f'Verified {summary["pairs"]} pairs: {summary["hazy"]} hazy and {summary["clear"]} clear '
            f'images, {summary["bytes"]:,} bytes of image data ({summary["disk_bytes"]:,} bytes on disk)')
