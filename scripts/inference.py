#!/usr/bin/env python
"""Dehaze your own photographs with a trained gUNet.

    python scripts/inference.py --input FILE_OR_DIR --output DIR --weights CKPT
        [--variant t|s|b|d] [--device cpu|cuda|cuda:N] [--fp16] [--tile SIZE --tile-overlap PX] [--no-deploy]
        [--max-memory SIZE] [--max-pixels N] [--skip-existing] [--batch N] [--strength S]
        [--suffix TEXT] [--ext auto|png|jpg|webp|tiff] [--quality Q] [--gallery]
        [--backend auto|torch|onnxruntime|openvino] [--bf16]

CKPT is a BasicSR checkpoint (``params``/``params_ema``) or an official gUNet one (``state_dict``);
the variant is read off the weights. JPEG, PNG, BMP, TIFF, WebP and GIF (an animation: its first
frame, with a note); 8- and 16-bit; gray stays gray, alpha is kept, EXIF orientation is applied.
Outputs mirror the input tree under DIR with the same names and formats (--suffix adds to the
names, --ext picks another format). --gallery adds DIR/index.html, hazy beside dehazed.

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
from gunet_arch.tools.backends import BACKEND_CHOICES, BackendError, create_backend, workload_pixels  # noqa: E402
from gunet_arch.tools.image_io import DEFAULT_JPEG_QUALITY, PHOTO_EXTENSIONS, shown  # noqa: E402
from gunet_arch.tools.inference import (  # noqa: E402
    DEFAULT_MEMORY_SHARE,
    OUTPUT_EXTENSIONS,
    MemoryBudget,
    collect_inputs,
    dehaze_files,
    load_dehazer,
    parse_device,
    parse_memory,
)


def _memory(text):
    try:
        return parse_memory(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _device(text):
    try:
        return str(parse_device(text))
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _count(flag):
    def positive(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f'{flag} takes a whole number, not {text!r}') from None
        if value < 1:
            raise argparse.ArgumentTypeError(f'{flag} must be at least 1, not {value}')
        return value
    return positive


def _quality(text):
    value = _count('--quality')(text)
    if value > 100:
        raise argparse.ArgumentTypeError(f'--quality is 1 to 100, not {value}')
    return value


def _strength(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'--strength takes a number from 0 to 1, not {text!r}') from None
    if not 0 <= value <= 1:  # also refuses nan
        raise argparse.ArgumentTypeError(f'--strength must be from 0 (the input) to 1 (fully dehazed), not {text}')
    return value


def _suffix(text):
    if os.sep in text or (os.altsep and os.altsep in text) or '\0' in text:
        raise argparse.ArgumentTypeError(f'--suffix {text!r} is part of a file name: no folder separators')
    return text


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
    parser.add_argument('--device', type=_device, metavar='DEVICE',
                        help='cpu, cuda, cuda:N (the Nth GPU, from 0), mps or xpu (default: cuda when available)')
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
    parser.add_argument('--backend', choices=BACKEND_CHOICES, default='auto',
                        help='runtime on the CPU: torch, onnxruntime or openvino (the deployed graph, exported '
                        'once per architecture and cached), or auto (default): the fastest installed one that '
                        'agrees with PyTorch within 1e-4, when the run is big enough to repay its setup')
    parser.add_argument('--bf16', action='store_true',
                        help='bfloat16 on the CPU through OpenVINO (AVX512-BF16/AMX CPUs): 1.6-1.9x its float32 '
                        'speed, outputs within ~2e-3 of float32')
    parser.add_argument('--batch', type=_count('--batch'), default=1, metavar='N',
                        help='dehaze up to N images of one size in one forward: the same outputs as one at a time, '
                        'in fewer, larger forwards. '
                        'Images are grouped by size (a folder of mixed sizes works; each size is its own batches), '
                        'as many at once as --max-memory allows; an image that is tiled runs alone (default: 1)')
    parser.add_argument('--strength', type=_strength, default=1.0, metavar='S',
                        help='blend the dehazed image with the input: 1 fully dehazed (default), 0 the input, '
                        '0.7 seventy per cent of the way')
    parser.add_argument('--suffix', type=_suffix, default='', metavar='TEXT',
                        help='added to each output\'s name before its extension, e.g. _dehazed: photo.jpg -> '
                        'photo_dehazed.jpg (default: none). With a suffix the output folder may be the input '
                        'folder: an earlier run\'s outputs there are not read as inputs')
    parser.add_argument('--ext', choices=['auto', *OUTPUT_EXTENSIONS], default='auto',
                        help='format of the outputs (default: auto, each input\'s own). What a format cannot '
                        'hold is dropped, with a note naming the file: JPEG has no alpha channel (the colours '
                        'are written without it), JPEG and WebP hold 8 bits per sample (16-bit images are '
                        'rounded to 8 bits); png and tiff keep everything')
    parser.add_argument('--quality', type=_quality, default=None, metavar='Q',
                        help=f'JPEG and WebP quality, 1-100 (default: JPEG {DEFAULT_JPEG_QUALITY}, WebP lossless; '
                        'with --quality WebP is lossy too)')
    parser.add_argument('--gallery', action='store_true',
                        help='also write DIR/index.html: each input beside its output, with a before/after '
                        'slider (thumbnails in DIR/gallery/)')
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
    if args.quality is not None and args.ext in ('png', 'tiff'):
        parser.error(f'--quality is for JPEG and WebP outputs; --ext {args.ext} is lossless')

    try:
        pairs = collect_inputs(args.input, args.output, args.suffix, args.ext)
        # The weights are checked before any image is read: a wrong file fails fast.
        net, device, dtype = load_dehazer(args.weights, args.variant, args.device, args.fp16, args.deploy)
    except (ValueError, FileNotFoundError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    if not pairs:
        print(f'error: no images ({" ".join(PHOTO_EXTENSIONS)}) in {shown(args.input)}', file=sys.stderr)
        return 2
    try:
        # auto weighs a runtime's one-time setup against the pixels of this run (headers only).
        workload = (workload_pixels((src for src, _ in pairs), args.max_pixels) if args.backend == 'auto'
                    else None)
        net = create_backend(net, args.backend, device, args.bf16, workload)
    except BackendError as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    _quiet_decoders()
    budget = MemoryBudget.create(net, device, dtype, args.max_memory)
    report = dehaze_files(pairs, net, device, dtype, args.tile, args.tile_overlap, budget=budget,
                          max_pixels=args.max_pixels, skip_existing=args.skip_existing, batch=args.batch,
                          strength=args.strength, quality=args.quality)
    summary = f'{len(report.written)} image(s) written to {shown(args.output)}'
    if report.skipped:
        summary += f', {len(report.skipped)} already there (--skip-existing)'
    print(summary, file=sys.stderr)
    gallery_failed = args.gallery and not _write_gallery(args, pairs, report)
    if report.failed:
        print(f'{len(report.failed)} failed:', file=sys.stderr)
        for _, reason in report.failed:
            print(f'  {reason}', file=sys.stderr)
        return 1
    return 1 if gallery_failed else 0


def _write_gallery(args, pairs, report):
    """DIR/index.html over the outputs that are there (written now or kept by --skip-existing),
    each beside its input; no clear image and no metrics. False when it could not be written."""
    from gunet_arch.tools.gallery import write_gallery

    there = set(report.written) | set(report.skipped)
    entries = [(src, dst) for src, dst in pairs if dst in there]
    settings = [f'weights {shown(os.path.abspath(args.weights))}']
    if args.strength != 1:
        settings.append(f'strength {args.strength:g}')
    try:
        page = write_gallery(args.output, entries, title=f'Dehazed: {shown(os.path.abspath(args.input))}',
                             subtitle='; '.join(settings))
    except (OSError, ValueError) as err:
        print(f'error: gallery not written: {err}', file=sys.stderr)
        return False
    print(f'gallery: {shown(page)}', file=sys.stderr)
    return True


if __name__ == '__main__':
    sys.exit(main())
