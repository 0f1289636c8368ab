"""What ``make demo`` shows at the end: a table of held-out PSNR/SSIM (paper protocol) for the
hazy inputs and the dehazed outputs, a hazy | dehazed | clear picture per held-out image, and one
contact sheet of them all.

The dehazed numbers are read from the CSV that ``gunet_arch/test.py`` wrote (computed on the
network's float output, as the paper does); the hazy numbers are computed here with the same
metric functions on the same images the test read.
"""
import math
import os
from dataclasses import dataclass

import cv2
import numpy as np

from ..data.image_codec import centre_crop, to_float
from ..data.pairing import clear_stem_of
from .image_io import read_image, write_image
from .metrics_csv import read_metrics_csv

LABELS = ('hazy', 'dehazed', 'clear')
GAP = 4  # pixels between the pictures of a triptych and between triptychs


@dataclass
class HeldOutImage:
    name: str
    hazy_path: str
    clear_path: str
    dehazed_path: str
    dehazed_psnr: float
    dehazed_ssim: float
    hazy_psnr: float = math.nan
    hazy_ssim: float = math.nan


def _natural_key(name):
    """'6_2_1.07' before '6_10_1.49'."""
    return [int(part) if part.isdigit() else part for part in name.split('_')]


def find_one(folder, stem):
    """The image file in ``folder`` named ``stem`` with any extension."""
    for name in sorted(os.listdir(folder)):
        if os.path.splitext(name)[0] == stem:
            return os.path.join(folder, name)
    raise FileNotFoundError(f'no image named {stem}.* in {folder}')


def collect(data_dir, results_dir, dataset_name, suffix):
    """The held-out images the test scored, with their three files and the test's metrics."""
    metrics, _ = read_metrics_csv(os.path.join(results_dir, f'{dataset_name}_metrics.csv'))
    vis_dir = os.path.join(results_dir, 'visualization', dataset_name)
    images = []
    for name, values in sorted(metrics.items(), key=lambda item: _natural_key(item[0])):
        hazy_path = find_one(os.path.join(data_dir, 'hazy'), name)
        clear_stem = clear_stem_of(os.path.basename(hazy_path), 'prefix')  # the demo's names are ITS's
        images.append(
            HeldOutImage(
                name=name,
                hazy_path=hazy_path,
                clear_path=find_one(os.path.join(data_dir, 'clear'), clear_stem),
                dehazed_path=os.path.join(vis_dir, f'{name}_{suffix}.png'),
                dehazed_psnr=values['psnr'],
                dehazed_ssim=values.get('ssim', math.nan)))
    return images


def score_hazy(images):
    """Fill in the paper-protocol PSNR/SSIM of each hazy input against its clear image."""
    import gunet_arch  # noqa: F401  (registers the metrics)
    from gunet_arch.metrics.dehaze_metrics import calculate_psnr_dehaze, calculate_ssim_dehaze

    for im in images:
        hazy = to_float(read_image(im.hazy_path))[..., ::-1]
        clear = to_float(read_image(im.clear_path))[..., ::-1]
        clear = centre_crop(clear, *hazy.shape[:2])  # a larger clear image, as the dataset does
        im.hazy_psnr = calculate_psnr_dehaze(hazy, clear)
        im.hazy_ssim = calculate_ssim_dehaze(hazy, clear)


# -- pictures -------------------------------------------------------------------------------------
def _label(img, text, scale):
    """``text`` on a dark band at the top left of ``img`` (uint8 BGR), in place."""
    font, thickness = cv2.FONT_HERSHEY_SIMPLEX, max(1, round(scale * 2))
    (w, h), base = cv2.getTextSize(text, font, scale, thickness)
    pad = max(2, round(4 * scale))
    img[:h + base + 2 * pad, :w + 2 * pad] //= 3
    cv2.putText(img, text, (pad, h + pad), font, scale, (255, 255, 255), thickness, cv2.LINE_AA)
    return img


def triptych(im, height=None):
    """hazy | dehazed | clear side by side (uint8 BGR), each labelled, optionally resized."""
    pictures = [read_image(p) for p in (im.hazy_path, im.dehazed_path, im.clear_path)]
    pictures = [np.round(to_float(p[..., :3]) * 255).astype(np.uint8) for p in pictures]
    h, w = pictures[0].shape[:2]
    pictures = [centre_crop(p, h, w) for p in pictures]
    if height and height != h:
        size = (max(1, round(w * height / h)), height)
        pictures = [cv2.resize(p, size, interpolation=cv2.INTER_AREA) for p in pictures]
    scale = pictures[0].shape[0] / 400
    texts = (f'hazy {im.hazy_psnr:.2f} dB', f'dehazed {im.dehazed_psnr:.2f} dB', 'clear')
    pictures = [_label(p.copy(), t, max(scale, 0.35)) for p, t in zip(pictures, texts)]
    gap = np.full((pictures[0].shape[0], GAP, 3), 255, np.uint8)
    return np.hstack([pictures[0], gap, pictures[1], gap, pictures[2]])


def pick_for_sheet(images, per_clear=4):
    """Up to ``per_clear`` hazy versions of each clear image, from the lightest haze to the
    densest, so the sheet shows the range without repeating near-identical pictures."""
    by_clear = {}
    for im in images:
        by_clear.setdefault(im.clear_path, []).append(im)
    picked = []
    for versions in by_clear.values():
        versions = sorted(versions, key=lambda im: -im.hazy_psnr)
        if len(versions) > per_clear:
            step = (len(versions) - 1) / (per_clear - 1)
            versions = [versions[round(i * step)] for i in range(per_clear)]
        picked += versions
    return picked


def contact_sheet(images, height=128, columns=2):
    """Every held-out triptych at ``height`` pixels, ``columns`` triptychs per row."""
    tiles = [triptych(im, height) for im in images]
    width = max(t.shape[1] for t in tiles)
    tiles = [np.pad(t, ((0, 0), (0, width - t.shape[1]), (0, 0)), constant_values=255) for t in tiles]
    rows, rows_width = [], width * columns + GAP * 2 * (columns - 1)
    for start in range(0, len(tiles), columns):
        row = tiles[start:start + columns]
        row += [np.full_like(tiles[0], 255)] * (columns - len(row))
        pieces = []
        for t in row:
            pieces += [t, np.full((height, GAP * 2, 3), 255, np.uint8)]
        rows += [np.hstack(pieces[:-1]), np.full((GAP * 2, rows_width, 3), 255, np.uint8)]
    return np.vstack(rows[:-1])


# -- the report -----------------------------------------------------------------------------------
def format_table(images):
    lines = [f'{"held-out image":<18} {"hazy PSNR / SSIM":>20} {"dehazed PSNR / SSIM":>22}']
    for im in images:
        lines.append(f'{im.name:<18} {im.hazy_psnr:>11.2f} / {im.hazy_ssim:.4f} '
                     f'{im.dehazed_psnr:>13.2f} / {im.dehazed_ssim:.4f}')
    mean = lambda attr: float(np.mean([getattr(im, attr) for im in images]))  # noqa: E731
    lines.append(f'{"mean":<18} {mean("hazy_psnr"):>11.2f} / {mean("hazy_ssim"):.4f} '
                 f'{mean("dehazed_psnr"):>13.2f} / {mean("dehazed_ssim"):.4f}')
    return lines


def summary_line(images):
    """The last line of the demo, in the one form scripts may parse."""
    hazy = float(np.mean([im.hazy_psnr for im in images]))
    dehazed = float(np.mean([im.dehazed_psnr for im in images]))
    return f'held-out PSNR: hazy {hazy:.2f} dB, dehazed {dehazed:.2f} dB'


def write_report(data_dir, results_dir, dataset_name='demo-heldout', suffix='dehazed', log=print):
    """Score, draw and print; returns (mean hazy PSNR, mean dehazed PSNR, contact sheet path)."""
    images = collect(data_dir, results_dir, dataset_name, suffix)
    if not images:
        raise ValueError(f'the test scored no images (see {results_dir})')
    score_hazy(images)
    side_dir = os.path.join(results_dir, 'side_by_side')
    for im in images:
        write_image(os.path.join(side_dir, f'{im.name}.png'), triptych(im))
    sheet_path = os.path.join(results_dir, 'contact_sheet.png')
    on_sheet = pick_for_sheet(images)
    write_image(sheet_path, contact_sheet(on_sheet))
    for line in format_table(images):
        log(line)
    scenes = len({im.clear_path for im in images})
    log(f'{len(images)} hazy images of {scenes} held-out clear images, PSNR/SSIM as in the paper '
        '(RGB in [0, 1], whole image)')
    log(f'side-by-side (hazy | dehazed | clear): {side_dir}/')
    log(f'contact sheet ({len(on_sheet)} of them, light to dense haze): {sheet_path}')
    log(summary_line(images))
    hazy = float(np.mean([im.hazy_psnr for im in images]))
    dehazed = float(np.mean([im.dehazed_psnr for im in images]))
    return hazy, dehazed, sheet_path
