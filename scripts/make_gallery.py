#!/usr/bin/env python
"""(Re)write the results gallery of a test: RESULTS/index.html, one static page (no server, no
network) with each set's images worst first, hazy | dehazed | clear with a before/after slider,
the means, the option file and the library versions.

    python scripts/make_gallery.py results/test_gunet_s_sots_indoor [--option-file OPT.yml]

gunet_arch/test.py writes the page itself; this rebuilds it, e.g. after removing images or for a
results folder written without it (images it does not find are shown as placeholders). Exit
status: 0 written, 2 nothing to show.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gunet_arch.tools.gallery import collect_results, write_results_gallery  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('results', help='a test\'s results folder, results/<name>')
    parser.add_argument('--option-file', help='the option file to show in the footer')
    parser.add_argument('--title', help='default: the folder\'s name')
    args = parser.parse_args(argv)
    if not os.path.isdir(args.results) or not collect_results(args.results):
        print(f'error: no test results (gallery/<set>/manifest.json or <set>_metrics.csv) in {args.results}',
              file=sys.stderr)
        return 2
    page = write_results_gallery(args.results, title=args.title, option_file=args.option_file)
    print(page)
    return 0


if __name__ == '__main__':
    sys.exit(main())
