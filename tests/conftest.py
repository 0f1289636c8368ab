"""Shared fixtures: a tiny ITS-style set (hazy/<id>_<k>_<beta>.png, clear/<id>.png) and tiny
option dicts, so model and training tests run in seconds on a CPU."""
import atexit
import copy
import importlib.util
import os
import shutil
import sys
import tempfile

import cv2
import numpy as np
import pytest
import torch
import yaml
from torch import nn

import gunet_arch  # noqa: F401  (first: it makes basicsr 1.4.2 importable with current torchvision)

# The ONNX graphs the tests export are kept in a folder of this test run, not in the user's
# cache (~/.cache/gunet-basicsr). pytest-xdist's workers and the tests' subprocesses inherit it
# through the environment; the process that made it removes it at exit.
if 'GUNET_CACHE_DIR' not in os.environ:
    os.environ['GUNET_CACHE_DIR'] = tempfile.mkdtemp(prefix='gunet-test-cache-')
    atexit.register(shutil.rmtree, os.environ['GUNET_CACHE_DIR'], True)

# The test machines have few cores; one thread per process keeps parallel runs from thrashing.
torch.set_num_threads(1)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = sys.executable
# Small enough to train in seconds: 8 channels, one block per stage (32 px images are 4 px at 1/8).
TINY_NET = {'type': 'GUNet', 'base_dim': 8, 'depths': [1, 1, 1, 1, 1, 1, 1], 'channels_last': False}


def write_tiny_its(root, n_clear=4, hazes=(0.5, 0.7), size=(32, 32), seed=0):
    """A learnable toy dehazing set: smooth random clear images, hazed as I = J t + A (1 - t)."""
    rng = np.random.default_rng(seed)
    hazy_dir, clear_dir = os.path.join(root, 'hazy'), os.path.join(root, 'clear')
    os.makedirs(hazy_dir, exist_ok=True)
    os.makedirs(clear_dir, exist_ok=True)
    h, w = size
    for i in range(1, n_clear + 1):
        small = rng.uniform(0, 255, (4, 4, 3)).astype(np.float32)
        clear = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC).clip(0, 255)
        cv2.imwrite(os.path.join(clear_dir, f'{i}.png'), clear.round().astype(np.uint8))
        for k, t in enumerate(hazes, 1):
            hazy = clear * t + 230 * (1 - t)
            cv2.imwrite(os.path.join(hazy_dir, f'{i}_{k}_{t:.2f}.png'), hazy.round().astype(np.uint8))
    return hazy_dir, clear_dir


@pytest.fixture(scope='session')
def tiny_its(tmp_path_factory):
    """(hazy_dir, clear_dir) of 4 clear x 2 hazy 32x32 images."""
    return write_tiny_its(str(tmp_path_factory.mktemp('tiny_its')))


@pytest.fixture(scope='session')
def tiny_val(tmp_path_factory):
    """A validation set with an odd size (any size must work), SOTS naming."""
    root = str(tmp_path_factory.mktemp('tiny_val'))
    hazy_dir, clear_dir = write_tiny_its(root, n_clear=2, hazes=(0.6, ), size=(36, 44), seed=1)
    return hazy_dir, clear_dir


def tiny_train_opt(hazy_dir, clear_dir, experiments_root, name='tiny', total_iter=8, **train):
    """A complete GUNetModel training option dict on the tiny set (BasicSR's parsed form)."""
    opt = {
        'name': name,
        'model_type': 'GUNetModel',
        'num_gpu': 0,
        'manual_seed': 0,
        'is_train': True,
        'dist': False,
        'rank': 0,
        'world_size': 1,
        'sync_bn': 'auto',
        'datasets': {
            'train': {
                'name': 'tiny', 'type': 'PairedDehazeDataset', 'phase': 'train',
                'dataroot_lq': hazy_dir, 'dataroot_gt': clear_dir, 'io_backend': {'type': 'disk'},
                'gt_size': 32, 'edge_decay': 0.0, 'use_hflip': False, 'use_rot': False,
                'num_worker_per_gpu': 0, 'batch_size_per_gpu': 4, 'dataset_enlarge_ratio': 1,
            },
        },
        'network_g': copy.deepcopy(TINY_NET),
        'path': {
            'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None,
            'experiments_root': experiments_root,
            'models': os.path.join(experiments_root, 'models'),
            'training_states': os.path.join(experiments_root, 'training_states'),
            'log': experiments_root,
            'visualization': os.path.join(experiments_root, 'visualization'),
        },
        'train': {
            'optim_g': {'type': 'AdamW', 'lr': 2e-3, 'weight_decay': 0.01, 'betas': [0.9, 0.999]},
            'scheduler': {'type': 'WarmupCosineLR', 'total_iter': total_iter, 'warmup_iter': 2,
                          'eta_min': 2e-5, 'weight_decay_min': 0},
            'total_iter': total_iter,
            'warmup_iter': -1,
            'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'},
        },
        'val': {
            'val_freq': 10**9, 'save_img': False,
            'metrics': {'psnr': {'type': 'calculate_psnr_dehaze', 'crop_border': 0},
                        'ssim': {'type': 'calculate_ssim_dehaze', 'crop_border': 0}},
        },
        'logger': {'print_freq': 1, 'save_checkpoint_freq': 10**9, 'use_tb_logger': False},
    }
    opt['train'].update(train)
    return opt


def write_option_file(opt, path):
    """An option file as a user writes it (without the keys BasicSR adds while parsing)."""
    opt = copy.deepcopy(opt)
    for key in ('is_train', 'dist', 'rank', 'world_size'):
        opt.pop(key, None)
    for key in ('models', 'training_states', 'log', 'visualization'):
        opt['path'].pop(key, None)
    for ds in opt['datasets'].values():
        ds.pop('phase', None)
    with open(path, 'w') as f:
        yaml.safe_dump(opt, f, sort_keys=False)
    return path


def run_env():
    """Environment for subprocesses: the project importable, few threads (2-core machines)."""
    env = dict(os.environ)
    env['PYTHONPATH'] = ROOT + os.pathsep + env.get('PYTHONPATH', '')
    env['OMP_NUM_THREADS'] = '1'
    return env


@pytest.fixture(autouse=True)
def one_torch_thread_per_worker():
    """Back to one torch thread after each test: a script run in-process (the benchmark sets
    its --threads) would otherwise leave this worker competing with the other for the cores,
    and every later test in it ran several times slower."""
    yield
    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)


def pytest_configure(config):
    config.addinivalue_line('markers', 'cuda: needs a CUDA device (deselect with -m "not cuda")')
    # Tests that need fresh processes for what they check (a kill -9, Ctrl-C, a lock held by
    # another process, a process's peak memory, `make demo`, a BasicSR clone's own train.py):
    # `make test-system` runs them, `make test` deselects them to stay quick.
    config.addinivalue_line('markers', 'system: runs the real commands in fresh processes (make test-system)')


# Running variances down to 1e-5, the size of BatchNorm's eps: there eps changes a channel's scale
# by up to 30%, so a BatchNorm folded (deploy, ONNX) without eps or with another one moves the
# output by well over 1e-6, while a correct fold agrees to float32 rounding (~1e-7).
EPS_SENSITIVE_VAR = (1e-5, 0.3)


def randomise_batch_norms(*nets, seed=0, var_range=(1e-3, 1.0)):
    """Give every BatchNorm2d of ``nets`` the same random running statistics and affine
    parameters (matched by module name), as a trained network has: with the defaults (mean 0,
    variance 1, weight 1, bias 0) an eval-mode BatchNorm is nearly the identity, and a wrong
    fold, a wrong eps or a missing normalisation would go unnoticed. A small ``var_range`` makes
    the result depend on eps."""
    g = torch.Generator().manual_seed(seed)
    lo, hi = var_range
    with torch.no_grad():
        for name, bn in nets[0].named_modules():
            if not isinstance(bn, nn.BatchNorm2d):
                continue
            n = bn.num_features
            values = {'running_mean': torch.randn(n, generator=g) * 0.5,
                      'running_var': torch.rand(n, generator=g) * (hi - lo) + lo,
                      'weight': torch.randn(n, generator=g),
                      'bias': torch.randn(n, generator=g) * 0.3}
            for net in nets:
                target = net.get_submodule(name)
                for key, value in values.items():
                    getattr(target, key).copy_(value)
    return nets[0] if len(nets) == 1 else nets


def load_script(name):
    """scripts/<name>.py as a module (its ``main(argv)`` runs in-process: no interpreter start)."""
    path = os.path.join(ROOT, 'scripts', f'{name}.py')
    spec = importlib.util.spec_from_file_location(f'gunet_script_{name}', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pytest_sessionfinish(session, exitstatus):
    """A skipped test fails the run: everything the tests need is installed by the Makefile, so
    a skip can only hide a broken install. CUDA tests are deselected (-m 'not cuda'), not skipped."""
    reporter = session.config.pluginmanager.get_plugin('terminalreporter')
    skipped = reporter.stats.get('skipped', []) if reporter is not None else []
    if skipped and session.exitstatus == 0:
        reporter.write_line(f'{len(skipped)} test(s) skipped: a skip fails this suite (see -rs above)', red=True)
        session.exitstatus = 1
