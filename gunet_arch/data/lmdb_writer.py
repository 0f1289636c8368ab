"""Preparing a dehazing set (hazy + clear folders) as a pair of LMDBs, and verifying one.

The work happens in a staging folder next to the output (``OUTPUT/.prepare_lmdb.partial``) and
the finished databases are renamed into place only at the end, with completion markers written
last, so a run killed at any point leaves nothing the dataset accepts; the next run clears the
staging folder and starts again.

Source images come from outside and are checked as such: every file is read, its format
recognised by content, its size checked against ``max_pixels`` before it is decoded, and every
file that cannot be used is listed in one error at the end (nothing is written then), so that one
run names all the files to fix.
"""
import hashlib
import io
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
from .image_codec import DEFAULT_MAX_PIXELS, ImageDecodeError, check_pixel_limit, decode_training_image, to_bgr
from .lmdb_store import (
    CHECKSUM,
    CHECKSUMS_FILE,
    CLEAR_DB,
    HAZY_DB,
    META_FILE,
    PAIRS_FILE,
    STORAGE_FORMATS,
    Entry,
    LmdbFormatError,
    close_env,
    decode_entry,
    file_checksums,
    limit_problems,
    meta_line,
    open_pairs,
    read_marker,
    read_value,
    record_checksum,
    write_marker,
)
from .pairing import (  # noqa: F401  (DATASET_PRESETS: importers of this module read the set table here too)
    DATASET_PRESETS,
    PairingError,
    PairSizeError,
    describe_split,
    pair_folders,
    pair_size_problem,
    printable,
    published_split,
    refused_images,
)

STAGING_DIR = '.prepare_lmdb.partial'
# Entries per write transaction: a commit is a sync point; its buffer is what gets re-put when the
# map has to grow.
_COMMIT_EVERY = 128
_MIN_MAP_SIZE = 64 << 20


class OutputExistsError(FileExistsError):
    """The output already holds databases that this run would replace."""


class SourceImagesError(ValueError):
    """Problems of several kinds with the source images (decoding, sizes, names), listed together.
    Problems all of one kind are raised as that kind instead (e.g. ImageDecodeError)."""


def raise_problems(problems, header):
    """Raise one error listing every problem (exceptions or messages), if there is any."""
    if not problems:
        return
    kinds = {type(p) for p in problems if isinstance(p, Exception)}
    kind = kinds.pop() if len(kinds) == 1 and all(isinstance(p, Exception) for p in problems) else SourceImagesError
    message = f'{header}:\n' + '\n'.join(f'  {p}' for p in problems)
    try:
        error = kind(message)
    except TypeError:  # an exception type that takes other arguments
        error = SourceImagesError(message)
    error.problems = list(problems)
    raise error


# What each EXIF orientation would do to the stored pixels.
_ORIENTATIONS = {2: 'mirror', 3: 'rotate 180', 4: 'flip', 5: 'transpose', 6: 'rotate 90 clockwise', 7: 'transverse',
                 8: 'rotate 90 counter-clockwise'}
# Enough of a file for the header of every format met in practice (JPEG: after its APP segments).
_HEAD_BYTES = 1 << 20
Encoded = namedtuple('Encoded', ['shape', 'dtype', 'value', 'digest', 'kind', 'crc', 'notes'])


# Below this many images a worker pool costs more than it saves: each worker starts by importing
# this module, and torch with it (seconds), while an image encodes in milliseconds.
IN_PROCESS_JOBS = 16


class _InProcess:
    """The one pool method used here (imap), run in this process."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    @staticmethod
    def imap(fn, items, chunksize=1):
        return map(fn, items)


def _pool(workers, jobs):
    """A worker pool for ``jobs`` tasks, started from a fresh server process: forking a process
    that already runs torch's (or any) worker threads can deadlock a child, which then hangs the
    whole pool. One worker, or a small job, runs in this process instead."""
    if workers == 1 or jobs <= IN_PROCESS_JOBS:
        return _InProcess()
    context = multiprocessing.get_context('forkserver')
    # The server imports this module (and torch with it) once; every worker forks from it ready.
    context.set_forkserver_preload([__name__])
    return context.Pool(workers or os.cpu_count() or 1)


def _source_notes(buf, name):
    """What the stored pixels leave out of a decodable file: frames after the first (animated
    WebP/PNG, multi-page TIFF), and an EXIF orientation. Returns (notes, orientation), the
    orientation None when Pillow cannot read the file's metadata."""
    from PIL import Image

    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # the size is checked already
    try:
        with Image.open(io.BytesIO(buf)) as im:
            frames = getattr(im, 'n_frames', 1)
            # A PNG's eXIf chunk after its pixels would take decoding the file to find.
            exif = im.getexif() if im.format != 'PNG' or 'exif' in im.info else {}
            orientation = exif.get(0x0112, 1)
    except Exception:  # noqa: BLE001 - the notes are information; OpenCV has decoded the file
        return [], None
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    notes = []
    if frames > 1:
        notes.append(f'{name}: {frames} frames (animated or multi-page); only the first frame is used')
    if orientation in _ORIENTATIONS:
        notes.append(f'{name}: EXIF orientation {orientation} ({_ORIENTATIONS[orientation]}) is ignored; the pixels '
                     'are used as stored, as in the hazy/clear pairs they were made from')
    return notes, orientation


def _encode_file(task):
    """Pool worker: (path, storage, level, max_pixels) -> ``Encoded`` (shape, dtype, value bytes,
    pixel digest, kind of entry: 'png', 'raw' or 'source' for a file stored as it is, checksum of
    the value, notes for the log), or the exception that makes the file unusable: it is reported
    together with every other bad file, not as the first failure."""
    path, storage, level, max_pixels = task
    name = printable(path)
    try:
        with open(path, 'rb') as f:
            buf = f.read(_HEAD_BYTES)
            # A header claiming too many pixels is refused before the rest of the file is read.
            check_pixel_limit(buf, name, max_pixels, '--max-pixels')
            buf += f.read()
    except OSError as err:
        return LmdbFormatError(f'Cannot read image file {name}: {err.strerror or err}')
    except ValueError as err:
        return err
    try:
        decoded = decode_training_image(buf, name, max_pixels, '--max-pixels')
        notes, orientation = _source_notes(buf, name)
        img = np.ascontiguousarray(to_bgr(decoded))
        # Identifies copies of one clear image (the official IN/GT rearrangement has one per hazy
        # image) whatever file they came from, so each is stored once.
        digest = hashlib.blake2b(img.tobytes(), digest_size=16)
        digest.update(repr((img.shape, img.dtype.str)).encode())
        if storage == 'auto' and buf[:3] == b'\xff\xd8\xff' and orientation == 1:
            # A JPEG stays as downloaded (see lmdb_store); the recorded shape is what it decodes to.
            # Not one with an EXIF rotation (or unreadable metadata): BasicSR's imfrombytes would turn
            # it, and its pixels would no longer match their partner's; as PNG every reader sees
            # them as stored.
            shape = decoded.shape if decoded.ndim == 3 else decoded.shape + (1,)
            return Encoded(shape, str(decoded.dtype), buf, digest.hexdigest(), 'source', record_checksum(buf), notes)
        if storage == 'raw':
            value = img.tobytes()
        else:
            # Run-length deflate: in scripts/benchmark_data.py's measurements it decodes faster than
            # zlib's default strategy at the same level (and than typical level-6 downloads), at a
            # similar size; loader speed is what the LMDB is for.
            ok, encoded = cv2.imencode('.png', img, [cv2.IMWRITE_PNG_COMPRESSION, level,
                                                     cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE])
            if not ok:
                return LmdbFormatError(f'PNG encoding failed for {name}')
            value = encoded.tobytes()
    except ValueError as err:
        return err
    except cv2.error as err:
        return ImageDecodeError(f'{name}: OpenCV cannot handle it: {err}')
    return Encoded(img.shape, str(img.dtype), value, digest.hexdigest(), 'raw' if storage == 'raw' else 'png',
                   record_checksum(value), notes)


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


def _key_problem(name, path):
    # BasicSR's LMDB backend encodes keys as ASCII, and meta_info/pairs.txt are line and
    # tab separated.
    if any(ch in name for ch in '\t\n\r'):
        return LmdbFormatError(f'{printable(path)}: the file name holds a tab or line break; rename the file')
    if not name.isascii():
        undecodable = os.fsencode(name) != name.encode('utf-8', 'replace')
        what = 'is not valid UTF-8' if undecodable else 'is not ASCII'
        return LmdbFormatError(f'{printable(path)}: the file name {what} (LMDB keys are ASCII, as BasicSR\'s '
                               'FileClient reads them); rename the file')
    return None


def _write_db(db_path, files, storage, level, pool, desc, progress, problems, on_entry=None, dedupe=False,
              max_pixels=DEFAULT_MAX_PIXELS, log=print):
    """Encode ``files`` (paths; the keys are their stems) into a new LMDB at ``db_path``.

    Returns (entries by key, {file name: name of the stored entry}, bytes stored). With
    ``dedupe``, a file whose pixels equal an earlier one's is not stored again but mapped to it.
    A file that cannot be used is added to ``problems`` and the others are still checked; from
    the first problem on nothing more is stored (the output will not be installed).
    """
    keys = OrderedDict()
    for path in files:
        name = os.path.basename(path)
        key = os.path.splitext(name)[0]
        problem = _key_problem(name, path)
        if problem is None and key in keys:
            problem = LmdbFormatError(f'Two images would share the LMDB key {key!r}: {printable(keys[key])} and '
                                      f'{printable(path)}')
        if problem is not None:
            problems.append(problem)
            continue
        keys[key] = path
    source_bytes = sum(os.path.getsize(p) for p in keys.values())
    # PNG at a low compression level is often larger than the source; raw is far larger, and
    # the map grows from here when needed.
    writer = _GrowingLmdb(db_path, source_bytes * (8 if storage == 'raw' else 3))
    entries, stored_as, first_with, total = OrderedDict(), {}, {}, 0
    tasks = [(path, storage, level, max_pixels) for path in keys.values()]
    try:
        results = pool.imap(_encode_file, tasks, chunksize=4)
        for (key, path), result in tqdm(zip(keys.items(), results), total=len(tasks), desc=desc, unit='img',
                                        disable=not progress):
            if isinstance(result, Exception):
                problems.append(result)
                continue
            for note in result.notes:
                log(note)
            name = os.path.basename(path)
            if dedupe and result.digest in first_with:
                stored_as[name] = first_with[result.digest]
                continue
            entry = Entry(key, name, result.shape, result.kind, result.dtype, result.crc)
            if on_entry is not None:
                try:
                    on_entry(entry)
                except ValueError as err:
                    problems.append(err)
                    continue
            if not problems:
                writer.put(key, result.value)
            entries[key] = entry
            stored_as[name] = first_with[result.digest] = name
            total += len(result.value)
    finally:
        writer.close()
    if not problems:
        meta = ''.join(meta_line(entry, level) + '\n' for entry in entries.values())
        atomic_write_bytes(os.path.join(db_path, META_FILE), meta.encode('utf-8'))
        sums = ''.join(f'{entry.key}\t{entry.crc:08x}\n' for entry in entries.values())
        atomic_write_bytes(os.path.join(db_path, CHECKSUMS_FILE), sums.encode('utf-8'))
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
                 progress=True, log=print, max_pixels=DEFAULT_MAX_PIXELS, split=None):
    """Write ``output_dir/hazy.lmdb`` and ``output_dir/clear.lmdb`` from two image folders.

    Args:
        dataset: a key of ``DATASET_PRESETS``; it picks the pairing rule.
        storage: 'auto' (PNG, but JPEG files as they are), 'png' (PNG throughout) or 'raw'
            (undecoded pixels: bigger, faster to read).
        pairing: 'prefix' or 'same_name' to override the preset's rule.
        overwrite: replace a complete (or foreign) output instead of refusing.
        verify: check every stored entry (checksum, decoding, shape) before installing the output.
        skip_unpaired: list hazy images without a clear partner and leave them out.
        workers: encoding processes (default: every core).
        max_pixels: images whose header claims more pixels are refused before decoding (0: no limit).
        split: 'train', 'val', 'test' or 'trainval': only the images of that part of the set's
            published split (``pairing.PUBLISHED_SPLITS``; NH-HAZE, Dense-HAZE, O-HAZE, I-HAZE).

    Every source file that cannot be used (unreadable, truncated, not an image, over the pixel
    limit, an unusable name, a size that does not fit its partner) is listed in one error, and
    nothing is written.

    Returns:
        dict summary: pairs, hazy, clear, bytes (stored values), output paths.
    """
    if dataset not in DATASET_PRESETS:
        raise ValueError(f'Unknown dataset {dataset!r}; expected one of {", ".join(DATASET_PRESETS)}')
    if storage not in STORAGE_FORMATS:
        raise ValueError(f'Unknown storage {storage!r}; expected one of {STORAGE_FORMATS}')
    preset = DATASET_PRESETS[dataset]
    chosen = published_split(dataset, split) if split is not None else None
    # dict.fromkeys: a folder that holds hazy and clear images (NH-HAZE) would list its refusals twice.
    refused = dict.fromkeys(refused_images(hazy_dir) + refused_images(clear_dir))
    problems = [ImageDecodeError(message) for message in refused]
    try:
        pairs, rule = pair_folders(hazy_dir, clear_dir, pairing or preset.pairing, skip_unpaired,
                                   lambda message: log(printable(message)), split=chosen)
    except PairingError as err:
        if not problems:
            raise
        raise_problems(problems + [err], f'{len(problems) + 1} problems with the source images; nothing was written')

    clear_files = sorted({p.clear_path for p in pairs})
    log(f'{dataset}: {len(pairs)} hazy images paired with {len(clear_files)} clear images '
        f'(pairing rule {rule!r}, {preset.example})' + (f', {describe_split(chosen)}' if chosen else ''))
    expected = chosen.last - chosen.first + 1 if chosen else preset.full_size and preset.full_size[0]
    if expected and expected != len(pairs):
        whole = describe_split(chosen) if chosen else f'the full {dataset} set'
        log(f'Note: {whole} has {expected} hazy images; preparing the {len(pairs)} found')

    state = output_state(output_dir)
    if state in ('complete', 'foreign') and not overwrite:
        raise OutputExistsError(f'{output_dir} already holds {HAZY_DB}/{CLEAR_DB}'
                                f'{"" if state == "complete" else " not written by this script"}; '
                                'pass --overwrite to replace them')
    if state == 'partial':
        log(f'Replacing the incomplete output of an interrupted run in {output_dir}')

    staging = os.path.join(output_dir, STAGING_DIR)
    created = not os.path.isdir(output_dir)
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging)
    hazy_db, clear_db = os.path.join(staging, HAZY_DB), os.path.join(staging, CLEAR_DB)
    try:
        with _pool(workers, len(clear_files) + len(pairs)) as pool:
            clear_entries, clear_stored_as, clear_bytes = _write_db(
                clear_db, clear_files, storage, compress_level, pool, 'clear', progress, problems, dedupe=True,
                max_pixels=max_pixels, log=log)
            partner = {os.path.basename(p.hazy_path): p for p in pairs}
            clear_by_name = {e.name: e for e in clear_entries.values()}

            def check_size(entry):
                pair = partner[entry.name]
                clear = clear_by_name.get(clear_stored_as.get(os.path.basename(pair.clear_path)))
                if clear is None:
                    return  # the clear image is unusable, and listed as such
                problem = pair_size_problem(pair.hazy_path, entry.shape[:2], pair.clear_path, clear.shape[:2])
                if problem:
                    raise PairSizeError(problem)

            hazy_entries, _, hazy_bytes = _write_db(hazy_db, [p.hazy_path for p in pairs], storage,
                                                    compress_level, pool, 'hazy', progress, problems, check_size,
                                                    max_pixels=max_pixels, log=log)
        raise_problems(problems, f'{len(problems)} source images cannot be used; nothing was written to {output_dir}')
        if len(clear_entries) < len(clear_files):
            log(f'{len(clear_files) - len(clear_entries)} clear files are pixel-identical copies of others; '
                f'storing {len(clear_entries)} clear images')
        lines = (f'{os.path.basename(p.hazy_path)}\t{clear_stored_as[os.path.basename(p.clear_path)]}\n' for p in pairs)
        atomic_write_bytes(os.path.join(hazy_db, PAIRS_FILE), ''.join(lines).encode('utf-8'))
        marker = {'run_id': uuid.uuid4().hex, 'storage': storage, 'dataset': dataset, 'pairing': rule,
                  'pairs': len(pairs), 'clear_images': len(clear_entries), 'checksum': CHECKSUM, 'split': split}
        small_files = [META_FILE, CHECKSUMS_FILE]
        write_marker(clear_db, dict(marker, role='clear', entries=len(clear_entries),
                                    files=file_checksums(clear_db, small_files)))
        write_marker(hazy_db, dict(marker, role='hazy', entries=len(hazy_entries),
                                   files=file_checksums(hazy_db, small_files + [PAIRS_FILE])))
        if verify:
            log(format_summary(verify_lmdb(hazy_db, clear_db, workers=workers, progress=progress,
                                           max_pixels=max_pixels, log=log)))
        _install(staging, output_dir)
    except BaseException:
        # Also on Ctrl-C: the staging folder is never something the dataset accepts, but there is
        # no reason to leave gigabytes of it behind.
        shutil.rmtree(staging, ignore_errors=True)
        if created and os.path.isdir(output_dir) and not os.listdir(output_dir):
            os.rmdir(output_dir)
        raise
    summary = {'pairs': len(pairs), 'hazy': len(hazy_entries), 'clear': len(clear_entries),
               'bytes': hazy_bytes + clear_bytes, 'storage': storage, 'pairing': rule,
               'hazy_db': os.path.join(output_dir, HAZY_DB), 'clear_db': os.path.join(output_dir, CLEAR_DB)}
    log(f'Wrote {summary["hazy_db"]} and {summary["clear_db"]} ({storage}, {summary["bytes"] / 2**20:.1f} MiB)')
    return summary


def _verify_entry(task):
    """Pool worker: check one entry's checksum, decode it and compare it with its meta_info shape;
    returns its size in bytes, or the exception (every bad entry is listed, not only the first)."""
    db_path, entry = task
    try:
        value = read_value(db_path, entry.key)
        img = decode_entry(value, entry, db_path)
    except ValueError as err:
        return err
    shape = img.shape if img.ndim == 3 else img.shape + (1,)
    if tuple(shape) != tuple(entry.shape):
        return LmdbFormatError(f'{db_path} key {entry.key!r} decodes to shape {tuple(shape)} but '
                               f'{META_FILE} records {tuple(entry.shape)}')
    return len(value)


def verify_lmdb(hazy_db, clear_db, workers=None, progress=True, max_pixels=DEFAULT_MAX_PIXELS, log=print):
    """Re-read every entry of a pair of databases: checksums (where the databases have them),
    decoding, shapes, pair sizes and the pixel limit. Every problem is listed in one error.

    Returns a summary dict: pairs, hazy, clear, bytes (stored values), disk_bytes (data files),
    checksummed (entries whose checksum was verified).
    """
    pairs = open_pairs(hazy_db, clear_db, log=log)
    hazy = OrderedDict((p.hazy.key, p.hazy) for p in pairs)
    clear = OrderedDict((p.clear.key, p.clear) for p in pairs)
    problems = []
    for p in pairs:
        problem = pair_size_problem(f'{hazy_db}:{p.hazy.name}', p.hazy.shape[:2],
                                    f'{clear_db}:{p.clear.name}', p.clear.shape[:2])
        if problem:
            problems.append(PairSizeError(f'{problem} [keys {p.hazy.key!r} and {p.clear.key!r}]'))
    problems += [LmdbFormatError(m) for m in limit_problems(hazy_db, hazy.values(), max_pixels, '--max-pixels')
                 + limit_problems(clear_db, clear.values(), max_pixels, '--max-pixels')]
    raise_problems(problems, f'{len(problems)} problems in {hazy_db} and {clear_db}')
    tasks = [(hazy_db, e) for e in hazy.values()] + [(clear_db, e) for e in clear.values()]
    with _pool(workers, len(tasks)) as pool:
        sizes = list(tqdm(pool.imap(_verify_entry, tasks, chunksize=8), total=len(tasks), desc='verify',
                          unit='img', disable=not progress))
    for db_path in (hazy_db, clear_db):
        close_env(db_path)  # do not hold the files open (or deleted) after the check
    bad = [s for s in sizes if isinstance(s, Exception)]
    raise_problems(bad, f'{len(bad)} of the {len(tasks)} entries of {hazy_db} and {clear_db} are bad')
    disk = sum(os.path.getsize(os.path.join(d, f)) for d in (hazy_db, clear_db) for f in os.listdir(d)
               if os.path.isfile(os.path.join(d, f)))
    return {'pairs': len(pairs), 'hazy': len(hazy), 'clear': len(clear), 'bytes': sum(sizes),
            'disk_bytes': disk, 'checksummed': sum(e.crc is not None for _, e in tasks)}


def format_summary(summary):
    checked = summary.get('checksummed', 0)
    total = summary['hazy'] + summary['clear']
    sums = (f'{CHECKSUM} checksums of all {total} entries match' if checked == total else
            f'{checked} of {total} entries have checksums' if checked else 'no checksums to check (an older database)')
    return (f'Verified {summary["pairs"]} pairs: {summary["hazy"]} hazy and {summary["clear"]} clear '
            f'images, {summary["bytes"]:,} bytes of image data ({summary["disk_bytes"]:,} bytes on disk); {sums}')
