#!/usr/bin/env python
"""Dehaze your own photographs with a trained gUNet.

    python scripts/inference.py --input FILE_OR_DIR --output DIR --weights CKPT
        [--variant t|s|b|d] [--device cpu|cuda] [--fp16] [--tile SIZE --tile-overlap PX] [--no-deploy]
        [--max-memory SIZE] [--max-pixels N] [--skip-existing]

CKPT is a BasicSR checkpoint (``params``/``params_ema``) or an official gUNet one (``state_dict``);
the variant is read off the weights. JPEG, PNG, BMP, TIFF, WebP and GIF (an animation: its first
frame, with a note); 8- and 16-bit; gray stays gray, alpha is kept, EXIF orientation is applied.
Outputs mirror the input tree under DIR with the same names and formats.

Large images are tiled by themselves when they would need more memory than --max-memory; the
chosen tiling is printed. A file that cannot be read is named and skipped, the rest go on, and
the run ends with a summary. Exit status: 0 all written, 1 some inputs failed, 2 nothing run.
"""
import argparse
import os
import sys
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gunet_arch.archs import VARIANTS  # noqa: E402
from gunet_arch.data.image_codec import DEFAULT_MAX_PIXELS  # noqa: E402
from gunet_arch.tools.image_io import PHOTO_EXTENSIONS, shown  # noqa: E402
from gunet_arch.tools.inference import (  # noqa: E402
    DEFAULT_MEMORY_SHARE,
    MemoryBudget,
    collect_inputs,
    dehaze_files,
    load_dehazer,
    parse_memory,
)


def _memory(text):
    try:
        return parse_memory(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _pixels(text):
    """A pixel count: '300000000', '300M' or '0.3G' (decimal: megapixels, gigapixels); 0: no limit."""
    scale = {'k': 1e3, 'm': 1e6, 'g': 1e9}.get(text.strip()[-1:].lower(), 1)
    try:
        value = float(text.strip()[:-1] if scale != 1 else text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'{text!r} is not a pixel count (e.g. 300000000, 300M)') from None
    if value < 0:
        raise argparse.ArgumentTypeError('--max-pixels must not be negative')
    return int(value * scale)


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--input', required=True, help='an image, or a folder searched recursively')
    parser.add_argument('--output', required=True, help='folder for the dehazed images')
    parser.add_argument('--weights', required=True, help='gUNet checkpoint (BasicSR or official)')
    parser.add_argument('--variant', choices=list(VARIANTS), help='fail unless the weights are this variant')
    parser.add_argument('--device', choices=['cpu', 'cuda'], help='default: cuda when available')
    parser.add_argument('--fp16', action='store_true', help='half precision (CUDA only)')
    parser.add_argument('--tile', type=int, default=0,
                        help='process in SIZE x SIZE tiles (0: as --max-memory decides); about 3.5x slower than '
                        'whole images, since the SK fusions first gather whole-image statistics tile by tile')
    parser.add_argument('--tile-overlap', type=int, default=32, help='pixels shared by neighbouring tiles')
    parser.add_argument('--max-memory', type=_memory, default=None, metavar='SIZE',
                        help='memory the process may use, e.g. 4G, 512M, 2.5G, or 50%% (of the memory available '
                        'when the run starts, on top of what the program holds then); an image that would need '
                        f'more is tiled. CPU: resident memory; CUDA: GPU memory. Default: '
                        f'{DEFAULT_MEMORY_SHARE * 100:.0f}%%. 0: never tile by itself')
    parser.add_argument('--max-pixels', type=_pixels, default=DEFAULT_MAX_PIXELS, metavar='N',
                        help='refuse larger images before decoding them, e.g. 300M (default: '
                        f'{DEFAULT_MAX_PIXELS / 1e6:g}M pixels; 0: no limit)')
    parser.add_argument('--skip-existing', action='store_true',
                        help='leave outputs that are already there (a rerun after an interruption redoes only '
                        'the missing ones; outputs are never partial)')
    parser.add_argument('--deploy', action=argparse.BooleanOptionalAction, default=True,
                        help='use the fused inference form (default: on)')
    return parser


def _quiet_decoders():
    """OpenCV logs its decoders' complaints about broken files to stderr and Pillow warns about
    them; every failure is reported here with its file name instead (OPENCV_LOG_LEVEL and
    python -W still override)."""
    if not sys.warnoptions:
        warnings.filterwarnings('ignore', module=r'PIL\.')
    if 'OPENCV_LOG_LEVEL' not in os.environ:
        import cv2.utils.logging

        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.tile < 0 or args.tile_overlap < 0:
        parser.error('--tile and --tile-overlap must not be negative')

    try:
        pairs = collect_inputs(args.input, args.output)
        # The weights are checked before any image is read: a wrong file fails fast.
        net, device, dtype = load_dehazer(args.weights, args.variant, args.device, args.fp16, args.deploy)
    except (ValueError, FileNotFoundError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    if not pairs:
        print(f'error: no images ({" ".join(PHOTO_EXTENSIONS)}) in {shown(args.input)}', file=sys.stderr)
        return 2
    _quiet_decoders()
    budget = MemoryBudget.create(net, device, dtype, args.max_memory)
    report = dehaze_files(pairs, net, device, dtype, args.tile, args.tile_overlap, budget=budget,
                          max_pixels=args.max_pixels, skip_existing=args.skip_existing)
    summary = f'{len(report.written)} image(s) written to {shown(args.output)}'
    if report.skipped:
        summary += f', {len(report.skipped)} already there (--skip-existing)'
    print(summary, file=sys.stderr)
    if report.failed:
        print(f'{len(report.failed)} failed:', file=sys.stderr)
        for _, reason in report.failed:
            print(f'  {reason}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
