"""Which clear image belongs to which hazy image (and which sizes fit together), for the dehazing
sets as they are distributed, and which images make up a set's published train/test split.

Three rules cover every set:

- ``prefix``: the clear image is named after the hazy name up to its first ``_``, with any
  extension (ITS ``1_1_0.90179.png`` -> ``1.png``, OTS ``0005_0.8_0.04.jpg`` -> ``0005.jpg``,
  SOTS-outdoor ``0001_0.8_0.2.jpg`` -> ``0001.png``, Haze4K ``1_0.89_1.56.png`` -> ``1.png``).
- ``same_name``: hazy and clear files carry the same name (RS-Haze, RESIDE-6K, and the official
  gUNet ``IN/`` + ``GT/`` rearrangement).
- ``hazy_gt``: the real-haze sets of the NTIRE challenges tag each file: ``01_hazy.png`` ->
  ``01_GT.png`` (NH-HAZE, Dense-HAZE), ``01_outdoor_hazy.jpg`` -> ``01_outdoor_GT.jpg`` (O-HAZE),
  ``01_indoor_hazy.jpg`` -> ``01_indoor_GT.jpg`` (I-HAZE). The tag, not the folder, says which
  is which, so hazy and clear images may share one folder (NH-HAZE is distributed that way).

Hazy names hold dots inside (``0.90179``), so a name is only ever split at its *last* dot, which
``os.path.splitext`` does; splitting at the first dot would turn ``1_1_0.90179`` into ``1_1_0``.

The small real-haze sets come as one numbered sequence of images; their published split (which
numbers train, validate and test) is ``PUBLISHED_SPLITS``, the one table that the dataset's
``split`` option and ``scripts/prepare_lmdb.py --split`` both read.
"""
import os
import re
from collections import OrderedDict, namedtuple

from .image_codec import IMAGE_EXTENSIONS, REFUSED_FORMATS, is_image_file

PAIRING_RULES = ('prefix', 'same_name', 'hazy_gt')
# Image files that are in no pairing but must not be passed over in silence either.
REFUSED_EXTENSIONS = {'.gif': 'GIF'}
# How many offending names an error message spells out before it only counts the rest.
_LISTED = 20

Pair = namedtuple('Pair', ['hazy_path', 'clear_path'])

# Each set as scripts/prepare_lmdb.py --dataset and the dataset's ``dataset`` option name it: its
# pairing rule, an example for the log, and (hazy, clear) counts of the whole set, only used to
# tell the user when a folder looks incomplete.
Preset = namedtuple('Preset', ['pairing', 'example', 'full_size'])
DATASET_PRESETS = OrderedDict([
    ('its', Preset('prefix', 'hazy 1_1_0.90179.png -> clear 1.png', (13990, 1399))),
    ('ots', Preset('prefix', 'hazy 0005_0.8_0.04.jpg -> clear 0005.jpg', (313950, None))),
    ('sots-indoor', Preset('prefix', 'hazy 1400_1.png -> clear 1400.png (clear centre-cropped)', (500, 50))),
    ('sots-outdoor', Preset('prefix', 'hazy 0001_0.8_0.2.jpg -> clear 0001.png', (500, 500))),
    ('haze4k', Preset('prefix', 'hazy 1_0.89_1.56.png -> clear 1.png', None)),
    ('rshaze', Preset('same_name', 'same name in hazy/ and GT/', None)),
    ('reside-6k', Preset('same_name', 'same name in hazy/ and GT/, under train/ and test/', None)),
    ('nh-haze', Preset('hazy_gt', 'hazy 01_hazy.png -> clear 01_GT.png', (55, 55))),
    ('dense-haze', Preset('hazy_gt', 'hazy 01_hazy.png -> clear 01_GT.png', (55, 55))),
    ('o-haze', Preset('hazy_gt', 'hazy 01_outdoor_hazy.jpg -> clear 01_outdoor_GT.jpg', (45, 45))),
    ('i-haze', Preset('hazy_gt', 'hazy 01_indoor_hazy.jpg -> clear 01_indoor_GT.jpg', (35, 35))),
    ('paired', Preset(None, 'any folders; same names, the prefix rule or the _hazy/_GT tags, detected', None)),
])

# The published split of the small real-haze sets, by image number (first, last; inclusive): the
# train / validation / test division of the NTIRE challenge each set was released for (O-HAZE and
# I-HAZE: NTIRE 2018, Dense-HAZE: NTIRE 2019, NH-HAZE: NTIRE 2020). The other sets are
# distributed already split into folders (RESIDE-6K train/ and test/, Haze4K, ...).
PUBLISHED_SPLITS = {
    'nh-haze': {'train': (1, 45), 'val': (46, 50), 'test': (51, 55)},
    'dense-haze': {'train': (1, 45), 'val': (46, 50), 'test': (51, 55)},
    'o-haze': {'train': (1, 35), 'val': (36, 40), 'test': (41, 45)},
    'i-haze': {'train': (1, 25), 'val': (26, 30), 'test': (31, 35)},
}
# 'trainval' is train and val together: what a model is trained on when the test images are the
# only ones held out.
SPLITS = ('train', 'val', 'test', 'trainval')
Split = namedtuple('Split', ['dataset', 'name', 'first', 'last'])
# ``01_hazy`` / ``01_outdoor_GT``: a scene name and the tag saying which image of the pair it is.
_TAGGED = re.compile(r'(?P<scene>.+)_(?P<tag>hazy|gt)', re.IGNORECASE)


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


def tag_of(name):
    """``(scene, 'hazy' | 'gt')`` for a name of the ``hazy_gt`` rule (``01_outdoor_hazy.jpg`` ->
    ``('01_outdoor', 'hazy')``; the tag in any case), else None."""
    match = _TAGGED.fullmatch(stem(name))
    return (match['scene'], match['tag'].lower()) if match else None


def clear_stem_of(hazy_name, rule):
    """The clear stem a hazy file name points to under ``rule``."""
    if rule == 'prefix':
        base = stem(hazy_name)
        return base.split('_', 1)[0]
    if rule == 'same_name':
        return stem(hazy_name)
    if rule == 'hazy_gt':
        tagged = tag_of(hazy_name)
        if tagged is None or tagged[1] != 'hazy':
            raise PairingError(f'{printable(hazy_name)} is not a hazy image name of the hazy_gt rule '
                               '(<scene>_hazy, e.g. 01_hazy.png or 01_outdoor_hazy.jpg)')
        return f'{tagged[0]}_GT'
    raise ValueError(f'Unknown pairing rule {rule!r}; expected one of {PAIRING_RULES}')


def _pair_key(name, rule):
    """What a clear file is looked up by: its stem, or for ``hazy_gt`` its stem in lower case
    (``01_GT`` and ``01_gt`` are the same partner)."""
    return stem(name).lower() if rule == 'hazy_gt' else stem(name)


def _index_by_stem(clear_paths, rule=None):
    """Clear stem -> path. Two clear files with one stem (``1.png`` and ``1.jpg``) would make the
    partner ambiguous, so they are an error."""
    by_stem = {}
    for name, path in clear_paths.items():
        key = _pair_key(name, rule)
        if key in by_stem:
            raise PairingError(f'Two clear images share the name {printable(stem(name))!r}: '
                               f'{printable(by_stem[key])} and {printable(path)}; keep one of them')
        by_stem[key] = path
    return by_stem


def detect_rule(hazy_names, clear_names):
    """``hazy_gt`` when every name carries a ``_hazy`` / ``_GT`` tag (hazy and clear may share a
    folder, so this comes first), ``same_name`` when every hazy name has a clear file of the same
    stem, else ``prefix``."""
    hazy_tags = [tag_of(n) for n in hazy_names]
    clear_tags = [tag_of(n) for n in clear_names]
    if (all(hazy_tags) and all(clear_tags) and any(t[1] == 'hazy' for t in hazy_tags)
            and any(t[1] == 'gt' for t in clear_tags)):
        return 'hazy_gt'
    clear_stems = {stem(n) for n in clear_names}
    if all(stem(n) in clear_stems for n in hazy_names):
        return 'same_name'
    return 'prefix'


def _sort_by_tag(hazy_paths, clear_paths, hazy_dir, clear_dir):
    """The hazy and the clear images of a ``hazy_gt`` layout: each file goes by its tag, and a
    folder given as both hazy and clear (NH-HAZE as distributed) holds both kinds. A file that
    carries no tag, or the wrong one for a folder that is only hazy or only clear, is a layout
    error naming the file: passing it over would silently train on less than the set."""
    def folders(dirs):
        dirs = [dirs] if isinstance(dirs, (str, os.PathLike)) else dirs
        return {os.path.realpath(d) for d in dirs}

    hazy_folders, clear_folders = folders(hazy_dir), folders(clear_dir)
    problems = []

    def keep(paths, wanted, other_folders, what):
        kept = {}
        for name, path in paths.items():
            tagged = tag_of(name)
            if tagged is not None and tagged[1] == wanted:
                kept[name] = path
            elif tagged is None:
                problems.append(f'{printable(path)} (neither <scene>_hazy nor <scene>_GT)')
            elif os.path.realpath(os.path.dirname(path)) not in other_folders:
                problems.append(f'{printable(path)} (a {"clear" if wanted == "hazy" else "hazy"} image in the '
                                f'{what} folder)')
        return kept

    hazy = keep(hazy_paths, 'hazy', clear_folders, 'hazy')
    clear = keep(clear_paths, 'gt', hazy_folders, 'clear')
    if problems:
        raise PairingError(f'{len(problems)} images do not fit the _hazy/_GT naming of NH-HAZE, Dense-HAZE, O-HAZE '
                           f'and I-HAZE (pairing rule \'hazy_gt\'): ' + _describe(problems) + '. Rename or move '
                           'them; identical names in two folders (the official IN/ + GT/ rearrangement) pair with '
                           'the same_name rule (--pairing same_name, or pairing: same_name)')
    for kept, folder, what in ((hazy, hazy_dir, 'hazy (<scene>_hazy)'), (clear, clear_dir, 'clear (<scene>_GT)')):
        if not kept:
            raise PairingError(f'No {what} images in {_folders(folder)}')
    return hazy, clear


# -- published splits -------------------------------------------------------------------------------
def published_split(dataset, name):
    """The ``Split`` (image numbers first..last) called ``name`` of ``dataset``; a ValueError saying
    what exists when either is unknown or the set has no numbered split."""
    if name not in SPLITS:
        raise ValueError(f'Unknown split {name!r}; expected one of {", ".join(SPLITS)}')
    if dataset not in PUBLISHED_SPLITS:
        known = ', '.join(PUBLISHED_SPLITS)
        if dataset in DATASET_PRESETS and dataset != 'paired':
            raise ValueError(f'{dataset} has no numbered split to select (only {known} do): it is distributed '
                             'split into folders, so give the folders of the part you want')
        raise ValueError(f'a split needs the set whose numbering it follows: one of {known}; got {dataset!r}')
    parts = PUBLISHED_SPLITS[dataset]
    first, last = (parts['train'][0], parts['val'][1]) if name == 'trainval' else parts[name]
    return Split(dataset, name, first, last)


def describe_split(split):
    return f"{split.dataset}'s {split.name} split (images {split.first}-{split.last})"


def image_number(name):
    """The number a file name starts with (``01_outdoor_hazy.jpg`` -> 1), or None."""
    match = re.match(r'\d+', os.path.basename(name))
    return int(match.group()) if match else None


def select_split(items, split, name_of=lambda item: item, where=''):
    """The ``items`` whose name (``name_of(item)``) is numbered inside ``split``. A name without
    a number cannot be placed and is an error naming it, and so is a selection that comes out
    empty (folders or a database that hold another part of the set)."""
    items = list(items)
    unnumbered = [name_of(item) for item in items if image_number(name_of(item)) is None]
    if unnumbered:
        raise PairingError(f'{len(unnumbered)} images in {where} do not start with an image number, so '
                           f'{describe_split(split)} cannot be selected: {_describe(unnumbered)}')
    chosen = [item for item in items if split.first <= image_number(name_of(item)) <= split.last]
    if not chosen:
        numbers = sorted({image_number(name_of(item)) for item in items})
        found = f'{numbers[0]}-{numbers[-1]}' if numbers else 'none'
        raise PairingError(f'No image of {describe_split(split)} in {where} (image numbers found: {found}); '
                           'the folder or database holds another part of the set')
    return chosen


def _folders(folders):
    return folders if isinstance(folders, (str, os.PathLike)) else ', '.join(map(str, folders))


def _describe(names):
    shown = ', '.join(printable(n) for n in names[:_LISTED])
    more = f' ... and {len(names) - _LISTED} more' if len(names) > _LISTED else ''
    return shown + more


def pair_folders(hazy_dir, clear_dir, rule=None, skip_unpaired=False, log=print, split=None):
    """Pair every image in ``hazy_dir`` with its clear image in ``clear_dir``.

    Args:
        hazy_dir, clear_dir: a folder, or a list of folders whose images count as one; the same
            folder for both when hazy and clear images share it (``hazy_gt`` rule only).
        rule: ``prefix``, ``same_name``, ``hazy_gt`` or None to detect it from the names.
        skip_unpaired: hazy images without a partner are listed either way; when True they are
            then left out, otherwise they are an error.
        log: where the list of skipped images goes.
        split: a ``Split`` (``published_split``): only hazy images numbered inside it are paired.

    Returns:
        (list[Pair], rule): pairs in hazy-name order, and the rule that made them.
    """
    hazy_paths = list_image_paths(hazy_dir)
    clear_paths = list_image_paths(clear_dir)
    if rule is None:
        rule = detect_rule(list(hazy_paths), list(clear_paths))
    elif rule not in PAIRING_RULES:
        raise ValueError(f'Unknown pairing rule {rule!r}; expected one of {PAIRING_RULES}')
    if rule == 'hazy_gt':
        hazy_paths, clear_paths = _sort_by_tag(hazy_paths, clear_paths, hazy_dir, clear_dir)
    elif set(hazy_paths.values()) & set(clear_paths.values()):
        # Under any other rule a file in both lists would be paired with itself: a "clear" image
        # that is the hazy one trains a network to do nothing, without an error.
        shared = sorted(set(hazy_paths.values()) & set(clear_paths.values()))
        raise PairingError(f'{len(shared)} files are both hazy and clear under the {rule!r} rule (the same folder '
                           f'given as both?): {_describe(shared)}. Only the hazy_gt rule (<scene>_hazy / '
                           '<scene>_GT names) takes hazy and clear images from one folder')
    if split is not None:
        hazy_paths = dict(select_split(hazy_paths.items(), split, lambda item: item[0], _folders(hazy_dir)))
    by_stem = _index_by_stem(clear_paths, rule)

    pairs, unpaired = [], []
    for name, path in hazy_paths.items():
        wanted = clear_stem_of(name, rule)
        partner = by_stem.get(wanted.lower() if rule == 'hazy_gt' else wanted)
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
