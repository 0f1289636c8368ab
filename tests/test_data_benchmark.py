"""scripts/benchmark_data.py runs end to end and prints its table (tiny images, few samples)."""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'scripts'))
import benchmark_data  # noqa: E402


def test_benchmark_prints_a_row_per_storage(capsys, tmp_path):
    benchmark_data.main(['--height', '40', '--width', '48', '--gt-size', '32', '--clear-images', '2',
                         '--hazy-per-clear', '2', '--samples', '4', '--repeats', '1',
                         '--workdir', str(tmp_path)])
    out = capsys.readouterr().out
    for label in ('disk folders', 'LMDB, --storage auto', 'LMDB, --storage raw'):
        assert f'| {label} |' in out
