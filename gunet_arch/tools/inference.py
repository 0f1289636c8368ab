"""Dehazing photographs with a trained gUNet: the package side of ``scripts/inference.py``.

Images keep what they are: bit depth, gray or colour, alpha (passed through untouched), format;
EXIF orientation is applied. Large images can be processed in overlapping tiles whose outputs
are blended with weights that fall off towards each tile's edge, so no seam shows. gUNet's SK
fusions weigh their inputs by statistics pooled over the whole image, which a tile alone does not
see; tiled inference therefore gathers those statistics over all tiles first (see tiled_forward).
What remains different is only the context the convolutions see near tile borders.

Files are untrusted input. Sizes are checked on the header before decoding (``max_pixels``);
the tile size is chosen from a model of peak memory (MemoryModel) so that an image fits
``--max-memory``; a file that fails is named, skipped and listed, and the run goes on.

Images of one size can go through the network together (``--batch``: dehaze_batch); in eval
mode each image of a batch is computed on its own, so the outputs are those of one at a time.
"""
import functools
import os
import re
import sys
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.image_codec import DEFAULT_MAX_PIXELS, FULL_SCALE, ImageDecodeError
from .image_io import fit_format, is_photo_file, peek_size, read_image, shown, write_image

# -- the network ----------------------------------------------------------------------------------
# Device types that run the network: the CPU and the accelerators PyTorch has a backend module
# for (torch.cuda, torch.mps, torch.xpu, each with is_available and device_count).
DEVICE_TYPES = ('cpu', 'cuda', 'mps', 'xpu')


def parse_device(name):
    """``name`` ('cpu', 'cuda', 'cuda:1', ...) as a torch.device, without asking whether it is
    there (pick_device does); ValueError naming --device for what torch does not read as a
    device, or a device type the network does not run on ('meta')."""
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise ValueError(f'--device {name!r} is not a device: use cpu, cuda or cuda:N (N: 0, 1, ...)') from None
    if device.type not in DEVICE_TYPES:
        raise ValueError(f'--device {name!r}: images are dehazed on {", ".join(DEVICE_TYPES)}, not {device.type}')
    return device


def pick_device(name=None):
    """The device for ``name`` (None or 'auto': cuda when available, else cpu); ValueError naming
    --device when it is not a device or not on this machine (no CUDA, or no cuda:N)."""
    if name in (None, 'auto'):
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    device = parse_device(name)
    if device.type == 'cpu':
        return device
    backend = torch.backends.mps if device.type == 'mps' else getattr(torch, device.type)
    if not backend.is_available():
        raise ValueError(f'--device {name}: {device.type.upper()} is not available on this machine')
    count = torch.mps.device_count() if device.type == 'mps' else backend.device_count()
    if device.index is not None and device.index >= count:
        raise ValueError(f'--device {name}: there is no such device; this machine has {count} '
                         f'{device.type.upper()} device(s): ' + ', '.join(f'{device.type}:{i}' for i in range(count)))
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


# -- tiles ----------------------------------------------------------------------------------------
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
def run_net(net, x, strength=1.0):
    """``net`` on an N x 3 x H x W [0, 1] tensor, clamped to [0, 1]; ``strength`` < 1 blends it
    with ``x`` (0: ``x`` itself). Blending each tile with its own input blends the assembled
    image with the whole input, since the tile weights sum to one at every pixel."""
    y = net(x).clamp_(0, 1)
    if strength != 1:
        y.mul_(strength).add_(x, alpha=1 - strength)
    return y


def ownership_bounds(starts, tile, length):
    """Each tile owns the pixels up to the middle of its overlaps with its neighbours, so that
    every pixel is owned by exactly one tile: ``[(begin, end)]`` per tile, in image coordinates."""
    cuts = [0] + [(prev + tile + cur) // 2 for prev, cur in zip(starts, starts[1:])] + [length]
    return list(zip(cuts[:-1], cuts[1:]))


def tile_layout(height, width, tile, overlap):
    """``(tile, overlap, rows, cols)`` as tiled_forward uses them: the tile at least 16 px, the
    overlap at most half a tile, and the start offsets of the tile rows and columns."""
    tile = max(int(tile), 16)
    overlap = min(max(int(overlap), 0), tile // 2)
    return tile, overlap, tile_starts(height, tile, overlap), tile_starts(width, tile, overlap)


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


class _PassDone(Exception):
    """Raised after the fusion whose statistics a pass gathers: the rest of that forward is unused."""


def _stop_pass(module, inputs, output):
    raise _PassDone


@torch.no_grad()
def tiled_forward(net, read_piece, write_rows, height, width, tile, overlap, strength=1.0):
    """``net`` on a ``height`` x ``width`` image in overlapping ``tile`` x ``tile`` pieces,
    blended together. ``read_piece(top, left, h, w)`` gives a 1 x 3 x h x w [0, 1] tensor of the
    image; ``write_rows(begin, end, rows)`` receives the finished output rows ``begin:end`` as a
    1 x 3 x (end - begin) x width float32 tensor, top to bottom, each row once. An image that is
    one tile runs as it is.

    The SK fusions first gather their whole-image statistics tile by tile, deepest fusion first
    (each fusion's input depends on the deeper fusions' weights), then a last pass produces the
    output: one pass more than there are fusions, in exchange for results that stay within a
    fraction of a decibel of the untiled network. A statistics pass stops each tile's forward at
    the fusion it gathers for. The output is blended in a band one tile high: whole-image
    buffers are only the caller's input and output. ``strength``: see run_net."""
    tile, overlap, rows, cols = tile_layout(height, width, tile, overlap)
    th, tw = min(tile, height), min(tile, width)
    if len(rows) == len(cols) == 1:
        write_rows(0, height, run_net(net, read_piece(0, 0, height, width), strength).float())
        return
    # The statistics passes work inside the PyTorch module: a runtime backend tiles with its own.
    net = getattr(net, 'tiling_module', net)
    row_own, col_own = ownership_bounds(rows, tile, height), ownership_bounds(cols, tile, width)
    fusions = list(getattr(net, 'fusions', []))
    originals = [f.mlp[0] for f in fusions]
    pools = [WholeImagePool(2**i) for i in range(len(fusions))]
    hook = None
    try:
        for fusion, pool in zip(fusions, pools):
            fusion.mlp[0] = pool
        # Pass k fixes the k deepest fusions to whole-image statistics and collects the next one.
        for fixed in range(len(pools)):
            for i, pool in enumerate(pools):
                deep_rank = len(pools) - 1 - i
                pool.mode = 'apply' if deep_rank < fixed else 'collect'
                if pool.mode == 'collect':
                    pool.total, pool.count = None, 0.0
            hook = fusions[len(pools) - 1 - fixed].register_forward_hook(_stop_pass)
            for top, (r0, r1) in zip(rows, row_own):
                for left, (c0, c1) in zip(cols, col_own):
                    piece = read_piece(top, left, th, tw)
                    owned = torch.zeros((1, 1, th, tw), device=piece.device)
                    owned[..., r0 - top:r1 - top, c0 - left:c1 - left] = 1
                    for pool in pools:
                        pool.owned = owned
                    try:
                        net(piece)
                    except _PassDone:
                        pass
            hook.remove()
            hook = None
        for pool in pools:
            pool.mode = 'apply'
        _blend_pass(net, read_piece, write_rows, height, width, rows, cols, th, tw, overlap, strength)
    finally:
        if hook is not None:
            hook.remove()
        for fusion, original in zip(fusions, originals):
            fusion.mlp[0] = original


def _blend_pass(net, read_piece, write_rows, height, width, rows, cols, th, tw, overlap, strength=1.0):
    """The output pass of tiled_forward. Tiles are added, weighted, into a band of the tile rows
    still open; rows that no later tile touches are divided by their weight and handed over.
    Each pixel sums the same tiles in the same order as a whole-image accumulator would."""
    win, band, weight = None, None, None
    for i, top in enumerate(rows):
        for left in cols:
            y = run_net(net, read_piece(top, left, th, tw), strength).float()
            if band is None:
                win = (blend_window(th, overlap)[:, None] * blend_window(tw, overlap)[None, :]).to(y.device)
                band = torch.zeros((1, 3, th, width), dtype=torch.float32, device=y.device)
                weight = torch.zeros((1, 1, th, width), dtype=torch.float32, device=y.device)
            band[..., left:left + tw] += y * win
            weight[..., left:left + tw] += win
            del y
        done = (rows[i + 1] if i + 1 < len(rows) else height) - top
        write_rows(top, top + done, band[:, :, :done] / weight[:, :, :done])
        if done < th:  # the rows the next tile row shares move to the top of the band
            band[:, :, :th - done] = band[:, :, done:].clone()
            weight[:, :, :th - done] = weight[:, :, done:].clone()
        band[:, :, th - done:] = 0
        weight[:, :, th - done:] = 0


def run_tiled(net, x, tile, overlap):
    """tiled_forward on a 1 x 3 x H x W tensor ``x``: the blended float32 result, same size."""
    _, c, h, w = x.shape
    out = torch.empty((1, c, h, w), dtype=torch.float32, device=x.device)

    def write_rows(begin, end, rows):
        out[..., begin:end, :] = rows

    tiled_forward(net, lambda top, left, th, tw: x[..., top:top + th, left:left + tw], write_rows, h, w, tile,
                  overlap)
    return out


def dehaze_rgb(net, rgb, device, dtype=torch.float32, tile=0, overlap=32):
    """Dehaze a float RGB H x W x 3 array in [0, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))[None].to(device=device, dtype=dtype)
    if tile and max(x.shape[-2:]) > tile:
        y = run_tiled(net, x, tile, overlap)
    else:
        y = run_net(net, x)
    return y[0].float().cpu().numpy().transpose(1, 2, 0)


# -- one image ------------------------------------------------------------------------------------
class _Samples:
    """An image as ``read_image`` gives it (gray, gray+alpha, BGR or BGRA; uint8, uint16 or
    float32; possibly a strided view) on its way through the network: ``read_piece`` converts a
    piece of it to the network's 1 x 3 x h x w RGB input, ``write_rows`` converts finished output
    rows back into ``out``, an array of the same shape and type. Gray is replicated to three
    channels and averaged back, alpha is copied untouched."""

    def __init__(self, img, device, dtype):
        self.img, self.device, self.dtype = img, device, dtype
        self.gray = img.ndim == 2 or img.shape[2] == 2
        self.scale = FULL_SCALE.get(img.dtype)  # None: float samples, clipped to [0, 1]
        self.out = np.empty(img.shape, img.dtype)
        if img.ndim == 3 and img.shape[2] in (2, 4):
            self.out[..., -1] = img[..., -1]

    def read_piece(self, top, left, th, tw):
        piece = self.img[top:top + th, left:left + tw]
        if self.gray:
            piece = torch.from_numpy(np.ascontiguousarray(piece if piece.ndim == 2 else piece[..., 0]))
            piece = piece.to(self.device)[None, None].expand(1, 3, th, tw)
        else:  # the net was trained on RGB
            piece = torch.from_numpy(np.ascontiguousarray(piece[..., 2::-1])).to(self.device).permute(2, 0, 1)[None]
        x = torch.empty((1, 3, th, tw), dtype=torch.float32, device=self.device).copy_(piece)
        x = x.div_(self.scale) if self.scale else x.clamp_(0, 1)
        return x.to(self.dtype)

    def write_rows(self, begin, end, rows):
        rows = rows[0].mean(0) if self.gray else rows[0].permute(1, 2, 0)
        if self.scale:
            rows = rows.clamp(0, 1).mul_(self.scale).round_().to(torch.uint8 if self.scale == 255.0 else torch.int32)
        else:
            rows = rows.clamp(0, 1)
        rows = rows.cpu().numpy()
        out = self.out
        if self.gray:
            (out[begin:end] if out.ndim == 2 else out[begin:end, :, 0])[...] = rows
        else:
            out[begin:end, :, :3] = rows[..., ::-1]


def dehaze_array(net, img, device, dtype=torch.float32, tile=0, overlap=32, strength=1.0):
    """Dehaze an image as ``read_image`` gives it: a new array of the same shape and type (see
    _Samples). ``strength``: see run_net.

    Only tiles are ever converted to float (and only finished output rows back), so the
    whole-image buffers are the input and the output in their own sample type. ``tile`` 0 runs
    the image in one piece."""
    h, w = img.shape[:2]
    samples = _Samples(img, device, dtype)
    tiled_forward(net, samples.read_piece, samples.write_rows, h, w, tile or max(h, w), overlap, strength)
    return samples.out


def dehaze_batch(net, imgs, device, dtype=torch.float32, strength=1.0):
    """Dehaze images of one size (any layouts and sample types, as ``read_image`` gives them)
    in one forward of the whole network; the same arrays as ``dehaze_array`` gives each, since
    in eval mode every layer treats each image of a batch on its own."""
    h, w = imgs[0].shape[:2]
    if any(img.shape[:2] != (h, w) for img in imgs):
        raise ValueError(f'a batch needs images of one size, got {sorted({img.shape[:2] for img in imgs})}')
    samples = [_Samples(img, device, dtype) for img in imgs]
    x = torch.empty((len(imgs), 3, h, w), dtype=dtype, device=device)
    for i, sample in enumerate(samples):
        x[i] = sample.read_piece(0, 0, h, w)[0]
    y = run_net(net, x, strength)
    del x
    for i, sample in enumerate(samples):
        sample.write_rows(0, h, y[i:i + 1].float())
    return [sample.out for sample in samples]


# -- memory ---------------------------------------------------------------------------------------
GIB, MIB = 2**30, 2**20
# From scripts/benchmark_inference_memory.py: peak resident memory of the deployed network's
# forward (CPU, float32) and of whole runs of scripts/inference.py, each in a fresh process.
# Per pixel of the padded network input, per channel of the first stage (24 in every paper
# variant; depth does not change the peak, gUNet-T and -S measure the same):
NET_BYTES_PER_PIXEL_CHANNEL = 46.0  # 1,104 B/px at 24 channels; the forward alone measured 674..1,048
PIECE_BYTES_PER_PIXEL = 40.0  # a tile's float input, its sample-type copy and output conversions
BAND_BYTES_PER_PIXEL = 56.0  # per pixel of the one-tile-high output band: sums, weights, shift, rows
ROWS_BYTES_PER_PIXEL = 20.0  # untiled: the output's float -> sample type conversion
# Kernels compiled for each new tile shape (oneDNN's cache), allocator slack, the encoder's working space:
FIXED_BYTES = 96 * MIB


@dataclass
class MemoryModel:
    """Peak memory, beyond what the process holds before an image, of dehazing one image of
    ``height`` x ``width`` in tiles of ``tile`` px (0: whole), phase by phase: decoding (file
    bytes + decoded image + a converted copy), the network (input and output arrays, the
    network's forward on one padded tile, the tile's conversions, the output band) and encoding
    (output array + encoded file). On CUDA only the network's part is on the GPU."""
    net_bytes_per_pixel: float
    pad_multiple: int = 8
    min_size: int = 24
    on_gpu: bool = False

    @classmethod
    def for_network(cls, net, device, dtype=torch.float32):
        width = getattr(net, 'base_dim', 24)
        bits = torch.finfo(dtype).bits
        return cls(NET_BYTES_PER_PIXEL_CHANNEL * width * bits / 32, getattr(net, 'pad_multiple', 8),
                   getattr(net, 'min_size', 24), torch.device(device).type == 'cuda')

    def _padded(self, n):
        return max(-(-n // self.pad_multiple) * self.pad_multiple, self.min_size)

    def estimate(self, height, width, channels=3, itemsize=1, file_bytes=0, tile=0, overlap=32, batch=1):
        """Bytes for one image, or for ``batch`` images of that size dehazed together (untiled:
        each of them holds what one image does, its decoded copy, its share of the network's
        activations and its output, all at once)."""
        tile, _, rows, cols = tile_layout(height, width, tile or max(height, width), overlap)
        if len(rows) * len(cols) > 1:
            th, tw = min(tile, height), min(tile, width)
            rows = BAND_BYTES_PER_PIXEL * th * width
        else:
            th, tw = height, width
            rows = ROWS_BYTES_PER_PIXEL * height * width
        network = self.net_bytes_per_pixel * self._padded(th) * self._padded(tw) + PIECE_BYTES_PER_PIXEL * th * tw
        if self.on_gpu:
            return FIXED_BYTES + batch * (network + rows)
        image = height * width * channels * itemsize
        decode = file_bytes + 2 * image
        process = 2 * image + network + rows
        encode = 2 * image
        return FIXED_BYTES + batch * max(decode, process, encode)


def format_size(n):
    return f'{n / GIB:.1f} GiB' if n >= GIB else f'{n / MIB:.0f} MiB'


_SIZE = re.compile(r'^\s*(\d+(?:\.\d*)?|\.\d+)\s*(?:([kmgt])(?:i?b)?|b)?\s*$', re.IGNORECASE)
_SHARE = re.compile(r'^\s*(\d+(?:\.\d*)?)\s*%\s*$')


def parse_memory(text):
    """``'1G'``, ``'512M'``, ``'2.5G'``, ``'1GiB'``, ``'800000000'`` (bytes; K/M/G/T are powers of
    1024) -> bytes (int); ``'50%'`` -> 0.5 (a share of the available memory); ``'0'`` -> 0 (no
    limit). ValueError otherwise."""
    share = _SHARE.match(str(text))
    if share and 0 < float(share.group(1)) <= 100:
        return float(share.group(1)) / 100
    size = _SIZE.match(str(text))
    if not size:
        raise ValueError(f'{text!r} is not a memory size (e.g. 1G, 512M, 2.5G, 50%)')
    return int(float(size.group(1)) * 1024**' kmgt'.index((size.group(2) or ' ').lower()))


def resident_bytes():
    """This process's resident memory now (Linux: /proc/self/status; elsewhere its peak)."""
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith('VmRSS:'):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == 'darwin' else peak * 1024


def available_bytes():
    """Memory the system can still give (Linux: MemAvailable)."""
    try:
        with open('/proc/meminfo') as f:
            for line in f:
                if line.startswith('MemAvailable:'):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf('SC_AVPHYS_PAGES') * os.sysconf('SC_PAGE_SIZE')


DEFAULT_MEMORY_SHARE = 0.5  # the default --max-memory: half of what is available when the run starts


@dataclass
class MemoryBudget:
    """What ``--max-memory`` allows: ``limit`` bytes for the whole process (CPU: its resident
    memory; CUDA: the GPU memory it allocates), of which it held ``baseline`` before the first
    image (interpreter, PyTorch, the network). ``plan`` picks each image's tiling."""
    limit: int
    baseline: int
    model: MemoryModel
    min_tile: int = 128

    @classmethod
    def create(cls, net, device, dtype=torch.float32, max_memory=None):
        """``max_memory``: bytes, a share of the available memory (float <= 1), or None for
        DEFAULT_MEMORY_SHARE. Call it once the network is loaded: what the process holds then,
        after one small forward (the first one maps the convolution code and its kernels), is
        the baseline."""
        device = torch.device(device)
        run_net(net, torch.rand(1, 3, 64, 64, device=device, dtype=dtype))
        if device.type == 'cuda':
            baseline = torch.cuda.memory_allocated(device)
            available = torch.cuda.mem_get_info(device)[0]
        else:
            baseline, available = resident_bytes(), available_bytes()
        if max_memory is None:
            max_memory = DEFAULT_MEMORY_SHARE
        limit = baseline + int(max_memory * available) if isinstance(max_memory, float) else int(max_memory)
        return cls(limit, baseline, MemoryModel.for_network(net, device, dtype))

    def plan(self, name, height, width, channels=3, itemsize=1, file_bytes=0, overlap=32):
        """``(tile, message)``: 0 and None when the whole image fits; otherwise the largest tile
        (a multiple of the network's padding) whose estimate fits, or the smallest tile when none
        does, and a line saying so."""
        def total(tile):
            return self.baseline + self.model.estimate(height, width, channels, itemsize, file_bytes, tile, overlap)

        untiled = total(0)
        if not self.limit or untiled <= self.limit:
            return 0, None
        step = self.model.pad_multiple
        smallest = max(self.min_tile, 4 * overlap)
        head = (f'{name}: {width}x{height}, estimated {format_size(untiled)} untiled > --max-memory '
                f'{format_size(self.limit)}')
        for tile in range(max(height, width) // step * step, smallest - 1, -step):
            if total(tile) <= self.limit:
                return tile, f'{head}: tiles of {tile} px (estimated {format_size(total(tile))})'
        return smallest, (f'{head}: even tiles of {smallest} px are estimated at {format_size(total(smallest))} '
                          f'(the program itself holds {format_size(self.baseline)}); running in tiles of '
                          f'{smallest} px')

    def plan_batch(self, name, height, width, batch, channels=3, itemsize=1, file_bytes=0):
        """``(n, message)``: how many images of this size to dehaze together, untiled: ``batch``
        and None when they fit; else the most that fit and a line saying so; 0 (and None) when
        not even one image fits whole, which then goes through :meth:`plan` to be tiled."""
        def total(n):
            return self.baseline + self.model.estimate(height, width, channels, itemsize, file_bytes, batch=n)

        if not self.limit or total(batch) <= self.limit:
            return batch, None
        n = batch - 1
        while n and total(n) > self.limit:
            n -= 1
        if not n:
            return 0, None
        return n, (f'{name}: {width}x{height}, a batch of {batch} estimated at {format_size(total(batch))} > '
                   f'--max-memory {format_size(self.limit)}: batches of {n} (estimated {format_size(total(n))})')


# -- files ----------------------------------------------------------------------------------------
# --ext: the formats an output can be written as ('auto': its input's, by the input's extension).
OUTPUT_EXTENSIONS = {'png': '.png', 'jpg': '.jpg', 'webp': '.webp', 'tiff': '.tiff'}


def output_name(path, suffix='', ext=None):
    """``path`` with ``suffix`` added to its stem and the extension of ``ext`` (a key of
    OUTPUT_EXTENSIONS; None or 'auto': the extension it has)."""
    stem, old = os.path.splitext(path)
    return stem + suffix + (old if ext in (None, 'auto') else OUTPUT_EXTENSIONS[ext])


def collect_inputs(input_path, output_dir, suffix='', ext=None):
    """``[(source, destination)]`` for a file or a folder tree; destinations mirror the tree under
    ``output_dir``, named by :func:`output_name`. The output folder is not read as input when it
    lies inside the input, nor are the gallery's thumbnails there, nor (with a ``suffix``) an
    image that is another input's output: the output folder may be the input folder."""
    input_path = os.path.abspath(input_path)
    output_dir = os.path.abspath(output_dir)
    if os.path.isfile(input_path):
        return [(input_path, os.path.join(output_dir, output_name(os.path.basename(input_path), suffix, ext)))]
    if not os.path.isdir(input_path):
        raise FileNotFoundError(f'no such file or folder: {shown(input_path)}')
    from .gallery import GALLERY_DIR

    gallery_dir = os.path.join(output_dir, GALLERY_DIR)

    def is_input_folder(path):
        return path != output_dir and not (os.path.basename(path) == 'thumbs'
                                           and os.path.dirname(os.path.dirname(path)) == gallery_dir)

    pairs = []
    for root, dirs, files in os.walk(input_path):
        dirs[:] = sorted(d for d in dirs if is_input_folder(os.path.abspath(os.path.join(root, d))))
        for name in sorted(files):
            if is_photo_file(name) and not name.startswith('.'):
                src = os.path.join(root, name)
                dst = os.path.join(output_dir, output_name(os.path.relpath(src, input_path), suffix, ext))
                pairs.append((src, dst))
    if suffix:  # a rerun beside the inputs: last run's outputs are not inputs
        outputs = {dst for _, dst in pairs}
        pairs = [(src, dst) for src, dst in pairs if src not in outputs]
    return pairs


def _same_file(a, b):
    return os.path.abspath(a) == os.path.abspath(b) or (os.path.exists(b) and os.path.samefile(a, b))


# What gunet_arch.atomic names a file while writing it: '.<stem>.<8 random characters>.partial<ext>'.
_PARTIAL = re.compile(r'^\.(?P<stem>.*)\.[a-z0-9_]{8}\.partial(?P<ext>\.[^.]*)?$')


def remove_stale_partials(destinations):
    """Remove the temporary files that a killed run left beside ``destinations`` (never under
    their names: those are only ever renamed into place whole). Returns how many."""
    wanted = {}
    for dst in destinations:
        folder, base = os.path.split(os.path.abspath(dst))
        wanted.setdefault(folder, set()).add(os.path.splitext(base))
    removed = 0
    for folder, names in wanted.items():
        try:
            entries = os.listdir(folder)
        except OSError:
            continue
        for entry in entries:
            match = _PARTIAL.match(entry)
            if match and (match['stem'], match['ext'] or '') in names:
                try:
                    os.remove(os.path.join(folder, entry))
                    removed += 1
                except OSError:
                    pass
    return removed


@dataclass
class InferenceReport:
    written: list = field(default_factory=list)
    failed: list = field(default_factory=list)  # (path, reason)
    skipped: list = field(default_factory=list)  # outputs already there (skip_existing)
    notes: list = field(default_factory=list)  # (path, note): first frame of an animation, tiling


def group_by_size(pairs):
    """``pairs`` reordered so that images of one size follow each other, each size where its
    first image was, by the sizes their headers tell (``peek_size``); those without a readable
    header come last. Only an order: what decides a batch is the decoded image."""
    groups = {}
    for src, dst in pairs:
        groups.setdefault(peek_size(src), []).append((src, dst))
    unknown = groups.pop(None, [])
    return [pair for group in groups.values() for pair in group] + unknown


def _failure(src, err):
    """What a failed image's line says."""
    if isinstance(err, ImageDecodeError):  # its message names the file
        return str(err)
    if isinstance(err, MemoryError) or "can't allocate" in str(err) or 'out of memory' in str(err):
        return f'{shown(src)}: out of memory ({err.__class__.__name__}: {err}); lower --max-memory, --batch or --tile'
    if isinstance(err, (ValueError, OSError, RuntimeError)):
        return f'{shown(src)}: {err}'
    return f'{shown(src)}: {err.__class__.__name__}: {err}'


@dataclass
class _Job:
    src: str
    dst: str
    img: np.ndarray = None


def dehaze_files(pairs, net, device, dtype=torch.float32, tile=0, overlap=32, progress=True, budget=None,
                 max_pixels=DEFAULT_MAX_PIXELS, skip_existing=False, batch=1, strength=1.0, quality=None):
    """Dehaze every ``(source, destination)``; a file that fails is reported and skipped, and the
    rest go on. ``tile`` > 0 tiles every image larger than it; otherwise ``budget`` (a
    MemoryBudget) picks each image's tiling, and None runs images whole. More than
    ``max_pixels`` pixels are refused before decoding. ``skip_existing`` leaves outputs that are
    already there alone (outputs are only ever complete: see gunet_arch.atomic).

    ``batch`` > 1 dehazes up to that many images of one size in one forward (images are taken
    in groups of one size: group_by_size), as many as ``budget`` allows; an image that is tiled
    runs alone. ``strength`` blends the result with the input (run_net); ``quality`` is that of
    JPEG and WebP outputs (image_io.encode_image). What an output's format cannot hold is
    dropped with a note (image_io.fit_format)."""
    from tqdm import tqdm

    report = InferenceReport()
    sources = {os.path.abspath(s) for s, _ in pairs}
    removed = remove_stale_partials(dst for _, dst in pairs)
    bar = tqdm(total=len(pairs), desc='dehazing', unit='img', disable=not progress)
    if removed:
        bar.write(f'removed {removed} temporary file(s) left by an interrupted run', file=sys.stderr)
    # Looked up now, not at import: a caller may have replaced write_image.
    write = write_image if quality is None else functools.partial(write_image, quality=quality)
    said = set()  # batch-size lines already shown, per image size

    def fail(src, err):
        reason = _failure(src, err)
        report.failed.append((src, reason))
        bar.write(f'failed: {reason}', file=sys.stderr)
        bar.update()

    def note(src, text):
        report.notes.append((src, text))
        bar.write(text, file=sys.stderr)

    todo, claimed = [], {}
    for src, dst in pairs:
        key = os.path.abspath(dst)
        if key in sources or _same_file(src, dst):
            fail(src, ValueError(f'output {shown(dst)} would overwrite an input file'))
        elif key in claimed:
            fail(src, ValueError(f'its output {shown(dst)} is also that of {shown(claimed[key])} '
                                 '(--ext gives them one name)'))
        else:
            claimed[key] = src
            if skip_existing and os.path.isfile(dst):
                report.skipped.append(dst)
                bar.update()
            else:
                todo.append(_Job(src, dst))
    if batch > 1:
        order = {(job.src, job.dst): job for job in todo}
        todo = [order[pair] for pair in group_by_size(list(order))]

    def plan(job):
        """``(images in this job's batch, tile)`` for the batch that ``job`` starts."""
        img = job.img
        h, w = img.shape[:2]
        if tile:
            return (1, tile) if max(h, w) > tile else (batch, 0)
        if budget is None:
            return batch, 0
        channels, size = 1 if img.ndim == 2 else img.shape[2], os.path.getsize(job.src)
        if batch > 1:
            n, message = budget.plan_batch(shown(job.src), h, w, batch, channels, img.itemsize, size)
            if message and (h, w) not in said:
                said.add((h, w))
                note(job.src, message)
            if n:
                return n, 0
        own_tile, message = budget.plan(shown(job.src), h, w, channels, img.itemsize, size, overlap)
        if message:
            note(job.src, message)
        return 1, own_tile

    def finish(job, out):
        out, lost = fit_format(out, os.path.splitext(job.dst)[1])
        for text in lost:
            note(job.src, f'note: {shown(job.src)}: {text}')
        write(job.dst, out)
        report.written.append(job.dst)
        bar.update()

    def run(jobs, job_tile):
        """Dehaze and write ``jobs``; their images are let go before the outputs are encoded."""
        if len(jobs) > 1:
            try:
                outs = dehaze_batch(net, [job.img for job in jobs], device, dtype, strength)
            except Exception as err:  # noqa: BLE001 - e.g. out of memory: each image gets its own try
                bar.write(f'a batch of {len(jobs)} failed ({err.__class__.__name__}: {err}); '
                          'dehazing its images one at a time', file=sys.stderr)
                for job in jobs:
                    run([job], plan(job)[1])
                return
        else:
            h, w = jobs[0].img.shape[:2]
            if job_tile and not getattr(net, 'tiles_itself', True) and max(h, w) > job_tile:
                note(jobs[0].src, f'note: {shown(jobs[0].src)}: tiled on the torch backend ({net.name} cannot gather '
                                  'the whole-image statistics of the SK fusions tile by tile)')
            try:
                outs = [dehaze_array(net, jobs[0].img, device, dtype, job_tile, overlap, strength)]
            except Exception as err:  # noqa: BLE001 - one bad file must not end a run over thousands
                jobs[0].img = None
                fail(jobs[0].src, err)
                return
        for job in jobs:
            job.img = None  # the inputs go before the encoder needs their memory
        for i, job in enumerate(jobs):
            try:
                finish(job, outs[i])
            except Exception as err:  # noqa: BLE001
                fail(job.src, err)
            outs[i] = None

    pending, room, pending_tile = [], 0, 0  # the batch being gathered: decoded images of one size
    for job in todo:
        try:
            job.img, header = read_image(job.src, max_pixels, contiguous=False, with_header=True)
        except Exception as err:  # noqa: BLE001
            fail(job.src, err)
            continue
        if header.frames > 1:
            note(job.src, f'note: {shown(job.src)}: an animation of {header.frames} frames; only the first frame is '
                          'dehazed')
        if pending and job.img.shape[:2] != pending[0].img.shape[:2]:
            run(pending, pending_tile)
            pending = []
        if not pending:
            room, pending_tile = plan(job)
        pending.append(job)
        if len(pending) >= room:
            run(pending, pending_tile)
            pending = []
    if pending:
        run(pending, pending_tile)
    bar.close()
    return report
