"""Every shipped gUNet option file parses through BasicSR's parse_options and builds its model
and datasets (data paths swapped for fixtures), and the train files carry the paper's recipe."""
import glob
import os
import sys

import pytest
import torch
import yaml
from basicsr.data import build_dataset
from basicsr.models import build_model
from basicsr.utils.options import ordered_yaml, parse_options
from conftest import ROOT, load_script

RECIPE = {'t': (128, 1.6e-3), 's': (128, 1.6e-3), 'b': (64, 8e-4), 'd': (32, 4e-4)}
FOLDERS = {'its': ('ITS', 'SOTS-indoor', None), 'ots': ('OTS', 'SOTS-outdoor', 256),
           'haze4k': ('Haze4K-train', 'Haze4K-test', 400), 'rshaze': ('RS-Haze-train', 'RS-Haze-test', None)}
PAPER_TRAIN_FILES = [os.path.join(ROOT, 'options', f'train_gunet_{v}_{s}.yml') for v in RECIPE for s in FOLDERS]
ALL_FILES = sorted(glob.glob(os.path.join(ROOT, 'options', '*.yml')))


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


def swapped_copy(path, tmp_path, hazy_dir, clear_dir):
    opt = load(path)
    for ds in opt['datasets'].values():
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
def test_option_file_builds_model_and_datasets(path, tiny_its, tmp_path, monkeypatch):
    is_train = 'train' in load(path)
    monkeypatch.setattr(sys, 'argv', ['train.py', '-opt', swapped_copy(path, tmp_path, *tiny_its)])
    opt, _ = parse_options(ROOT, is_train=is_train)
    for ds_opt in opt['datasets'].values():
        assert len(build_dataset(ds_opt)) == 8
    amp = (opt.get('train') or {}).get('amp') or {}
    if amp.get('enabled') and amp.get('dtype') == 'float16' and not torch.cuda.is_available():
        with pytest.warns(RuntimeWarning, match='bfloat16'):  # float16 AMP on a CPU
            model = build_model(opt)
    else:
        model = build_model(opt)
    if is_train:
        assert model.schedulers[0].__class__.__name__ == 'WarmupCosineLR'
    assert model.get_bare_model(model.net_g).variant == opt['network_g']['variant']


def test_option_files_are_what_the_generator_writes(tmp_path):
    """The 32 paper-recipe files cannot drift from scripts/make_option_files.py; the demo's two
    say that they are written by hand."""
    load_script('make_option_files').main(['--out', str(tmp_path)])
    generated = sorted(os.listdir(tmp_path))
    assert len(generated) == 32
    for name in generated:
        with open(tmp_path / name) as new, open(os.path.join(ROOT, 'options', name)) as shipped:
            assert new.read() == shipped.read(), f'options/{name} differs from scripts/make_option_files.py'
    hand_written = sorted(set(os.path.basename(p) for p in ALL_FILES) - set(generated))
    assert hand_written == ['test_gunet_t_demo.yml', 'train_gunet_t_demo.yml']
    for name in hand_written:
        with open(os.path.join(ROOT, 'options', name)) as f:
            assert f.readline().startswith('# Written by hand')
