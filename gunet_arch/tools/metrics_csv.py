"""The per-image metrics file of a test run, ``results/<name>/<set>_metrics.csv``: one row per
image, a ``mean`` row, then a ``#`` line with the library versions that produced the numbers
(which CSV readers skip as a comment). Written by GUNetModel; read by the demo report, the
gallery and the evaluation of official checkpoints."""
import csv

from ..atomic import atomic_path
from .provenance import csv_comment


def write_metrics_csv(path, names, rows, means):
    """``rows``: ``[(image, {metric: value})]``; ``means``: ``{metric: value}``."""
    with atomic_path(path) as tmp, open(tmp, 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(['image'] + list(names))
        for image, values in rows:
            writer.writerow([image] + [f'{values[n]:.6f}' for n in names])
        writer.writerow(['mean'] + [f'{means[n]:.6f}' for n in names])
        f.write(csv_comment() + '\r\n')


def read_metrics_csv(path):
    """``({image: {metric: value}}, {metric: mean})``."""
    with open(path, newline='') as f:
        rows = list(csv.DictReader(line for line in f if not line.startswith('#')))
    values = {r['image']: {k: float(v) for k, v in r.items() if k != 'image'} for r in rows}
    return {k: v for k, v in values.items() if k != 'mean'}, values.get('mean', {})
