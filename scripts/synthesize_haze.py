#!/usr/bin/env python
"""Make a paired hazy/clear set (RESIDE-ITS layout) from clear colour photographs.

    python scripts/synthesize_haze.py --output datasets/demo [--input DIR ...] [--count 10]
        [--seed 0] [--size 256] [--crop 0] [--heldout 2]

Without --input it uses the photographs shipped with installed packages (scikit-image's data).
Writes OUTPUT/{train,heldout}/{hazy,clear}/ and OUTPUT/haze_params.csv (A and beta of every
hazy image). Whole scenes are held out, so held-out clear images never appear in training.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gunet_arch.tools.haze_synthesis import synthesize_dataset  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--input', nargs='+', help='folder(s) of clear photographs (default: package photos)')
    parser.add_argument('--output', required=True, help='folder to write the set into')
    parser.add_argument('--count', type=int, default=10, help='hazy versions per clear image (ITS: 10)')
    parser.add_argument('--seed', type=int, default=0, help='seed for the split, A and beta')
    parser.add_argument('--size', type=int, default=256, help='resize the shorter side to SIZE (0: keep)')
    parser.add_argument('--crop', type=int, default=0, help='then centre-crop to CROP x CROP (0: no crop)')
    parser.add_argument('--heldout', type=int, default=2, help='scenes held out from training')
    parser.add_argument('--min-side', type=int, default=256, help='skip photographs smaller than this')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing set in OUTPUT')
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error('--count must be at least 1')
    try:
        rows = synthesize_dataset(args.output, args.input, count=args.count, seed=args.seed, size=args.size,
                                  crop=args.crop, heldout_scenes=args.heldout, min_side=args.min_side,
                                  overwrite=args.overwrite)
    except (ValueError, FileExistsError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    for split in ('train', 'heldout'):
        n = sum(r['split'] == split for r in rows)
        print(f'{split}: {n} hazy images in {os.path.join(args.output, split)}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
