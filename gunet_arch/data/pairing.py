"""Which clear image belongs to which hazy image (and which sizes fit together), for the dehazing
sets as they are distributed.

Two rules cover every set:

- ``prefix``: the clear image is named after the hazy name up to its first ``_``, with any
  extension (ITS ``1_1_0.90179.png`` -> ``1.png``, OTS ``0005_0.8_0.04.jpg`` -> ``0005.jpg``,
  SOTS-outdoor ``0001_0.8_0.2.jpg`` -> ``0001.png``, Haze4K ``1_0.89_1.56.png`` -> ``1.png``).
- ``same_name``: hazy and clear files carry the same name (RS-Haze, and the official gUNet
  ``IN/`` + ``GT/`` rearrangement).

Hazy names hold dots inside (``0.90179``), so a name is only ever split at its *last* dot, which
``os.path.splitext`` does; splitting at the first dot would turn ``1_1_0.90179`` into ``1_1_0``.
"""
import os
from collections import namedtuple

from .image_codec import IMAGE_EXTENSIONS, REFUSED_FORMATS, is_image_file

PAIRING_RULES = ('prefix', 'same_name')
# Image files that are in no pairing but must not be passed over in silence either.
REFUSED_EXTENSIONS = {'.gif': 'GIF'}
# How many offending names an error message spells out before it only counts the rest.
_LISTED = 20

Pair = namedtuple('Pair', ['hazy_path', 'clear_path'])


class PairingError(ValueError):
    """Folders that cannot be paired: missing or empty, unpaired or ambiguous names."""


class PairSizeError(ValueError):
    """A hazy image and its clear image whose sizes do not fit together."""


def pair_size_problem(hazy_name, hazy_hw, clear_name, clear_hw):
    """None when the pair fits (same size, or clear larger in both dimensions, which the datasets
    centre-crop as SOTS-indoor needs), else the error message naming both files and sizes."""
    if hazy_hw == clear_hw or (clear_hw[0] > hazy_hw[0] and clear_hw[1] > hazy_hw[1]):
        return None
    return (f'Size mismatch: hazy {printable(hazy_name)} is {hazy_hw[0]}x{hazy_hw[1]} (HxW) but clear '
            f'{printable(clear_name)} is {clear_hw[0]}x{clear_hw[1]}; the clear image must be the same size or '
            'larger in both dimensions')


def printable(name):
    """A file name as it can be printed: bytes that are not UTF-8 (Linux keeps names as bytes) are
    shown as \\x escapes instead of making a log line or an error message fail."""
    return os.fsencode(name).decode('utf-8', 'backslashreplace')


def refused_images(folders):
    """Messages for the image files in ``folders`` of a format that is never used for training."""
    if isinstance(folders, (str, os.PathLike)):
        folders = [folders]
    found = []
    for folder in folders:
        if os.path.isdir(folder):
            for name in sorted(os.listdir(folder)):
                kind = REFUSED_EXTENSIONS.get(os.path.splitext(name)[1].lower())
                if kind and not name.startswith('.') and os.path.isfile(os.path.join(folder, name)):
                    found.append(f'{printable(os.path.join(folder, name))}: {REFUSED_FORMATS[kind]}')
    return found


def stem(name):
    """File name without its extension (cut at the last dot only)."""
    return os.path.splitext(name)[0]


def list_images(folder):
    """Sorted image file names in ``folder``; an error when there is none."""
    if not os.path.isdir(folder):
        raise PairingError(f'Image folder does not exist: {folder}')
    # Hidden files are skipped: archives packed on macOS carry a ``._1.png`` beside every ``1.png``.
    names = sorted(n for n in os.listdir(folder) if is_image_file(n)
                   and not n.startswith('.') and os.path.isfile(os.path.join(folder, n)))
    if not names:
        raise PairingError(f'No images ({", ".join(IMAGE_EXTENSIONS)}) in folder: {folder}')
    return names


def list_image_paths(folders):
    """Name -> path over one folder or several (OTS ships its hazy images in ``part1``..``part4``).
    A name found in two folders is an error: names are the keys that pair and store images."""
    if isinstance(folders, (str, os.PathLike)):
        folders = [folders]
    paths = {}
    for folder in folders:
        for name in list_images(folder):
            path = os.path.join(folder, name)
            if name in paths:
                raise PairingError(f'The same image name is in two folders: {printable(paths[name])} and '
                               f'{printable(path)}')
            paths[name] = path
    return dict(sorted(paths.items()))


def clear_stem_of(hazy_name, rule):
    """The clear stem a hazy file name points to under ``rule``."""
    if rule == 'prefix':
        base = stem(hazy_name)
        return base.split('_', 1)[0]
    if rule == 'same_name':
        return stem(hazy_name)
    raise ValueError(f'Unknown pairing rule {rule!r}; expected one of {PAIRING_RULES}')


def _index_by_stem(clear_paths):
    """Clear stem -> path. Two clear files with one stem (``1.png`` and ``1.jpg``) would make the
    partner ambiguous, so they are an error."""
    by_stem = {}
    for name, path in clear_paths.items():
        key = stem(name)
        if key in by_stem:
            raise PairingError(f'Two clear images share the name {printable(key)!r}: {printable(by_stem[key])} '
                               f'and {printable(path)}; keep one of them')
        by_stem[key] = path
    return by_stem


def detect_rule(hazy_names, clear_names):
    """``same_name`` when every hazy name has a clear file of the same stem, else ``prefix``."""
    clear_stems = {stem(n) for n in clear_names}
    if all(stem(n) in clear_stems for n in hazy_names):
        return 'same_name'
    return 'prefix'


def _folders(folders):
    return folders if isinstance(folders, (str, os.PathLike)) else ', '.join(map(str, folders))


def _describe(names):
    shown = ', '.join(printable(n) for n in names[:_LISTED])
    more = f' ... and {len(names) - _LISTED} more' if len(names) > _LISTED else ''
    return shown + more


def pair_folders(hazy_dir, clear_dir, rule=None, skip_unpaired=False, log=print):
    """Pair every image in ``hazy_dir`` with its clear image in ``clear_dir``.

    Args:
        hazy_dir, clear_dir: a folder, or a list of folders whose images count as one.
        rule: ``prefix``, ``same_name`` or None to detect it from the names.
        skip_unpaired: hazy images without a partner are listed either way; when True they are
            then left out, otherwise they are an error.
        log: where the list of skipped images goes.

    Returns:
        (list[Pair], rule): pairs in hazy-name order, and the rule that made them.
    """
    hazy_paths = list_image_paths(hazy_dir)
    clear_paths = list_image_paths(clear_dir)
    if rule is None:
        rule = detect_rule(list(hazy_paths), list(clear_paths))
    elif rule not in PAIRING_RULES:
        raise ValueError(f'Unknown pairing rule {rule!r}; expected one of {PAIRING_RULES}')
    by_stem = _index_by_stem(clear_paths)

    pairs, unpaired = [], []
    for name, path in hazy_paths.items():
        partner = by_stem.get(clear_stem_of(name, rule))
        if partner is None:
            unpaired.append(name)
        else:
            pairs.append(Pair(path, partner))

    if unpaired:
        message = (f'{len(unpaired)} of {len(hazy_paths)} hazy images in {_folders(hazy_dir)} have no '
                   f'clear partner in {_folders(clear_dir)} (pairing rule {rule!r}): {_describe(unpaired)}')
        if not skip_unpaired or not pairs:
            raise PairingError(message)
        log(f'{message}; leaving them out (skip_unpaired)')
    return pairs, rule
