"""Mean and spread of test results over several training runs (seeds).

    python scripts/summarize_seeds.py results/test_gunet_s_nh_haze_seed*
    python scripts/summarize_seeds.py results/run_a/NH-HAZE-test_metrics.csv results/run_b/NH-HAZE-test_metrics.csv

Each argument is a test run's results folder (every ``<set>_metrics.csv`` in it is read) or one
such CSV, as gunet_arch/test.py writes them. For every set and metric it prints the mean over the
runs of each run's mean, the sample standard deviation (n - 1 in the denominator; none for one
run), the lowest and highest run and n, as one markdown table. The scores of small test sets
(NH-HAZE, Dense-HAZE, O-HAZE, I-HAZE: 5 photos each) move with the training seed, so a single run
says little on its own.
"""
import argparse
import math
import os
import sys
from collections import OrderedDict

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gunet_arch.tools.metrics_csv import read_metrics_csv  # noqa: E402

SUFFIX = '_metrics.csv'


def metrics_files(path):
    """The metrics CSVs a command-line argument stands for; an error naming it when there is none."""
    if os.path.isdir(path):
        found = sorted(os.path.join(path, n) for n in os.listdir(path) if n.endswith(SUFFIX))
        if not found:
            raise ValueError(f'{path}: no *{SUFFIX} in this folder (a results/<name>/ folder of gunet_arch/test.py)')
        return found
    if not os.path.isfile(path):
        raise ValueError(f'{path}: no such file or folder')
    if not path.endswith(SUFFIX):
        raise ValueError(f'{path}: not a metrics file (*{SUFFIX}, written by gunet_arch/test.py)')
    return [path]


def collect(paths):
    """``{set: {metric: [(run, mean), ...]}}`` over every metrics CSV of ``paths`` (a file named
    twice, e.g. by overlapping shell patterns, counts once)."""
    runs, seen = OrderedDict(), set()
    for path in paths:
        for csv_path in metrics_files(path):
            if os.path.realpath(csv_path) in seen:
                continue
            seen.add(os.path.realpath(csv_path))
            try:
                _, means = read_metrics_csv(csv_path)
            except (OSError, ValueError, KeyError) as err:
                raise ValueError(f'{csv_path}: unreadable metrics file ({err})') from err
            if not means:
                raise ValueError(f'{csv_path}: no "mean" row (an interrupted test run?)')
            name = os.path.basename(csv_path)[:-len(SUFFIX)]
            run = os.path.basename(os.path.dirname(os.path.abspath(csv_path)))
            for metric, value in means.items():
                runs.setdefault(name, OrderedDict()).setdefault(metric, []).append((run, value))
    return runs


def summary(values):
    """(mean, sample standard deviation or None, lowest, highest, n)."""
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean)**2 for v in values) / (n - 1)) if n > 1 else None
    return mean, std, min(values), max(values), n


def table(runs):
    lines = ['| set | metric | mean ± std | min | max | n |', '|---|---|---|---|---|---|']
    for name, metrics in runs.items():
        for metric, pairs in metrics.items():
            mean, std, low, high, n = summary([v for _, v in pairs])
            # dB to a hundredth; SSIM-like scores in [0, 1] to four places.
            f = (lambda v: f'{v:.2f}') if 'psnr' in metric.lower() else (lambda v: f'{v:.4f}')
            spread = f' ± {f(std)}' if std is not None else ' (one run)'
            lines.append(f'| {name} | {metric} | {f(mean)}{spread} | {f(low)} | {f(high)} | {n} |')
    return '\n'.join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('paths', nargs='+', help='results/<name>/ folders of test runs, or their *_metrics.csv files')
    args = parser.parse_args(argv)
    try:
        runs = collect(args.paths)
    except ValueError as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    print(table(runs))
    uneven = [name for name, metrics in runs.items() if len({len(p) for p in metrics.values()}) > 1]
    for name in uneven:
        print(f'note: {name}: not every run has every metric', file=sys.stderr)
    return 0


if __name__ == '__main__':
    sys.exit(main())
