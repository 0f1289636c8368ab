"""The on-disk LMDB format of a prepared dehazing set, and reading it back.

A prepared set is two databases side by side, ``hazy.lmdb`` and ``clear.lmdb``, each laid out as
BasicSR's ``make_lmdb_from_imgs`` lays it out (``data.mdb``, ``lock.mdb`` and ``meta_info.txt``
with lines ``KEY.png (h,w,c) compress_level``; the key is the file name without its extension),
so BasicSR's ``FileClient`` LMDB backend reads every entry. On top of that:

- ``hazy.lmdb/pairs.txt`` maps each hazy file to its clear file (``hazy_name<TAB>clear_name``),
  because a clear image is stored once however many hazy images share it; reading needs no
  name rules.
- ``gunet_lmdb.json`` in each database is the completion marker: it is written last, and both
  databases of one run carry the same ``run_id``. A pair without matching markers is an
  interrupted or mixed preparation and is refused.
- ``storage: raw`` databases hold undecoded pixels (C-order uint8/uint16, OpenCV channel order)
  instead of PNG bytes, with meta lines ``KEY.raw (h,w,c) dtype``: larger on disk, no decoding.
- ``storage: auto`` (the default) is PNG except for JPEG files, which keep their downloaded bytes
  (meta lines ``KEY.jpg (h,w,c) source``): re-encoding a JPEG losslessly as PNG makes it several
  times larger and slower to decode, and adds nothing. BasicSR's readers decode these too.
- ``checksums.txt`` in each database holds the checksum of every stored value (``KEY<TAB>crc``), and
  the marker the checksum of the small files (meta_info.txt, checksums.txt, pairs.txt): every read
  verifies its record, so a damaged database is an error naming the record, never silently
  different pixels. Neither BasicSR's ``FileClient`` nor its meta_info reader looks at them.
  Databases of earlier versions of this package have no checksums and are read unverified.

A pair of databases without markers (BasicSR's own LMDBs) is read as BasicSR pairs them: the same
key in both.
"""
import json
import os
from collections import namedtuple

import lmdb
import numpy as np
import xxhash

from ..atomic import atomic_write_bytes
from .image_codec import ImageDecodeError, decode_image, image_dimensions

HAZY_DB = 'hazy.lmdb'
CLEAR_DB = 'clear.lmdb'
META_FILE = 'meta_info.txt'
PAIRS_FILE = 'pairs.txt'
MARKER_FILE = 'gunet_lmdb.json'
MARKER_FORMAT = 'gunet-paired-lmdb'
CHECKSUMS_FILE = 'checksums.txt'
CHECKSUM = 'xxh3_64'
STORAGE_FORMATS = ('auto', 'png', 'raw')

# One stored image: its LMDB key, the name it is reported under, its (h, w, c), how to decode it,
# and the checksum of its stored bytes (None: a database without checksums).
Entry = namedtuple('Entry', ['key', 'name', 'shape', 'storage', 'dtype', 'crc'], defaults=(None,))
# One training/validation pair read from a prepared set.
LmdbPair = namedtuple('LmdbPair', ['hazy', 'clear'])


class LmdbFormatError(ValueError):
    """A database that is missing, incomplete, or does not match its meta_info.txt."""


class CorruptRecordError(LmdbFormatError, ImageDecodeError):
    """A stored record whose bytes fail their checksum or do not decode to the recorded shape."""


def record_checksum(value):
    # xxHash's XXH3 (64 bits): 6.5 GB/s where zlib's checksum managed 1.1 GB/s on the same core.
    # checksum cost about half the loading time of a raw record, which does no decoding
    # (scripts/benchmark_data.py); any 64-bit hash finds a damaged record all the same.
    return xxhash.xxh3_64_intdigest(value)


def file_checksums(db_path, names):
    """checksum of the small files of a database, as the marker records them."""
    sums = {}
    for name in names:
        with open(os.path.join(db_path, name), 'rb') as f:
            sums[name] = record_checksum(f.read())
    return sums


def _check_files(db_path, marker):
    for name, expected in sorted(marker.get('files', {}).items()):
        try:
            actual = file_checksums(db_path, [name])[name]
        except OSError as err:
            raise LmdbFormatError(f'{db_path}/{name} is unreadable: {err}') from err
        if actual != expected:
            raise LmdbFormatError(f'{db_path}/{name} is damaged: its {CHECKSUM} is {actual:08x}, the completion marker '
                                  f'records {expected:08x}; copy the database again or prepare it again')


def read_checksums(db_path, entries):
    """``entries`` with the crc of each from ``db_path/checksums.txt``; every entry must have one."""
    path = os.path.join(db_path, CHECKSUMS_FILE)
    sums = {}
    try:
        with open(path, encoding='utf-8') as f:
            for number, line in enumerate(f, 1):
                key, _, crc = line.rstrip('\n').rpartition('\t')
                try:
                    sums[key] = int(crc, 16)
                except ValueError:
                    raise LmdbFormatError(f'{path}:{number}: malformed line {line!r} (expected "KEY<TAB>checksum")') \
                        from None
    except OSError as err:
        raise LmdbFormatError(f'{db_path} records checksums but {CHECKSUMS_FILE} is unreadable: {err}') from err
    lost = [key for key in entries if key not in sums]
    if lost:
        raise LmdbFormatError(_report(lost, f'keys of {db_path}/{META_FILE} have no checksum in {CHECKSUMS_FILE}'))
    return {key: entry._replace(crc=sums[key]) for key, entry in entries.items()}


def read_marker(db_path):
    """The completion marker of a database, or None when it has none."""
    path = os.path.join(db_path, MARKER_FILE)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding='utf-8') as f:
            marker = json.load(f)
    except (OSError, ValueError) as err:
        raise LmdbFormatError(f'Unreadable completion marker {path}: {err}') from err
    if marker.get('format') != MARKER_FORMAT:
        raise LmdbFormatError(f'{path} is not a completion marker of this package')
    return marker


def write_marker(db_path, marker):
    text = json.dumps(dict(marker, format=MARKER_FORMAT), indent=1, sort_keys=True)
    atomic_write_bytes(os.path.join(db_path, MARKER_FILE), text.encode('utf-8'))


def meta_line(entry, compress_level):
    h, w, c = entry.shape
    if entry.storage == 'raw':
        return f'{entry.key}.raw ({h},{w},{c}) {entry.dtype}'
    if entry.storage == 'source':
        return f'{entry.name} ({h},{w},{c}) source'
    return f'{entry.key}.png ({h},{w},{c}) {compress_level}'


def read_meta_info(db_path, storage='png'):
    """Entries listed in ``db_path/meta_info.txt``, in file order, keyed by LMDB key."""
    path = os.path.join(db_path, META_FILE)
    if not os.path.isfile(path):
        raise LmdbFormatError(f'No {META_FILE} in {db_path}: not a prepared LMDB (or an interrupted one)')
    entries = {}
    with open(path, encoding='utf-8') as f:
        for number, line in enumerate(f, 1):
            line = line.rstrip('\n')
            if not line.strip():
                continue
            try:
                # Split from the right: the name may hold spaces and dots, the other fields never do.
                name, shape, third = line.rsplit(' ', 2)
                h, w, c = (int(v) for v in shape.strip('()').split(','))
            except ValueError as err:
                raise LmdbFormatError(f'{path}:{number}: malformed line {line!r} '
                                      '(expected "KEY.png (h,w,c) level")') from err
            key = os.path.splitext(name)[0]
            if storage == 'raw':
                kind, dtype = 'raw', third
                if dtype not in ('uint8', 'uint16'):
                    raise LmdbFormatError(f'{path}:{number}: unknown pixel type {dtype!r}')
            else:
                kind, dtype = ('source' if third == 'source' else 'png'), 'uint8'
            entries[key] = Entry(key, name, (h, w, c), kind, dtype)
    if not entries:
        raise LmdbFormatError(f'{path} lists no images')
    return entries


def read_pairs_file(db_path):
    path = os.path.join(db_path, PAIRS_FILE)
    if not os.path.isfile(path):
        raise LmdbFormatError(f'No {PAIRS_FILE} in {db_path}: the hazy-to-clear mapping is missing')
    pairs = []
    with open(path, encoding='utf-8') as f:
        for number, line in enumerate(f, 1):
            line = line.rstrip('\n')
            if not line:
                continue
            fields = line.split('\t')
            if len(fields) != 2:
                raise LmdbFormatError(f'{path}:{number}: malformed line {line!r} (expected "hazy<TAB>clear")')
            pairs.append(tuple(fields))
    return pairs


# Read-only environments by (process, data file). py-lmdb refuses to open one database file twice
# in a process, and a forked loader worker inherits that registration together with a handle it
# must not use; so every reader shares one handle per process and file, and a child closes what it
# inherited before opening its own. (BasicSR's FileClient opens a new handle per dataset, which
# fails as soon as two datasets, or a dataset and a verification, read the same database.) Keying
# on the file, not the path, keeps a renamed database's handle valid and gives a replaced one
# (--overwrite) a fresh handle.
_ENVS = {}


def readonly_env(db_path):
    try:
        st = os.stat(os.path.join(db_path, 'data.mdb'))
    except OSError as err:
        raise LmdbFormatError(f'Not an LMDB folder (no data.mdb): {db_path}') from err
    key = (st.st_dev, st.st_ino)
    cached = _ENVS.get(key)
    if cached is not None and cached[0] == os.getpid():
        return cached[1]
    if cached is not None:
        cached[1].close()
    # Read-only and without a lock file: opens on read-only storage, and with lock.mdb deleted.
    try:
        env = lmdb.open(db_path, readonly=True, lock=False, readahead=False, subdir=True)
        # A data.mdb shorter than its last page (a copy cut short) is mapped all the same, and
        # reading past its end kills the process with SIGBUS: refuse it while that is still safe.
        needed = (env.info()['last_pgno'] + 1) * env.stat()['psize']
    except lmdb.Error as err:
        raise LmdbFormatError(f'Cannot open the LMDB {db_path}: {err}') from err
    if st.st_size < needed:
        env.close()
        raise LmdbFormatError(f'{db_path}/data.mdb is truncated: {st.st_size:,} bytes, but its pages end at byte '
                              f'{needed:,} (a copy cut short?); copy it again or prepare the set again')
    _ENVS[key] = (os.getpid(), env)
    return env


def close_env(db_path):
    """Drop this process's handle on a database (a later read opens a new one)."""
    try:
        st = os.stat(os.path.join(db_path, 'data.mdb'))
    except OSError:
        return
    cached = _ENVS.pop((st.st_dev, st.st_ino), None)
    if cached is not None and cached[0] == os.getpid():
        cached[1].close()


def read_value(db_path, key):
    """Bytes stored under ``key``, or None."""
    try:
        with readonly_env(db_path).begin(write=False) as txn:
            return txn.get(key.encode('ascii'))
    except lmdb.Error as err:
        raise CorruptRecordError(f'{db_path} key {key!r} cannot be read: {err}') from err


def missing_keys(db_path, keys):
    """Keys listed in meta_info that the database itself does not hold."""
    try:
        with readonly_env(db_path).begin(write=False) as txn:
            stored = set(txn.cursor().iternext(keys=True, values=False))
    except lmdb.Error as err:
        raise LmdbFormatError(f'The LMDB {db_path} is damaged: {err}') from err
    return [k for k in keys if k.encode('ascii') not in stored]


def _check_complete(hazy_db, clear_db):
    """(hazy marker, clear marker) or (None, None) for BasicSR's databases; refuses a pair that is not
    the output of one finished run."""
    for path in (hazy_db, clear_db):
        if not os.path.isdir(path):
            raise LmdbFormatError(f'LMDB folder does not exist: {path}')
    hazy_marker, clear_marker = read_marker(hazy_db), read_marker(clear_db)
    if hazy_marker is None and clear_marker is None:
        return None, None
    if hazy_marker is None or clear_marker is None or hazy_marker.get('run_id') != clear_marker.get('run_id'):
        raise LmdbFormatError(f'{hazy_db} and {clear_db} do not come from one complete run of '
                              'scripts/prepare_lmdb.py (interrupted, or databases of different runs); '
                              'run it again to finish the job')
    return hazy_marker, clear_marker


def _report(problems, what):
    shown = ', '.join(problems[:20]) + (f' ... and {len(problems) - 20} more' if len(problems) > 20 else '')
    return f'{len(problems)} {what}: {shown}'


def _read_entries(db_path, marker, log):
    entries = read_meta_info(db_path, (marker or {}).get('storage', 'png'))
    if marker is not None:
        _check_files(db_path, marker)
    if marker is not None and marker.get('checksum') == CHECKSUM:
        return read_checksums(db_path, entries)
    if log is not None:
        log(f'{db_path} has no record checksums (written by BasicSR or by an earlier version of '
            'scripts/prepare_lmdb.py): its records are read without verification; prepare it again to add them')
    return entries


def open_pairs(hazy_db, clear_db, check_stored=True, log=None):
    """Every (hazy, clear) pair of a prepared set, as ``LmdbPair`` of two ``Entry``.

    Prepared sets are paired through ``pairs.txt``; BasicSR's LMDBs (no markers) through identical
    keys. Keys that meta_info lists but the database lacks are an error naming them. Entries carry
    their checksums where the database has them; ``log`` is told when it has none.
    """
    marker, clear_marker = _check_complete(hazy_db, clear_db)
    hazy_entries = _read_entries(hazy_db, marker, log)
    clear_entries = _read_entries(clear_db, clear_marker, log)
    if marker is None:
        names = [(e.name, e.name) for e in hazy_entries.values()]
    else:
        # The source file names (``0001_0.8_0.2.jpg``), which results are then named after.
        names = read_pairs_file(hazy_db)

    pairs, unknown = [], []
    for hazy_name, clear_name in names:
        hazy_key, clear_key = os.path.splitext(hazy_name)[0], os.path.splitext(clear_name)[0]
        hazy, clear = hazy_entries.get(hazy_key), clear_entries.get(clear_key)
        if hazy is None or clear is None:
            unknown.append(f'{hazy_key}->{clear_key}')
            continue
        pairs.append(LmdbPair(hazy._replace(name=hazy_name), clear._replace(name=clear_name)))
    if unknown:
        raise LmdbFormatError(_report(unknown, f'pairs of {hazy_db} name keys that are not in the '
                                      f'meta_info.txt of {hazy_db} / {clear_db}'))
    if check_stored:
        for db_path, entries in ((hazy_db, hazy_entries), (clear_db, clear_entries)):
            lost = missing_keys(db_path, list(entries))
            if lost:
                raise LmdbFormatError(_report(lost, f'keys listed in {db_path}/{META_FILE} are missing '
                                              'from the database'))
    return pairs


def limit_problems(db_path, entries, max_pixels, option='max_pixels'):
    """Entries whose recorded size is over ``max_pixels`` (0: no limit), as messages."""
    return [f'{db_path} key {e.key!r} (from {e.name}) is {e.shape[1]}x{e.shape[0]} pixels, over the limit of '
            f'{max_pixels / 1e6:g} megapixels ({option} raises it)'
            for e in entries if max_pixels and e.shape[0] * e.shape[1] > max_pixels]


def decode_entry(value, entry, db_path):
    """Pixels of one stored entry, in OpenCV channel order, after checking its checksum, and its
    size against meta_info before decoding (meta_info sizes are what the pixel limit was checked
    on), so that a damaged or doctored record is an error naming it, never different pixels."""
    where = f'{db_path} key {entry.key!r} (from {entry.name})'
    if value is None:
        raise LmdbFormatError(f'Key {entry.key!r} is listed in {db_path}/{META_FILE} but missing from the database')
    if entry.crc is not None:
        crc = record_checksum(value)
        if crc != entry.crc:
            raise CorruptRecordError(f'Corrupt record: {where} fails its {CHECKSUM} check (recorded {entry.crc:08x}, '
                                     f'read {crc:08x}); the database is damaged: copy it again or prepare it again')
    height, width = entry.shape[:2]
    if entry.storage == 'raw':
        dtype = np.dtype(entry.dtype)
        expected = int(np.prod(entry.shape)) * dtype.itemsize
        if len(value) != expected:
            raise CorruptRecordError(f'Raw entry of {len(value)} bytes, expected {expected} for shape '
                                     f'{entry.shape}: {where}')
        return np.frombuffer(value, dtype).reshape(entry.shape)
    dims = image_dimensions(value)
    if dims != (height, width):
        said = 'an unreadable size' if dims is None else f'{dims[1]}x{dims[0]}'
        raise CorruptRecordError(f'{where}: the stored image header says {said} but {META_FILE} records '
                                 f'{width}x{height}; refused before decoding')
    img = decode_image(value, where, 0)  # the size is known to be the recorded one
    if img.shape[:2] != (height, width):
        raise CorruptRecordError(f'{where} decodes to {img.shape[1]}x{img.shape[0]} but {META_FILE} records '
                                 f'{width}x{height}')
    return img
