"""Hazy/clear pairs from clear photographs, the way RESIDE was made.

The atmospheric scattering model: I = J * t + A * (1 - t), t = exp(-beta * d), with J the clear
image, d a depth map normalised to at most 1, A the (gray) atmospheric light and beta the
scattering coefficient, drawn from RESIDE-ITS's ranges. Depth is real where the photograph comes
with a disparity or depth map (scikit-image ships the Middlebury "motorcycle" stereo pair with its
disparity), and a prior otherwise: farther towards the top of the frame and where it is bright
over large areas (sky, walls far away), the cues RESIDE-OTS's estimated depths mostly encode.

Output follows ITS so that ``prepare_lmdb.py --dataset its`` and the dataset read it unchanged::

    OUT/train/hazy/<id>_<k>_<beta>.png   OUT/train/clear/<id>.png   OUT/train/depth/<hazy name>
    OUT/heldout/hazy/...                  OUT/heldout/clear/...       OUT/heldout/depth/...
    OUT/haze_params.csv                   split, hazy, clear, source, A, beta, depth (real|prior)

Depth maps are 16-bit PNGs of the normalised depth (65535 = 1) each hazy image was made with.
"""
import csv
import io
import os
import re
import shutil
from dataclasses import dataclass

import cv2
import numpy as np

from ..atomic import atomic_write_bytes
from ..data.image_codec import ImageDecodeError, centre_crop, is_image_file, to_float
from .image_io import read_image, write_image

A_RANGE = (0.7, 1.0)  # RESIDE ITS atmospheric light
BETA_RANGE = (0.6, 1.8)  # RESIDE ITS scattering coefficient
NEAREST_DEPTH = 0.2  # normalised depth of the nearest point in a depth prior
SPLITS = ('train', 'heldout')
PARAMS_FILE = 'haze_params.csv'


# -- the physical model ---------------------------------------------------------------------------
def transmission(depth, beta):
    return np.exp(-beta * depth)


def add_haze(clear, depth, airlight, beta):
    """Hazy version of ``clear`` (float H x W x C in [0, 1]) for normalised ``depth`` (H x W)."""
    t = transmission(depth, beta)[..., None]
    return clear * t + airlight * (1.0 - t)


def recover_transmission(hazy, clear, airlight, min_contrast=0.05):
    """t = (A - I) / (A - J) per pixel, averaged over the channels where ``clear`` differs from A
    by at least ``min_contrast`` (elsewhere t is not observable); NaN where no channel does."""
    num = airlight - hazy
    den = airlight - clear
    valid = np.abs(den) >= min_contrast
    t = np.where(valid, num / np.where(valid, den, 1.0), 0.0)
    count = valid.sum(-1)
    with np.errstate(invalid='ignore', divide='ignore'):
        return np.where(count > 0, t.sum(-1) / count, np.nan)


# -- depth ----------------------------------------------------------------------------------------
def depth_from_disparity(disparity):
    """Depth proportional to 1/disparity, normalised so the far end (99.5th percentile) is 1.
    Unmatched pixels (inf, NaN, <= 0 in Middlebury maps) are filled from their neighbours."""
    disparity = np.asarray(disparity, dtype=np.float32)
    valid = np.isfinite(disparity) & (disparity > 0)
    if valid.mean() < 0.5:
        raise ValueError('disparity map has too few valid pixels to give a depth map')
    depth = np.zeros_like(disparity)
    depth[valid] = 1.0 / disparity[valid]
    depth /= np.percentile(depth[valid], 99.5)
    return fill_holes(np.clip(depth, 0.0, 1.0), valid)


def fill_holes(values, valid):
    """Fill pixels where ``valid`` is False with the mean of their valid neighbours, growing
    inwards from the holes' borders until none is left."""
    values, valid = values.astype(np.float32).copy(), valid.copy()
    while not valid.all():
        weight = cv2.blur(valid.astype(np.float32), (5, 5), borderType=cv2.BORDER_REPLICATE)
        total = cv2.blur(np.where(valid, values, 0).astype(np.float32), (5, 5), borderType=cv2.BORDER_REPLICATE)
        grow = ~valid & (weight > 0)
        values[grow] = total[grow] / weight[grow]
        valid |= grow
    return values


def _unit(x):
    x = x.astype(np.float32)
    return (x - x.min()) / max(float(np.ptp(x)), 1e-6)


def depth_prior(clear, rng=None):
    """A plausible depth for a photograph without one, in [near, far]: mostly the height in the
    frame (the ground is near, the top is far), plus large-scale brightness (sky and distant
    walls are bright). With ``rng`` every call draws its own variation (tilt of the horizon,
    weights, a smooth random field, depth range), so the haze of the versions of one image
    is not always laid out the same way and a network cannot learn "hazier towards the top"
    instead of reading the haze off the image."""
    h, w = clear.shape[:2]
    tilt, w_bright, w_field, near, far = 0.0, 0.3, 0.0, NEAREST_DEPTH, 1.0
    if rng is not None:
        tilt, w_bright, w_field = rng.uniform(-0.4, 0.4), rng.uniform(0.1, 0.4), rng.uniform(0.0, 0.3)
        # Not every scene reaches far: real indoor depth (the motorcycle) is mostly near.
        near, far = rng.uniform(0.1, 0.4), rng.uniform(0.5, 1.0)
        near = min(near, far - 0.1)
    rows = np.linspace(1.0, 0.0, h, dtype=np.float32)[:, None]
    cols = np.linspace(-0.5, 0.5, w, dtype=np.float32)[None, :]
    height = _unit(rows * np.cos(tilt) + cols * np.sin(tilt) * w / h)
    sigma = 0.1 * min(h, w)
    brightness = _unit(cv2.GaussianBlur(clear.mean(-1).astype(np.float32), (0, 0), sigma))
    depth = (1.0 - w_bright - w_field) * height + w_bright * brightness
    if w_field > 0:
        field = rng.standard_normal((max(2, h // 32), max(2, w // 32))).astype(np.float32)
        depth = depth + w_field * _unit(cv2.resize(field, (w, h), interpolation=cv2.INTER_CUBIC))
    return near + (far - near) * _unit(depth)


def find_depth_file(photo_path):
    """A depth or disparity map shipped next to ``photo_path``: ``<stem>_depth.npy/.npz``, or
    ``<scene>_disp.npy/.npz`` for a stereo view named ``<scene>_left``."""
    folder, name = os.path.split(photo_path)
    stem = os.path.splitext(name)[0]
    scene = re.sub(r'_left$', '', stem)
    for kind, base in (('depth', f'{stem}_depth'), ('disparity', f'{scene}_disp')):
        if kind == 'disparity' and scene == stem:
            continue  # a disparity map belongs to the left view only
        for ext in ('.npy', '.npz'):
            candidate = os.path.join(folder, base + ext)
            if os.path.isfile(candidate):
                return kind, candidate
    return None, None


def _load_array(path):
    data = np.load(path)
    if isinstance(data, np.lib.npyio.NpzFile):
        with data:
            return data[data.files[0]]
    return data


def real_depth(photo_path, shape):
    """The depth map shipped with ``photo_path`` at ``shape`` (H, W), or None when there is none."""
    kind, path = find_depth_file(photo_path)
    if kind is None:
        return None
    raw = _load_array(path).astype(np.float32)
    depth = depth_from_disparity(raw) if kind == 'disparity' else np.clip(raw / np.nanmax(raw), 0, 1)
    if depth.shape != tuple(shape):
        depth = cv2.resize(depth, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
    return depth


# -- choosing the photographs ---------------------------------------------------------------------
def default_photo_dirs():
    """Folders of photographs that ship with installed packages (scikit-image's data)."""
    dirs = []
    try:
        import skimage
        dirs.append(os.path.join(os.path.dirname(skimage.__file__), 'data'))
    except ImportError:
        pass
    return [d for d in dirs if os.path.isdir(d)]


def reject_reason(img, min_side=256):
    """Why ``img`` (as read) is not a colour photograph worth hazing, or None when it is.
    Package data folders mix photographs with test patterns, masks and drawings."""
    if img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 2):
        return 'grayscale'
    if img.shape[2] == 4 and to_float(img[..., 3]).min() < 1.0:
        return 'has transparency (a cut-out or drawing)'
    if min(img.shape[:2]) < min_side:
        return f'too small (< {min_side} px)'
    rgb = to_float(img[..., :3])
    if float((rgb.max(-1) - rgb.min(-1)).mean()) < 0.04:
        return 'no colour'
    levels = (rgb * 63).astype(np.int32)
    if len(np.unique(levels[..., 0] * 4096 + levels[..., 1] * 64 + levels[..., 2])) < 2000:
        return 'too few colours (a graphic or binary image)'
    gray = rgb.mean(-1)
    if float((gray < 0.05).mean()) > 0.4:
        return 'mostly black'
    gradient = np.hypot(cv2.Sobel(gray, cv2.CV_32F, 1, 0), cv2.Sobel(gray, cv2.CV_32F, 0, 1))
    if float((gradient > 0.1).mean()) < 0.1:
        return 'too little texture (a gradient or rendering)'
    return None


def scene_of(path):
    """Photographs of one scene (the two views of a stereo pair) must share a split, or the
    held-out set would contain what training saw."""
    stem = os.path.splitext(os.path.basename(path))[0]
    return re.sub(r'_(left|right)$', '', stem)


def find_photographs(folders, min_side=256, log=print):
    """Sorted colour photographs under ``folders`` (not recursive); the others are logged, one
    line per reason, and skipped."""
    found, skipped = [], {}
    for folder in folders:
        for name in sorted(os.listdir(folder)):
            path = os.path.join(folder, name)
            if not os.path.isfile(path) or not is_image_file(name):
                continue
            try:
                reason = reject_reason(read_image(path), min_side)
            except ImageDecodeError as err:
                reason = f'unreadable ({err})'
            if reason:
                skipped.setdefault(reason, []).append(name)
            else:
                found.append(path)
    for reason, names in skipped.items():
        log(f'skipped, {reason}: {", ".join(names)}')
    return found


def split_by_scene(paths, heldout_scenes, seed):
    """(train, heldout) lists; ``heldout_scenes`` whole scenes, chosen at random with ``seed``."""
    scenes = sorted({scene_of(p) for p in paths})
    if heldout_scenes >= len(scenes):
        raise ValueError(f'only {len(scenes)} scenes among the photographs: cannot hold out '
                         f'{heldout_scenes} and still train on any')
    rng = np.random.default_rng(seed)
    held = set(rng.choice(scenes, size=heldout_scenes, replace=False).tolist()) if heldout_scenes else set()
    return [p for p in paths if scene_of(p) not in held], [p for p in paths if scene_of(p) in held]


# -- writing the set ------------------------------------------------------------------------------
def resize_short_side(img, size):
    """Resize so the shorter side is ``size`` (0: keep); area filtering when shrinking."""
    if not size:
        return img
    h, w = img.shape[:2]
    scale = size / min(h, w)
    new = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(img, new, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)


def crop_to(img, crop):
    """The centre ``crop`` x ``crop`` (at most the image; 0: keep)."""
    return centre_crop(img, min(crop, img.shape[0]), min(crop, img.shape[1])) if crop else img


def load_clear(path, size=0, crop=0):
    """The photograph as float BGR in [0, 1], resized and cropped, and its real depth map (None
    when it has none)."""
    clear = to_float(read_image(path)[..., :3])
    depth = real_depth(path, clear.shape[:2])
    clear = crop_to(resize_short_side(clear, size), crop)
    # Haze is added to the clear image as it will be stored (8-bit), so each pair obeys the
    # model exactly up to the rounding of the hazy image.
    clear = (np.round(np.clip(clear, 0, 1) * 255) / 255).astype(np.float32)
    if depth is None:
        return clear, None
    return clear, np.clip(crop_to(resize_short_side(depth, size), crop), 0, 1)


@dataclass
class HazeParams:
    airlight: float
    beta: float


def draw_params(rng, count):
    """``count`` (A, beta) pairs; beta rounded to the two decimals its file name carries."""
    return [
        HazeParams(round(float(rng.uniform(*A_RANGE)), 4), round(float(rng.uniform(*BETA_RANGE)), 2))
        for _ in range(count)
    ]


def hazy_name(image_id, k, beta):
    return f'{image_id}_{k}_{beta:.2f}.png'


def synthesize_split(photos, out_dir, split, first_id, count, rng, size=0, crop=0, log=print):
    """Write ``count`` hazy versions of each photograph into ``out_dir/split`` (and the depth
    each was made with, 16-bit, under ``depth/``); returns the CSV rows."""
    folders = {k: os.path.join(out_dir, split, k) for k in ('hazy', 'clear', 'depth')}
    rows = []
    for image_id, path in enumerate(photos, start=first_id):
        clear, real = load_clear(path, size, crop)
        depth_kind = 'prior' if real is None else 'real'
        clear_name = f'{image_id}.png'
        write_image(os.path.join(folders['clear'], clear_name), np.round(clear * 255).astype(np.uint8))
        for k, p in enumerate(draw_params(rng, count), start=1):
            depth = depth_prior(clear, rng) if real is None else real
            hazy = add_haze(clear, depth, p.airlight, p.beta)
            name = hazy_name(image_id, k, p.beta)
            write_image(os.path.join(folders['hazy'], name), np.round(np.clip(hazy, 0, 1) * 255).astype(np.uint8))
            write_image(os.path.join(folders['depth'], name), np.round(depth * 65535).astype(np.uint16))
            rows.append({'split': split, 'hazy': name, 'clear': clear_name, 'source': os.path.basename(path),
                         'A': p.airlight, 'beta': p.beta, 'depth': depth_kind})
        log(f'{split}: {os.path.basename(path)} -> {clear_name} ({clear.shape[1]}x{clear.shape[0]}, '
            f'{depth_kind} depth, {count} hazy)')
    return rows


def synthesize_dataset(output, input_dirs=None, count=10, seed=0, size=256, crop=0, heldout_scenes=2,
                       min_side=256, overwrite=False, log=print):
    """Build the train and held-out sets under ``output``; returns the rows of its CSV, which is
    written last, so its presence means the set is complete."""
    input_dirs = list(input_dirs) if input_dirs else default_photo_dirs()
    if not input_dirs:
        raise ValueError('no input folder given and no package with photographs (scikit-image) installed')
    for split in SPLITS:
        split_dir = os.path.join(output, split)
        if os.path.isdir(split_dir) and any(os.scandir(split_dir)):
            if not overwrite:
                raise FileExistsError(f'{split_dir} already exists; remove it or pass --overwrite '
                                      '(a new set is never merged into an old one)')
            shutil.rmtree(split_dir)
    if os.path.exists(os.path.join(output, PARAMS_FILE)):
        os.remove(os.path.join(output, PARAMS_FILE))
    photos = find_photographs(input_dirs, min_side=min_side, log=log)
    if not photos:
        raise ValueError(f'no colour photographs found in {", ".join(input_dirs)}')
    train, heldout = split_by_scene(photos, heldout_scenes, seed)
    rng = np.random.default_rng(seed)
    rows = synthesize_split(train, output, 'train', 1, count, rng, size, crop, log)
    # Held-out ids continue after the training ids so that no two clear images share a name.
    rows += synthesize_split(heldout, output, 'heldout', len(train) + 1, count, rng, size, crop, log)
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(os.path.join(output, PARAMS_FILE), table.getvalue().encode())
    return rows


def read_params(output):
    """The rows :func:`synthesize_dataset` wrote, with A and beta as floats."""
    with open(os.path.join(output, PARAMS_FILE), newline='') as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        row['A'], row['beta'] = float(row['A']), float(row['beta'])
    return rows
