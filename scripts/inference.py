#!/usr/bin/env python
"""Dehaze your own photographs with a trained gUNet.

    python scripts/inference.py --input FILE_OR_DIR --output DIR --weights CKPT
        [--variant t|s|b|d] [--device cpu|cuda] [--fp16] [--tile SIZE --tile-overlap PX] [--no-deploy]

CKPT is a BasicSR checkpoint (``params``/``params_ema``) or an official gUNet one (``state_dict``);
the variant is read off the weights. JPEG, PNG, BMP, TIFF and WebP; 8- and 16-bit; gray stays
gray, alpha is kept, EXIF orientation is applied. Outputs mirror the input tree under DIR with
the same names and formats. Exit status: 0 all written, 1 some inputs failed, 2 nothing run.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gunet_arch.archs import VARIANTS  # noqa: E402
from gunet_arch.data.image_codec import IMAGE_EXTENSIONS  # noqa: E402
from gunet_arch.tools.inference import collect_inputs, dehaze_files, load_dehazer  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--input', required=True, help='an image, or a folder searched recursively')
    parser.add_argument('--output', required=True, help='folder for the dehazed images')
    parser.add_argument('--weights', required=True, help='gUNet checkpoint (BasicSR or official)')
    parser.add_argument('--variant', choices=list(VARIANTS), help='fail unless the weights are this variant')
    parser.add_argument('--device', choices=['cpu', 'cuda'], help='default: cuda when available')
    parser.add_argument('--fp16', action='store_true', help='half precision (CUDA only)')
    parser.add_argument('--tile', type=int, default=0,
                        help='process in SIZE x SIZE tiles to bound memory (0: whole image); about 4x '
                        'slower, since the SK fusions first gather whole-image statistics tile by tile')
    parser.add_argument('--tile-overlap', type=int, default=32, help='pixels shared by neighbouring tiles')
    parser.add_argument('--deploy', action=argparse.BooleanOptionalAction, default=True,
                        help='use the fused inference form (default: on)')
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
        print(f'error: no images ({" ".join(IMAGE_EXTENSIONS)}) in {args.input}', file=sys.stderr)
        return 2
    report = dehaze_files(pairs, net, device, dtype, args.tile, args.tile_overlap)
    print(f'{len(report.written)} image(s) written to {args.output}', file=sys.stderr)
    if report.failed:
        print(f'{len(report.failed)} failed:', file=sys.stderr)
        for _, reason in report.failed:
            print(f'  {reason}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
