"""Every shipped gUNet option file parses through BasicSR's parse_options and builds its model
and datasets (data paths swapped for fixtures in each set's naming), the train files carry the
paper's recipe, and the RESIDE-6K and real-haze files that recipe scaled to their size."""
import glob
import os
import sys

import cv2
import numpy as np
import pytest
import torch
import yaml
from basicsr.data import build_dataset
from basicsr.models import build_model
from basicsr.utils.options import ordered_yaml, parse_options
from conftest import ROOT, load_script

from gunet_arch.data.pairing import published_split

RECIPE = {'t': (128, 1.6e-3), 's': (128, 1.6e-3), 'b': (64, 8e-4), 'd': (32, 4e-4)}
FOLDERS = {'its': ('ITS', 'SOTS-indoor', None), 'ots': ('OTS', 'SOTS-outdoor', 256),
           'haze4k': ('Haze4K-train', 'Haze4K-test', 400), 'rshaze': ('RS-Haze-train', 'RS-Haze-test', None)}
PAPER_TRAIN_FILES = [os.path.join(ROOT, 'options', f'train_gunet_{v}_{s}.yml') for v in RECIPE for s in FOLDERS]
ALL_FILES = sorted(glob.glob(os.path.join(ROOT, 'options', '*.yml')))
# key in the file names -> (set, training images, test tile): gUNet-S files, the recipe scaled to the set.
REAL_SETS = {'reside6k': ('reside-6k', 6000, None), 'nh_haze': ('nh-haze', 50, None),
             'dense_haze': ('dense-haze', 50, None), 'o_haze': ('o-haze', 40, 2048), 'i_haze': ('i-haze', 30, 2048)}
# Each small set's whole numbering; the hazy/clear name pattern as distributed.
REAL_NAMES = {'nh-haze': (55, '{:02d}_hazy.png', '{:02d}_GT.png'),
              'dense-haze': (55, '{:02d}_hazy.png', '{:02d}_GT.png'),
              'o-haze': (45, '{:02d}_outdoor_hazy.jpg', '{:02d}_outdoor_GT.jpg'),
              'i-haze': (35, '{:02d}_indoor_hazy.jpg', '{:02d}_indoor_GT.jpg')}


def load(path):
    with open(path) as f:
        return yaml.load(f, Loader=ordered_yaml()[0])


def test_all_variants_and_sets_are_shipped():
    names = {os.path.basename(p) for p in ALL_FILES}
    for v in 'tsbd':
        for s in ('its', 'ots', 'haze4k', 'rshaze'):
            assert f'train_gunet_{v}_{s}.yml' in names
        for s in ('sots_indoor', 'sots_outdoor', 'haze4k', 'rshaze'):
            assert f'test_gunet_{v}_{s}.yml' in names
    for s in REAL_SETS:
        assert f'train_gunet_s_{s}.yml' in names and f'test_gunet_s_{s}.yml' in names


@pytest.mark.parametrize('key', sorted(REAL_SETS))
def test_real_set_files_scale_the_recipe(key):
    """RESIDE-6K: the paper's batch and lr, epochs scaled by image count from ITS's 13,990. The
    small real sets: one GPU, batch 16, lr scaled with the batch, 512 iterations per training
    photo. Both: 5% warm-up, FrozenBN for the last 20%; test at full resolution."""
    dataset, images, tile = REAL_SETS[key]
    train_path = os.path.join(ROOT, 'options', f'train_gunet_s_{key}.yml')
    opt, test = load(train_path), load(os.path.join(ROOT, 'options', f'test_gunet_s_{key}.yml'))
    train_ds, val_ds, train = opt['datasets']['train'], opt['datasets']['val'], opt['train']
    if dataset == 'reside-6k':
        assert train_ds['batch_size_per_gpu'] * 4 == 128 and train['optim_g']['lr'] == 1.6e-3
        assert train['total_iter'] == 430 * 16384 // 128  # 1000 x 6000 / 13990 = 429 epochs, rounded to 430
        assert 'split' not in train_ds and 'split' not in test['datasets']['test']
    else:
        assert train_ds['batch_size_per_gpu'] == 16 and train['optim_g']['lr'] == pytest.approx(1.6e-3 * 16 / 128)
        assert train['total_iter'] == 512 * images
        assert train_ds['split'] == 'trainval' and val_ds['split'] == test['datasets']['test']['split'] == 'test'
        chosen = published_split(dataset, 'trainval')
        assert chosen.last - chosen.first + 1 == images
    assert train['scheduler']['total_iter'] == train['total_iter']
    assert train['scheduler']['warmup_iter'] == round(train['total_iter'] * 0.05)
    assert train['frozen_bn_iter'] == train['total_iter'] - round(train['total_iter'] * 0.2)
    assert train['scheduler']['eta_min'] == pytest.approx(train['optim_g']['lr'] / 100)
    assert train_ds['dataset'] == val_ds['dataset'] == test['datasets']['test']['dataset'] == dataset
    assert val_ds['val_crop_size'] is None and test['datasets']['test']['val_crop_size'] is None
    assert opt['val'].get('tile') == test['val'].get('tile') == tile
    assert test['path']['pretrain_network_g'] == f'experiments/train_gunet_s_{key}/models/net_g_latest.pth'
    header = open(train_path).read().split('\nname:')[0]
    assert 'scaled' in header and 'summarize_seeds.py' in header and '--force_yml manual_seed=$seed' in header


@pytest.mark.parametrize('path', PAPER_TRAIN_FILES, ids=os.path.basename)
def test_train_file_has_the_paper_recipe(path):
    variant, key = os.path.basename(path)[len('train_gunet_'):-4].split('_')
    total_batch, lr = RECIPE[variant]
    opt = load(path)
    train_ds, val_ds, train = opt['datasets']['train'], opt['datasets']['val'], opt['train']
    iters_per_epoch = 16384 // total_batch
    assert opt['model_type'] == 'GUNetModel' and opt['network_g'] == {'type': 'GUNet', 'variant': variant}
    assert train_ds['batch_size_per_gpu'] * 4 == total_batch
    assert train['optim_g'] == {'type': 'AdamW', 'lr': lr, 'weight_decay': 0.01, 'betas': [0.9, 0.999]}
    assert train['total_iter'] == train['scheduler']['total_iter'] == 1000 * iters_per_epoch
    assert train['scheduler']['type'] == 'WarmupCosineLR'
    assert train['scheduler']['warmup_iter'] == 50 * iters_per_epoch
    assert train['scheduler']['eta_min'] == pytest.approx(lr / 100)
    assert train['frozen_bn_iter'] == 800 * iters_per_epoch
    assert train['amp'] == {'enabled': True, 'dtype': 'float16'} and train['warmup_iter'] == -1
    assert train_ds['gt_size'] == 256 and train_ds['edge_decay'] == 0.1
    assert train_ds['use_hflip'] == train_ds['use_rot'] == (key != 'ots')
    train_folder, val_folder, val_crop = FOLDERS[key]
    assert train_ds['dataroot_lq'] == f'datasets/{train_folder}/hazy.lmdb'
    assert train_ds['dataroot_gt'] == f'datasets/{train_folder}/clear.lmdb'
    assert val_ds['dataroot_lq'] == f'datasets/{val_folder}/hazy.lmdb' and val_ds['val_crop_size'] == val_crop
    assert opt['val']['metrics']['psnr']['type'] == 'calculate_psnr_dehaze'
    header = open(path).read().split('\nname:')[0]
    assert 'To use G GPUs' in header and 'batch_size_per_gpu' in header


@pytest.fixture(scope='session')
def real_layouts(tmp_path_factory, tiny_its):
    """set -> (hazy folder, clear folder) in its naming: each small set whole (one folder, as
    NH-HAZE is distributed), RESIDE-6K as 8 same-name pairs; None (the ITS fixture) for the rest."""
    root = tmp_path_factory.mktemp('real_sets')
    pixel = np.zeros((8, 8, 3), np.uint8)
    layouts = {None: tiny_its}
    for dataset, (count, hazy, clear) in REAL_NAMES.items():
        folder = root / dataset
        folder.mkdir()
        for number in range(1, count + 1):
            for pattern in (hazy, clear):
                cv2.imwrite(str(folder / pattern.format(number)), pixel)
        layouts[dataset] = (str(folder), str(folder))
    for sub in ('hazy', 'GT'):
        (root / 'reside-6k' / sub).mkdir(parents=True)
        for number in range(8):
            cv2.imwrite(str(root / 'reside-6k' / sub / f'{number:04d}.png'), pixel)
    layouts['reside-6k'] = (str(root / 'reside-6k' / 'hazy'), str(root / 'reside-6k' / 'GT'))
    return layouts


def expected_length(ds_opt):
    if ds_opt.get('split'):
        chosen = published_split(ds_opt['dataset'], ds_opt['split'])
        return chosen.last - chosen.first + 1
    return 8


def swapped_copy(path, tmp_path, layouts):
    opt = load(path)
    for ds in opt['datasets'].values():
        hazy_dir, clear_dir = layouts[ds.get('dataset')]
        ds.update(dataroot_lq=hazy_dir, dataroot_gt=clear_dir, io_backend={'type': 'disk'})
        ds['num_worker_per_gpu'] = 0
    opt['path']['pretrain_network_g'] = None
    opt['path']['experiments_root' if 'train' in opt else 'results_root'] = str(tmp_path)
    opt['logger'] = {**opt.get('logger', {}), 'use_tb_logger': False}
    copy = tmp_path / os.path.basename(path)
    with open(copy, 'w') as f:
        yaml.dump(dict(opt), f, Dumper=ordered_yaml()[1])
    return str(copy)


@pytest.mark.parametrize('path', ALL_FILES, ids=os.path.basename)
def test_option_file_builds_model_and_datasets(path, real_layouts, tmp_path, monkeypatch):
    is_train = 'train' in load(path)
    monkeypatch.setattr(sys, 'argv', ['train.py', '-opt', swapped_copy(path, tmp_path, real_layouts)])
    opt, _ = parse_options(ROOT, is_train=is_train)
    for ds_opt in opt['datasets'].values():
        assert len(build_dataset(ds_opt)) == expected_length(ds_opt)
    amp = (opt.get('train') or {}).get('amp') or {}
    # float16 AMP switched on by hand on a CPU falls back with a warning; `auto` picks bfloat16
    # there (or nothing) without one.
    if amp.get('enabled') is True and amp.get('dtype') == 'float16' and not torch.cuda.is_available():
        with pytest.warns(RuntimeWarning, match='bfloat16'):
            model = build_model(opt)
    else:
        model = build_model(opt)
    if is_train:
        assert model.schedulers[0].__class__.__name__ == 'WarmupCosineLR'
    assert model.get_bare_model(model.net_g).variant == opt['network_g']['variant']


def test_option_files_are_what_the_generator_writes(tmp_path):
    """The 32 paper-recipe files and the 10 of RESIDE-6K and the real-haze sets cannot drift from
    scripts/make_option_files.py; the demo's two say that they are written by hand."""
    load_script('make_option_files').main(['--out', str(tmp_path)])
    generated = sorted(os.listdir(tmp_path))
    assert len(generated) == 42
    for name in generated:
        with open(tmp_path / name) as new, open(os.path.join(ROOT, 'options', name)) as shipped:
            assert new.read() == shipped.read(), f'options/{name} differs from scripts/make_option_files.py'
    hand_written = sorted(set(os.path.basename(p) for p in ALL_FILES) - set(generated))
    assert hand_written == ['test_gunet_t_demo.yml', 'train_gunet_t_demo.yml']
    for name in hand_written:
        with open(os.path.join(ROOT, 'options', name)) as f:
            assert f.readline().startswith('# Written by hand')
