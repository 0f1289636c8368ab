"""`make demo` end to end on a shrunken configuration: synthesis, LMDB preparation, training
through gunet_arch/train.py, testing through gunet_arch/test.py, the report; then a second run
that reuses everything (make --dry-run) and reports the same."""
import glob
import os
import re
import shutil
import subprocess
import sys
import uuid

import cv2
import numpy as np
import pytest
import yaml
from conftest import load_script

from gunet_arch.metrics import calculate_psnr_dehaze
from gunet_arch.tools.demo_report import HeldOutImage, contact_sheet, summary_line

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAST_LINE = re.compile(r'^held-out PSNR: hazy (\d+\.\d\d) dB, dehazed (\d+\.\d\d) dB$')
TABLE_ROW = re.compile(r'^(\S+)\s+(\d+\.\d\d) / \d\.\d{4}\s+(\d+\.\d\d) / \d\.\d{4}$')


def _rgb_unit(path):
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    assert img is not None, path
    return img[..., ::-1].astype(np.float64) / 255


def check_printed_psnrs(stdout, data, results):
    """Every PSNR the report printed (per image, the mean row and the last line) equals, to
    0.01 dB, what calculate_psnr_dehaze gives on the files on disk: the held-out hazy and clear
    PNGs and the dehazed PNGs gunet_arch/test.py wrote. (The printed dehazed values come from
    the float network output, the PNGs are rounded to 8 bits: that moves them by ~1e-3 dB.)"""
    lines = stdout.strip().splitlines()
    rows = {m.group(1): (float(m.group(2)), float(m.group(3))) for m in map(TABLE_ROW.match, lines) if m}
    names = sorted(os.path.splitext(n)[0] for n in os.listdir(os.path.join(data, 'heldout', 'hazy')))
    assert sorted(rows) == sorted(names + ['mean'])
    recomputed = []
    for name in names:
        hazy = _rgb_unit(os.path.join(data, 'heldout', 'hazy', f'{name}.png'))
        clear = _rgb_unit(os.path.join(data, 'heldout', 'clear', f'{name.split("_")[0]}.png'))
        dehazed = _rgb_unit(os.path.join(results, 'visualization', 'demo-heldout', f'{name}_dehazed.png'))
        assert hazy.shape == clear.shape == dehazed.shape
        pair = (calculate_psnr_dehaze(hazy, clear), calculate_psnr_dehaze(dehazed, clear))
        assert rows[name] == pytest.approx(pair, abs=0.01), name
        recomputed.append(pair)
    means = tuple(np.mean(recomputed, axis=0))
    assert rows['mean'] == pytest.approx(means, abs=0.01)
    last = LAST_LINE.match(lines[-1])
    assert (float(last.group(1)), float(last.group(2))) == pytest.approx(means, abs=0.01)


def _shrunk_options(tmp_path, data, tag):
    """The demo's option files with a few iterations of a tiny batch, pointed at ``data``."""
    with open(os.path.join(ROOT, 'options', 'train_gunet_t_demo.yml')) as f:
        train = yaml.safe_load(f)
    with open(os.path.join(ROOT, 'options', 'test_gunet_t_demo.yml')) as f:
        test = yaml.safe_load(f)
    train['name'] = f'train_{tag}'
    train['num_gpu'] = 0
    for split, opts in (('train', train['datasets']['train']), ('heldout', test['datasets']['test'])):
        opts['dataroot_lq'] = os.path.join(data, f'{split}_lmdb', 'hazy.lmdb')
        opts['dataroot_gt'] = os.path.join(data, f'{split}_lmdb', 'clear.lmdb')
    train['datasets']['train'].update(gt_size=32, batch_size_per_gpu=2, dataset_enlarge_ratio=1)
    train['train']['total_iter'] = 3
    train['train']['scheduler'].update(total_iter=3, warmup_iter=1)
    train['train']['frozen_bn_iter'] = 2
    train['logger'].update(print_freq=1, save_checkpoint_freq=100)
    test['name'] = f'test_{tag}'
    test['num_gpu'] = 0
    weights = os.path.join(ROOT, 'experiments', train['name'], 'models', 'net_g_latest.pth')
    test['path']['pretrain_network_g'] = weights
    paths = {}
    for key, opt in (('train', train), ('test', test)):
        paths[key] = str(tmp_path / f'{key}.yml')
        with open(paths[key], 'w') as f:
            yaml.safe_dump(opt, f, sort_keys=False)
    return paths, weights, os.path.join(ROOT, 'results', test['name'])


@pytest.fixture
def demo_names():
    tag = f'pytest_demo_{uuid.uuid4().hex[:8]}'
    yield tag
    for pattern in (f'experiments/train_{tag}*', f'results/test_{tag}*'):
        for path in glob.glob(os.path.join(ROOT, pattern)):
            shutil.rmtree(path, ignore_errors=True)


@pytest.mark.system
def test_make_demo_end_to_end_and_again(tmp_path, demo_names, capsys):
    photos = tmp_path / 'photos'
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        small = rng.uniform(0, 1, (6, 8, 3)).astype(np.float32)
        img = cv2.resize(small, (128, 96), interpolation=cv2.INTER_CUBIC) + rng.normal(0, 0.08, (96, 128, 3))
        cv2.imwrite(str(photos / f'scene{i}.png'), np.round(np.clip(img, 0, 1) * 255).astype(np.uint8))
    data = str(tmp_path / 'demo')
    options, weights, results = _shrunk_options(tmp_path, data, demo_names)
    stamp = tmp_path / 'installed'
    stamp.touch()  # the environment exists: make must not reinstall anything
    make = [
        'make', '--no-print-directory', 'demo', f'PY={sys.executable}', f'STAMP={stamp}', f'DEMO_DATA={data}',
        f'DEMO_SYNTH_ARGS=--input {photos} --count 2 --size 64 --min-side 64 --heldout 1 --seed 0',
        f'DEMO_TRAIN_OPT={options["train"]}', f'DEMO_TEST_OPT={options["test"]}', f'DEMO_WEIGHTS={weights}',
        f'DEMO_RESULTS={results}', 'DEMO_ONE_RANK='  # the shrunk batch, whatever the number of ranks
    ]
    env = dict(os.environ, OMP_NUM_THREADS='1')
    first = subprocess.run(make, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert first.returncode == 0, (first.stdout + first.stderr)[-4000:]
    lines = first.stdout.strip().splitlines()
    assert LAST_LINE.match(lines[-1]), lines[-5:]
    for step in ('synthesize_haze.py', 'prepare_lmdb.py', 'gunet_arch/train.py', 'gunet_arch/test.py'):
        assert step in first.stdout
    assert os.path.isfile(weights)
    held_out = os.listdir(os.path.join(data, 'heldout', 'hazy'))
    assert len(held_out) == 2
    sides = os.listdir(os.path.join(results, 'side_by_side'))
    assert sorted(sides) == sorted(held_out)
    sheet = cv2.imread(os.path.join(results, 'contact_sheet.png'))
    assert sheet is not None and sheet.shape[1] > 3 * 64
    assert 'contact sheet (' in first.stdout
    check_printed_psnrs(first.stdout, data, results)

    # Again: make's dry run lists what a second `make demo` runs, from the same timestamps a real
    # run would compare: the report only, everything else is reused. The report itself then runs
    # in-process (the first make ran it as a user does) and prints the same result.
    second = subprocess.run(make + ['--dry-run'], cwd=ROOT, capture_output=True, text=True, timeout=60, env=env)
    assert second.returncode == 0, (second.stdout + second.stderr)[-4000:]
    for step in ('synthesize_haze.py', 'prepare_lmdb.py', 'gunet_arch/train.py', 'gunet_arch/test.py'):
        assert step not in second.stdout  # everything is reused
    assert 'scripts/demo_report.py' in second.stdout
    capsys.readouterr()
    assert load_script('demo_report').main(['--data', os.path.join(data, 'heldout'), '--results', results]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == lines[-1]


def test_summary_line_and_contact_sheet_layout(tmp_path):
    paths = []
    for name, value in (('hazy', 200), ('dehazed', 120), ('clear', 60)):
        paths.append(str(tmp_path / f'{name}.png'))
        cv2.imwrite(paths[-1], np.full((50, 70, 3), value, np.uint8))
    images = [HeldOutImage(f'{i}_1_1.00', *paths, dehazed_psnr=20.0 + i, dehazed_ssim=0.9, hazy_psnr=10.0 + i,
                           hazy_ssim=0.5) for i in range(3)]
    assert summary_line(images) == 'held-out PSNR: hazy 11.00 dB, dehazed 21.00 dB'
    sheet = contact_sheet(images, height=40, columns=2)
    assert sheet.shape[0] == 2 * 40 + 8 and sheet.dtype == np.uint8
