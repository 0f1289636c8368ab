"""Dehazing photographs with a trained gUNet: the package side of ``scripts/inference.py``.

Images keep what they are: bit depth, gray or colour, alpha (passed through untouched), format;
EXIF orientation is applied. Large images can be processed in overlapping tiles whose outputs
are blended with weights that fall off towards each tile's edge, so no seam shows. gUNet's SK
fusions weigh their inputs by statistics pooled over the whole image, which a tile alone does not
see; tiled inference therefore gathers those statistics over all tiles first (see run_tiled).
What remains different is only the context the convolutions see near tile borders.
"""
import os
import sys
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.image_codec import ImageDecodeError, from_float, is_image_file, to_float
from .image_io import read_image, write_image


# -- the network ----------------------------------------------------------------------------------
def pick_device(name=None):
    if name in (None, 'auto'):
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    device = torch.device(name)
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise ValueError('--device cuda was asked for, but CUDA is not available')
    return device


def load_dehazer(weights, variant=None, device=None, fp16=False, deploy=True):
    """``(net, device, dtype)`` for ``weights`` (BasicSR or official checkpoint). A file that is
    not a gUNet checkpoint, or one of another variant than ``variant``, raises ValueError."""
    from gunet_arch.archs.checkpoints import build_gunet_from_checkpoint

    device = pick_device(device)
    net = build_gunet_from_checkpoint(weights, variant=variant)
    if deploy:
        net.deploy()
    dtype = torch.float32
    if fp16:
        if device.type != 'cuda':
            print('warning: --fp16 needs a CUDA device; running in float32 on the CPU', file=sys.stderr)
        else:
            dtype = torch.float16
    return net.to(device=device, dtype=dtype).eval(), device, dtype


# -- one image ------------------------------------------------------------------------------------
def tile_starts(length, tile, overlap):
    """Start offsets of tiles of size ``tile`` covering ``length``, consecutive tiles sharing at
    least ``overlap`` pixels; the last tile ends at the border instead of running past it."""
    if length <= tile:
        return [0]
    stride = max(1, tile - overlap)
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def blend_window(size, overlap):
    """1-D weights: a linear ramp over ``overlap`` pixels at both ends, 1 in between; never 0,
    so a pixel covered by one tile only still gets that tile's value."""
    if overlap <= 0:
        return torch.ones(size)
    pos = torch.arange(size, dtype=torch.float32)
    ramp = torch.minimum((pos + 0.5) / overlap, (size - pos - 0.5) / overlap)
    return ramp.clamp(max=1.0)


@torch.no_grad()
def run_net(net, x):
    """``net`` on a 1 x 3 x H x W [0, 1] tensor, clamped to [0, 1]."""
    return net(x).clamp_(0, 1)


def ownership_bounds(starts, tile, length):
    """Each tile owns the pixels up to the middle of its overlaps with its neighbours, so that
    every pixel is owned by exactly one tile: ``[(begin, end)]`` per tile, in image coordinates."""
    cuts = [0] + [(prev + tile + cur) // 2 for prev, cur in zip(starts, starts[1:])] + [length]
    return list(zip(cuts[:-1], cuts[1:]))


class WholeImagePool(nn.Module):
    """Stands in for an SK fusion's global average pool while tiling. The fusion weighs its two
    inputs by statistics of the whole image; a tile alone would see only its own, which costs
    decibels. 'collect' sums the features of the pixels each tile owns (still answering with
    the tile's own mean), 'apply' answers every tile with the whole image's mean."""

    def __init__(self, scale):
        super().__init__()
        self.scale = scale  # feature stride of the fusion's level
        self.mode = 'local'
        self.owned = None  # 1 x 1 x h x w mask of the current tile's own pixels (image scale)
        self.total = None
        self.count = 0.0

    def forward(self, x):
        if self.mode == 'apply':
            return (self.total / self.count).to(x.dtype)
        if self.mode == 'collect':
            full = (x.shape[-2] * self.scale, x.shape[-1] * self.scale)  # the padded tile
            owned = F.pad(self.owned, (0, full[1] - self.owned.shape[-1], 0, full[0] - self.owned.shape[-2]))
            weight = F.avg_pool2d(owned, self.scale) if self.scale > 1 else owned
            part = (x.float() * weight).sum((2, 3), keepdim=True)
            self.total = part if self.total is None else self.total + part
            self.count += float(weight.sum())
        return x.mean((2, 3), keepdim=True)


@torch.no_grad()
def run_tiled(net, x, tile, overlap):
    """``net`` on ``x`` in overlapping ``tile`` x ``tile`` pieces, blended together.

    The SK fusions first gather their whole-image statistics tile by tile, deepest fusion first
    (each fusion's input depends on the deeper fusions' weights), then a last pass produces the
    output: one pass more than there are fusions, in exchange for results that stay within a
    fraction of a decibel of the untiled network."""
    _, c, h, w = x.shape
    tile = max(int(tile), 16)
    overlap = min(max(int(overlap), 0), tile // 2)
    rows, cols = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
    row_own, col_own = ownership_bounds(rows, tile, h), ownership_bounds(cols, tile, w)
    th, tw = min(tile, h), min(tile, w)
    fusions = list(getattr(net, 'fusions', []))
    originals = [f.mlp[0] for f in fusions]
    pools = [WholeImagePool(2**i) for i in range(len(fusions))]
    out = torch.zeros((1, c, h, w), dtype=torch.float32, device=x.device)
    weight = torch.zeros((1, 1, h, w), dtype=torch.float32, device=x.device)
    win = (blend_window(th, overlap)[:, None] * blend_window(tw, overlap)[None, :]).to(x.device)
    try:
        for fusion, pool in zip(fusions, pools):
            fusion.mlp[0] = pool
        # Pass k fixes the k deepest fusions to whole-image statistics and collects the rest.
        for fixed in range(len(pools) + 1):
            for i, pool in enumerate(pools):
                deep_rank = len(pools) - 1 - i
                pool.mode = 'apply' if deep_rank < fixed else 'collect'
                if pool.mode == 'collect':
                    pool.total, pool.count = None, 0.0
            for top, (r0, r1) in zip(rows, row_own):
                for left, (c0, c1) in zip(cols, col_own):
                    piece = x[..., top:top + th, left:left + tw]
                    if fixed < len(pools):
                        owned = torch.zeros((1, 1, th, tw), device=x.device)
                        owned[..., r0 - top:r1 - top, c0 - left:c1 - left] = 1
                        for pool in pools:
                            pool.owned = owned
                        net(piece)
                    else:
                        out[..., top:top + th, left:left + tw] += run_net(net, piece).float() * win
                        weight[..., top:top + th, left:left + tw] += win
    finally:
        for fusion, original in zip(fusions, originals):
            fusion.mlp[0] = original
    return out / weight


def dehaze_rgb(net, rgb, device, dtype=torch.float32, tile=0, overlap=32):
    """Dehaze a float RGB H x W x 3 array in [0, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))[None].to(device=device, dtype=dtype)
    if tile and max(x.shape[-2:]) > tile:
        y = run_tiled(net, x, tile, overlap)
    else:
        y = run_net(net, x)
    return y[0].float().cpu().numpy().transpose(1, 2, 0)


def dehaze_image(img, dehaze):
    """Apply ``dehaze`` (float RGB H x W x 3 -> same) to an image as read by ``read_image``:
    gray is replicated to three channels and averaged back, alpha is passed through untouched,
    and the result has the input's sample type."""
    gray = img.ndim == 2 or img.shape[2] == 2
    alpha = img[..., -1] if (img.ndim == 3 and img.shape[2] in (2, 4)) else None
    if gray:
        luma = to_float(img if img.ndim == 2 else img[..., 0])
        out = from_float(dehaze(np.repeat(luma[..., None], 3, -1)).mean(-1), img.dtype)
    else:
        bgr = to_float(img[..., :3])
        out = from_float(dehaze(bgr[..., ::-1])[..., ::-1], img.dtype)  # the net was trained on RGB
    if alpha is not None:
        out = np.dstack([out, alpha])
    return out


# -- files ----------------------------------------------------------------------------------------
def collect_inputs(input_path, output_dir):
    """``[(source, destination)]`` for a file or a folder tree; destinations mirror the tree under
    ``output_dir``. The output folder is not read as input when it lies inside the input."""
    input_path = os.path.abspath(input_path)
    output_dir = os.path.abspath(output_dir)
    if os.path.isfile(input_path):
        return [(input_path, os.path.join(output_dir, os.path.basename(input_path)))]
    if not os.path.isdir(input_path):
        raise FileNotFoundError(f'no such file or folder: {input_path}')
    pairs = []
    for root, dirs, files in os.walk(input_path):
        dirs[:] = sorted(d for d in dirs if os.path.abspath(os.path.join(root, d)) != output_dir)
        for name in sorted(files):
            if is_image_file(name) and not name.startswith('.'):
                src = os.path.join(root, name)
                pairs.append((src, os.path.join(output_dir, os.path.relpath(src, input_path))))
    return pairs


def _same_file(a, b):
    return os.path.abspath(a) == os.path.abspath(b) or (os.path.exists(b) and os.path.samefile(a, b))


@dataclass
class InferenceReport:
    written: list = field(default_factory=list)
    failed: list = field(default_factory=list)  # (path, reason)


def dehaze_files(pairs, net, device, dtype=torch.float32, tile=0, overlap=32, progress=True):
    """Dehaze every ``(source, destination)``; a file that fails is reported and skipped."""
    from tqdm import tqdm

    report = InferenceReport()
    sources = {os.path.abspath(s) for s, _ in pairs}
    bar = tqdm(pairs, desc='dehazing', unit='img', disable=not progress)
    for src, dst in bar:
        try:
            if os.path.abspath(dst) in sources or _same_file(src, dst):
                raise ValueError(f'output {dst} would overwrite an input file')
            img = read_image(src)
            out = dehaze_image(img, lambda rgb: dehaze_rgb(net, rgb, device, dtype, tile, overlap))
            write_image(dst, out)
            report.written.append(dst)
        except (ValueError, OSError, RuntimeError) as err:  # ImageDecodeError is a ValueError
            reason = str(err) if isinstance(err, ImageDecodeError) else f'{src}: {err}'
            report.failed.append((src, reason))
            bar.write(f'failed: {reason}', file=sys.stderr)
    return report
