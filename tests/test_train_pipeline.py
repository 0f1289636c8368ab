"""BasicSR's own pipelines through the entry points, in subprocesses as users run them: training
from another working directory with relative data paths, --auto_resume, testing with a CSV; and
a bad option file failing before training starts (in-process: nothing there needs a process)."""
import csv
import os
import platform
import re
import shutil
import subprocess
import sys

import pytest
import torch
import yaml
from conftest import PYTHON, ROOT, TINY_NET, run_env, tiny_train_opt, write_option_file

TRAIN = os.path.join(ROOT, 'gunet_arch', 'train.py')
TEST = os.path.join(ROOT, 'gunet_arch', 'test.py')


def run(args, cwd, check=True):
    proc = subprocess.run([PYTHON] + args, cwd=cwd, env=run_env(), capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f'{args} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}')
    return proc


def lrs_by_iteration(log_text):
    return {int(it): lr for it, lr in re.findall(r'iter:\s+(\d+), lr:\(([^,]+),\)', log_text)}


@pytest.fixture(scope='module')
def trained(tiny_its, tiny_val, tmp_path_factory):
    """One uninterrupted 6-iteration run; data paths relative to the project root, launched from
    an unrelated working directory."""
    tmp = tmp_path_factory.mktemp('pipeline')
    opt = tiny_train_opt(*tiny_its, str(tmp / 'exp'), name='tiny_pipeline', total_iter=6, frozen_bn_iter=5)
    train_ds = opt['datasets']['train']
    train_ds['batch_size_per_gpu'] = 8  # the whole set: one iteration per epoch
    for key in ('dataroot_lq', 'dataroot_gt'):
        train_ds[key] = os.path.relpath(train_ds[key], ROOT)
    opt['datasets']['val'] = {'name': 'tinyval', 'type': 'PairedDehazeDataset', 'dataroot_lq': tiny_val[0],
                              'dataroot_gt': tiny_val[1], 'io_backend': {'type': 'disk'}}
    opt['val']['val_freq'] = 6
    opt['logger']['save_checkpoint_freq'] = 2
    option_file = write_option_file(opt, str(tmp / 'train.yml'))
    elsewhere = tmp / 'elsewhere'
    elsewhere.mkdir()
    run([TRAIN, '-opt', option_file], cwd=str(elsewhere))
    exp = tmp / 'exp' / 'tiny_pipeline'
    return {'tmp': tmp, 'exp': exp, 'option_file': option_file, 'elsewhere': elsewhere}


def read_log(exp):
    return '\n'.join(open(exp / n).read() for n in sorted(os.listdir(exp)) if n.endswith('.log'))


def test_training_writes_checkpoints_states_and_validates(trained):
    exp = trained['exp']
    assert sorted(os.listdir(exp / 'models')) == ['net_g_2.pth', 'net_g_4.pth', 'net_g_6.pth', 'net_g_latest.pth']
    assert sorted(os.listdir(exp / 'training_states')) == ['2.state', '4.state', '6.state']
    log = read_log(exp)
    assert 'Validation tinyval' in log and '# psnr:' in log and 'FrozenBN from iteration 5' in log
    if sys.platform == 'linux' and platform.libc_ver()[0] == 'glibc':
        assert 'CPU allocator: freed memory kept for reuse' in log
    assert not os.listdir(trained['elsewhere'])  # nothing written to the working directory


def test_auto_resume_from_another_directory_continues_the_run(trained, tmp_path):
    exp = trained['exp']
    full_log = read_log(exp)
    full_weights = torch.load(exp / 'models' / 'net_g_latest.pth')['params']
    # Keep the run up to iteration 2, as if it had been killed after that checkpoint.
    copy_root = tmp_path / 'exp'
    shutil.copytree(exp, copy_root / 'tiny_pipeline')
    for name in ('net_g_4.pth', 'net_g_6.pth', 'net_g_latest.pth'):
        os.remove(copy_root / 'tiny_pipeline' / 'models' / name)
    for name in ('4.state', '6.state'):
        os.remove(copy_root / 'tiny_pipeline' / 'training_states' / name)
    for name in os.listdir(copy_root / 'tiny_pipeline'):
        if name.endswith('.log'):
            os.remove(copy_root / 'tiny_pipeline' / name)
    opt = yaml.safe_load(open(trained['option_file']))
    opt['path']['experiments_root'] = str(copy_root)
    option_file = write_option_file(opt, str(tmp_path / 'train.yml'))
    run(['-m', 'gunet_arch.train', '-opt', option_file, '--auto_resume'], cwd=str(tmp_path))

    resumed_log = read_log(copy_root / 'tiny_pipeline')
    assert 'Resuming training from epoch: 1, iter: 2' in resumed_log
    full_lrs, resumed_lrs = lrs_by_iteration(full_log), lrs_by_iteration(resumed_log)
    assert sorted(resumed_lrs) == [3, 4, 5, 6]
    assert all(resumed_lrs[i] == full_lrs[i] for i in resumed_lrs)
    resumed = torch.load(copy_root / 'tiny_pipeline' / 'models' / 'net_g_latest.pth')['params']
    # BasicSR restarts the interrupted epoch with another shuffle of the same 8 images, so the
    # batch statistics are summed in another order: equal up to float rounding.
    for key, value in full_weights.items():
        assert torch.allclose(value.float(), resumed[key].float(), rtol=1e-4, atol=1e-5), key


def test_test_pipeline_saves_images_and_a_metrics_csv(trained, tiny_val, tmp_path):
    opt = {
        'name': 'tiny_pipeline_test', 'model_type': 'GUNetModel', 'num_gpu': 0, 'manual_seed': 0,
        'datasets': {'test': {'name': 'tinyval', 'type': 'PairedDehazeDataset', 'dataroot_lq': tiny_val[0],
                              'dataroot_gt': tiny_val[1], 'io_backend': {'type': 'disk'}}},
        'network_g': dict(TINY_NET),
        'path': {'pretrain_network_g': str(trained['exp'] / 'models' / 'net_g_latest.pth'),
                 'results_root': str(tmp_path / 'results')},
        'val': {'save_img': True, 'suffix': None, 'metrics': {
            'psnr': {'type': 'calculate_psnr_dehaze', 'crop_border': 0},
            'ssim': {'type': 'calculate_ssim_dehaze', 'crop_border': 0}}},
    }
    option_file = str(tmp_path / 'test.yml')
    with open(option_file, 'w') as f:
        yaml.safe_dump(opt, f)
    run([TEST, '-opt', option_file], cwd=str(tmp_path))
    results = tmp_path / 'results' / 'tiny_pipeline_test'
    rows = [r for r in csv.reader(open(results / 'tinyval_metrics.csv')) if r and not r[0].startswith('#')]
    assert rows[0] == ['image', 'psnr', 'ssim'] and len(rows) == 4 and rows[-1][0] == 'mean'
    mean_psnr = sum(float(r[1]) for r in rows[1:-1]) / 2
    assert float(rows[-1][1]) == pytest.approx(mean_psnr, abs=1e-5)
    assert f'# psnr: {float(rows[-1][1]):.4f}' in read_log(results)
    assert len(os.listdir(results / 'visualization' / 'tinyval')) == 2


def test_missing_dataset_path_fails_before_training(tiny_its, tmp_path, monkeypatch):
    """In-process (the option check needs no interpreter of its own): the entry point's main,
    with the command line a user types, from another working directory."""
    import gunet_arch.train as entry_point
    opt = tiny_train_opt(*tiny_its, str(tmp_path / 'exp'), name='tiny_missing')
    opt['datasets']['train']['dataroot_gt'] = 'datasets/no-such-set/clear.lmdb'
    monkeypatch.setattr(sys, 'argv', [TRAIN, '-opt', write_option_file(opt, str(tmp_path / 'train.yml'))])
    monkeypatch.chdir(tmp_path)
    with pytest.raises(Exception, match=r'datasets\.train\.dataroot_gt.*no-such-set'):
        entry_point.main()
    assert not (tmp_path / 'exp').exists()
