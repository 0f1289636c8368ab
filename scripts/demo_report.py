#!/usr/bin/env python
"""The end of `make demo`: held-out PSNR/SSIM of hazy inputs and dehazed outputs, a hazy |
dehazed | clear picture per held-out image, and one contact sheet.

    python scripts/demo_report.py --data datasets/demo/heldout --results results/test_gunet_t_demo

--results is the folder gunet_arch/test.py wrote (its per-image CSV and visualization/).
The last line printed is always `held-out PSNR: hazy X dB, dehazed Y dB`.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gunet_arch.tools.demo_report import write_report  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--data', required=True, help='held-out set: a folder with hazy/ and clear/')
    parser.add_argument('--results', required=True, help='results folder of gunet_arch/test.py')
    parser.add_argument('--dataset-name', default='demo-heldout', help='the test dataset name in the option file')
    parser.add_argument('--suffix', default='dehazed', help='val.suffix of the test option file')
    args = parser.parse_args(argv)
    try:
        write_report(args.data, args.results, args.dataset_name, args.suffix)
    except (OSError, ValueError, KeyError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
