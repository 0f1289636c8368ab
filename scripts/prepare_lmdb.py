"""Prepare a dehazing set as OUTPUT/hazy.lmdb + OUTPUT/clear.lmdb for PairedDehazeDataset.

    python scripts/prepare_lmdb.py --dataset its --hazy datasets/ITS/hazy --clear datasets/ITS/clear \
        --output datasets/ITS/lmdb [--storage raw] [--verify]
    python scripts/prepare_lmdb.py --verify --output datasets/ITS/lmdb      # check an existing one

The small real-haze sets come as one folder; --split picks a part of their published split:

    python scripts/prepare_lmdb.py --dataset nh-haze --hazy datasets/raw/NH-HAZE --clear datasets/raw/NH-HAZE \
        --split trainval --output datasets/NH-HAZE-trainval

See datasets/README.md for every set's layout and command.
"""
import argparse
import os
import sys

from gunet_arch.data.image_codec import DEFAULT_MAX_PIXELS
from gunet_arch.data.lmdb_store import CLEAR_DB, HAZY_DB
from gunet_arch.data.lmdb_writer import DATASET_PRESETS, format_summary, prepare_lmdb, verify_lmdb
from gunet_arch.data.pairing import PAIRING_RULES, PUBLISHED_SPLITS, SPLITS, published_split


def pixel_count(text):
    """300000000, 300_000_000 or 3e8; 0 for no limit."""
    try:
        value = float(text.replace('_', ''))
    except ValueError:
        raise argparse.ArgumentTypeError(f'not a number of pixels: {text!r}') from None
    if value < 0 or value != int(value):
        raise argparse.ArgumentTypeError(f'not a number of pixels: {text!r}')
    return int(value)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--dataset', choices=list(DATASET_PRESETS), default='paired',
                        help='which set the folders hold; picks the hazy-to-clear name rule')
    parser.add_argument('--hazy', nargs='+', help='folder(s) of hazy images (OTS: all its part* folders)')
    parser.add_argument('--clear', nargs='+', help='folder(s) of clear (ground-truth) images')
    parser.add_argument('--output', required=True, help='folder to write hazy.lmdb and clear.lmdb into')
    parser.add_argument('--storage', choices=['auto', 'png', 'raw'], default='auto',
                        help='auto: PNG (BasicSR format), JPEG files kept as they are; png: PNG for '
                        'every file; raw: undecoded pixels, larger on disk and several times faster to load')
    parser.add_argument('--pairing', choices=PAIRING_RULES, help="override the dataset's name rule")
    parser.add_argument('--split', choices=SPLITS,
                        help='only this part of the published split, by image number (trainval: train and val): '
                        + '; '.join(f'{name} ' + ', '.join(f'{part} {a}-{b}' for part, (a, b) in parts.items())
                                    for name, parts in PUBLISHED_SPLITS.items()))
    parser.add_argument('--compress-level', type=int, default=1, help='PNG compression level (0-9)')
    parser.add_argument('--workers', type=int, help='encoding processes (default: all cores)')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing output')
    parser.add_argument('--verify', action='store_true',
                        help='check every entry (checksum, decoding, size) and print a summary')
    parser.add_argument('--skip-unpaired', action='store_true',
                        help='list hazy images without a clear partner and leave them out')
    parser.add_argument('--max-pixels', type=pixel_count, default=DEFAULT_MAX_PIXELS,
                        help='refuse, before decoding, any image whose header claims more pixels than this '
                        f'(default {DEFAULT_MAX_PIXELS:_}; 0: no limit)')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')
    args = parser.parse_args(argv)
    if (args.hazy is None) != (args.clear is None):
        parser.error('--hazy and --clear go together')
    if args.hazy is None and not args.verify:
        parser.error('give --hazy and --clear to prepare, or --verify alone to check an existing output')
    if args.split is not None:
        if args.hazy is None:
            parser.error('--split selects images to prepare; it goes with --hazy and --clear')
        try:
            published_split(args.dataset, args.split)
        except ValueError as err:
            parser.error(f'--split {args.split} with --dataset {args.dataset}: {err}')
    return args


def main(argv=None):
    args = parse_args(argv)
    try:
        if args.hazy is None:
            summary = verify_lmdb(os.path.join(args.output, HAZY_DB), os.path.join(args.output, CLEAR_DB),
                                  workers=args.workers, progress=not args.no_progress, max_pixels=args.max_pixels)
            print(format_summary(summary))
        else:
            prepare_lmdb(args.hazy, args.clear, args.output, dataset=args.dataset, storage=args.storage,
                         pairing=args.pairing, overwrite=args.overwrite, verify=args.verify,
                         skip_unpaired=args.skip_unpaired, workers=args.workers,
                         compress_level=args.compress_level, progress=not args.no_progress,
                         max_pixels=args.max_pixels, split=args.split)
    except (OSError, ValueError) as err:
        # Bad input is reported as a message naming every bad file, not as a traceback.
        print(f'error: {err}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
