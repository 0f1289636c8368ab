#!/usr/bin/env python
"""Official gUNet results in one command: test every official checkpoint found on its test set
with gunet_arch/test.py and print a table beside the paper's numbers.

    python scripts/evaluate_official.py --weights-dir saved_models --data-root datasets/
        [--variants t s b d] [--sets sots_indoor sots_outdoor haze4k rshaze] [--exp reside-in]
        [--results-root results] [--save-images]

Checkpoints: DIR/<exp>/gunet_<v>.pth or gunet-<v>.pth, exp = reside-in (tested on SOTS-indoor),
reside-out (SOTS-outdoor), haze4k (Haze4K-test), rshaze (RS-Haze-test); or directly in DIR when DIR
is one of those folders (or --exp says which). Test sets: DATA/<SET>/{hazy,clear}.lmdb as
scripts/prepare_lmdb.py writes them (the paths of options/test_gunet_*.yml), or DATA/<SET>/{IN,GT}.
A missing checkpoint or test set is listed and skipped. Per-image results and logs go to
RESULTS/test_official_gunet_<v>_<set>/. Exit status: 0 all found tested, 1 some failed, 2 nothing
to test.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gunet_arch.archs import VARIANTS  # noqa: E402
from gunet_arch.tools.evaluate_official import OFFICIAL_EXP, TEST_SUFFIX, evaluate  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--weights-dir', required=True, help='folder of the official checkpoints (saved_models/)')
    parser.add_argument('--data-root', default='datasets', help='folder holding the prepared test sets')
    parser.add_argument('--variants', nargs='+', choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument('--sets', nargs='+', choices=list(TEST_SUFFIX.values()), default=list(TEST_SUFFIX.values()),
                        help='test sets (default: all four)')
    parser.add_argument('--exp', choices=list(OFFICIAL_EXP.values()),
                        help='the experiment of checkpoints lying directly in --weights-dir')
    parser.add_argument('--results-root', help='where results/<name>/ go (default: the project\'s results/)')
    parser.add_argument('--save-images', action='store_true', help='also save the dehazed images')
    args = parser.parse_args(argv)
    keys = [key for key, suffix in TEST_SUFFIX.items() if suffix in args.sets]
    return evaluate(args.weights_dir, args.data_root, variants=args.variants, keys=keys, loose_exp=args.exp,
                    results_root=args.results_root, save_images=args.save_images)


if __name__ == '__main__':
    sys.exit(main())
