"""RESIDE-6K and the real-haze sets (NH-HAZE, Dense-HAZE, O-HAZE, I-HAZE): their file names and
folders as distributed, the published train/val/test split by image number, scripts/prepare_lmdb.py
for each, the dataset on folders and LMDBs, tiled testing at full resolution, and the summary of
several seeds. Every set is written here in tiny images with the real names."""
import os
import statistics

import cv2
import numpy as np
import pytest
import torch
from basicsr.data import build_dataloader, build_dataset
from basicsr.models import build_model
from conftest import TINY_NET, load_script, randomise_batch_norms
from fixtures_dehaze import _build, check_item

from gunet_arch.data.lmdb_store import LmdbFormatError
from gunet_arch.data.paired_dehaze_dataset import PairedDehazeDataset
from gunet_arch.data.pairing import (
    PUBLISHED_SPLITS,
    PairingError,
    image_number,
    pair_folders,
    published_split,
)
from gunet_arch.models.option_checks import check_owned_keys
from gunet_arch.tools.metrics_csv import read_metrics_csv, write_metrics_csv

prepare_cli = load_script('prepare_lmdb')
summarize = load_script('summarize_seeds')

# Image numbers on both sides of every boundary of each set's published split.
NUMBERS = {'nh-haze': (44, 45, 46, 50, 51, 55), 'dense-haze': (1, 45, 46, 51, 55),
           'o-haze': (35, 36, 40, 41, 45), 'i-haze': (25, 26, 30, 31, 35)}


def make_nh_haze(root):
    """NH-HAZE as downloaded: one folder holding 01_hazy.png and 01_GT.png side by side."""
    names = [(f'{i:02d}_hazy.png', f'{i:02d}_GT.png', i % 4) for i in NUMBERS['nh-haze']]
    return _build(root, 'nh-haze', 'NH-HAZE', 'NH-HAZE', names)


def make_dense_haze(root):
    """Dense-HAZE: hazy/01_hazy.png and GT/01_GT.png."""
    names = [(f'{i:02d}_hazy.png', f'{i:02d}_GT.png', i % 4) for i in NUMBERS['dense-haze']]
    return _build(root, 'dense-haze', 'Dense_Haze/hazy', 'Dense_Haze/GT', names)


def make_o_haze(root):
    """O-HAZE: JPEGs, hazy/01_outdoor_hazy.jpg and GT/01_outdoor_GT.jpg, in a folder whose name
    has a '#' and spaces."""
    names = [(f'{i:02d}_outdoor_hazy.jpg', f'{i:02d}_outdoor_GT.jpg', i % 4) for i in NUMBERS['o-haze']]
    return _build(root, 'o-haze', 'O-HAZE/# O-HAZY NTIRE 2018/hazy', 'O-HAZE/# O-HAZY NTIRE 2018/GT', names)


def make_i_haze(root):
    """I-HAZE: hazy/01_indoor_hazy.jpg and GT/01_indoor_GT.jpg."""
    names = [(f'{i:02d}_indoor_hazy.jpg', f'{i:02d}_indoor_GT.jpg', i % 4) for i in NUMBERS['i-haze']]
    return _build(root, 'i-haze', 'I-HAZE/# I-HAZY NTIRE 2018/hazy', 'I-HAZE/# I-HAZY NTIRE 2018/GT', names)


def make_reside_6k(root):
    """RESIDE-6K: train/hazy and train/GT (and test/) with identical names, PNG and JPEG mixed."""
    names = [(n, n, k) for k, n in enumerate(('1400_1.png', '0001_0.8_0.2.jpg', '5_3_0.83.png'))]
    return _build(root, 'reside-6k', 'RESIDE-6K/train/hazy', 'RESIDE-6K/train/GT', names)


MAKERS = {'reside-6k': make_reside_6k, 'nh-haze': make_nh_haze, 'dense-haze': make_dense_haze,
          'o-haze': make_o_haze, 'i-haze': make_i_haze}
SMALL_SETS = sorted(PUBLISHED_SPLITS)


def names(pairs):
    return [os.path.basename(p.hazy_path) for p in pairs]


def expected_in(fixture, split=None):
    chosen = published_split(fixture.dataset, split) if split else None
    return [p for p in fixture.pairs if chosen is None or chosen.first <= image_number(p.hazy) <= chosen.last]


def disk_dataset(fixture, **extra):
    opt = {'dataroot_lq': fixture.hazy_dir, 'dataroot_gt': fixture.clear_dir, 'io_backend': {'type': 'disk'},
           'phase': 'val', 'dataset': fixture.dataset}
    opt.update(extra)
    return PairedDehazeDataset(opt)


def lmdb_dataset(output, **extra):
    opt = {'dataroot_lq': os.path.join(output, 'hazy.lmdb'), 'dataroot_gt': os.path.join(output, 'clear.lmdb'),
           'io_backend': {'type': 'lmdb'}, 'phase': 'val'}
    opt.update(extra)
    return PairedDehazeDataset(opt)


def check_all(ds, expected, lossy, same_clear_content=False):
    assert len(ds) == len(expected)
    for item, want in zip(ds, expected):
        check_item(item, want, lossy=lossy, same_clear_content=same_clear_content)


def prepare(fixture, output, *extra):
    return prepare_cli.main(['--dataset', fixture.dataset, '--hazy', fixture.hazy_dir, '--clear', fixture.clear_dir,
                             '--output', str(output), '--workers', '1', '--no-progress', *extra])


# -- names and splits -------------------------------------------------------------------------------
@pytest.mark.parametrize('dataset', sorted(MAKERS))
def test_each_set_pairs_as_distributed(tmp_path, dataset):
    fixture = MAKERS[dataset](str(tmp_path))
    rule = 'same_name' if dataset == 'reside-6k' else 'hazy_gt'
    for given in (rule, None):  # the set's rule, and detected from the names
        pairs, used = pair_folders(fixture.hazy_dir, fixture.clear_dir, given)
        assert used == rule
        assert [(os.path.basename(p.hazy_path), os.path.basename(p.clear_path)) for p in pairs] == \
            [(p.hazy, p.clear) for p in fixture.pairs]


def test_published_splits():
    """The NTIRE challenges' splits, and trainval = train + val."""
    table = {name: {part: (s.first, s.last) for part in ('train', 'val', 'test', 'trainval')
                    for s in [published_split(name, part)]} for name in SMALL_SETS}
    assert table['nh-haze'] == table['dense-haze'] == {
        'train': (1, 45), 'val': (46, 50), 'test': (51, 55), 'trainval': (1, 50)}
    assert table['o-haze'] == {'train': (1, 35), 'val': (36, 40), 'test': (41, 45), 'trainval': (1, 40)}
    assert table['i-haze'] == {'train': (1, 25), 'val': (26, 30), 'test': (31, 35), 'trainval': (1, 30)}
    with pytest.raises(ValueError, match='reside-6k has no numbered split.*folders'):
        published_split('reside-6k', 'test')
    with pytest.raises(ValueError, match="Unknown split 'tset'"):
        published_split('nh-haze', 'tset')


@pytest.mark.parametrize('dataset', SMALL_SETS)
def test_split_selects_by_image_number(tmp_path, dataset):
    fixture = MAKERS[dataset](str(tmp_path))
    for split in ('train', 'val', 'test', 'trainval'):
        pairs, _ = pair_folders(fixture.hazy_dir, fixture.clear_dir, split=published_split(dataset, split))
        assert names(pairs) == [p.hazy for p in expected_in(fixture, split)]
        assert names(pairs)  # every part of the fixture holds images


# -- the dataset on folders and LMDBs -----------------------------------------------------------------
@pytest.mark.parametrize('dataset', sorted(MAKERS))
def test_dataset_reads_each_set_from_its_folders(tmp_path, dataset):
    fixture = MAKERS[dataset](str(tmp_path))
    split = 'test' if dataset in PUBLISHED_SPLITS else None
    ds = disk_dataset(fixture, split=split)
    check_all(ds, expected_in(fixture, split), fixture.lossy)


def test_training_crops_of_a_split_stay_aligned(tmp_path):
    fixture = make_nh_haze(str(tmp_path))
    ds = disk_dataset(fixture, split='trainval', phase='train', gt_size=16, edge_decay=0.1, use_hflip=True,
                      use_rot=True)
    assert len(ds) == 4
    for index, want in enumerate(expected_in(fixture, 'trainval')):
        item = ds[index]
        assert item['lq'].shape == (3, 16, 16)
        # A flipped or rotated pair is still hazy_from_clear of its clear crop; check_item's name and
        # blue-code checks still hold.
        check_item(item, want)


@pytest.mark.parametrize('dataset', sorted(MAKERS))
def test_prepare_lmdb_for_each_set(tmp_path, dataset, capsys):
    """scripts/prepare_lmdb.py --dataset <set> [--split test] in-process; the dataset reads it."""
    fixture = MAKERS[dataset](str(tmp_path / 'raw'))
    split = 'test' if dataset in PUBLISHED_SPLITS else None
    assert prepare(fixture, tmp_path / 'out', *(['--split', split] if split else [])) == 0
    log = capsys.readouterr().out
    expected = expected_in(fixture, split)
    assert f'{dataset}: {len(expected)} hazy images paired' in log
    if split:
        assert f"{dataset}'s test split (images" in log
    ds = lmdb_dataset(str(tmp_path / 'out'), dataset=dataset, split=split)
    check_all(ds, expected, fixture.lossy)


def test_split_of_a_whole_set_lmdb_and_guards(tmp_path):
    """One LMDB of the whole set, split when read; an LMDB of one part read as another part, or as
    another set, is refused with the database named."""
    fixture = make_o_haze(str(tmp_path / 'raw'))
    whole, test = str(tmp_path / 'whole'), str(tmp_path / 'test')
    assert prepare(fixture, whole) == 0 and prepare(fixture, test, '--split', 'test') == 0
    for split in ('trainval', 'test'):
        check_all(lmdb_dataset(whole, dataset='o-haze', split=split), expected_in(fixture, split), lossy=True)
    with pytest.raises(PairingError, match=r"No image of o-haze's trainval split \(images 1-40\) in .*test/hazy.lmdb"
                       r".*numbers found: 41-45"):
        lmdb_dataset(test, dataset='o-haze', split='trainval')
    with pytest.raises(LmdbFormatError, match='test/hazy.lmdb was prepared from o-haze.*dataset: i-haze'):
        lmdb_dataset(test, dataset='i-haze', split='test')
    with pytest.raises(ValueError, match='split .* with dataset None'):
        lmdb_dataset(test, split='test')


# -- bad layouts -------------------------------------------------------------------------------------
def test_a_misnamed_file_is_named_and_nothing_is_written(tmp_path, capsys):
    fixture = make_nh_haze(str(tmp_path / 'raw'))
    os.rename(os.path.join(fixture.hazy_dir, '51_hazy.png'), os.path.join(fixture.hazy_dir, '51_haze.png'))
    assert prepare(fixture, tmp_path / 'out', '--split', 'test') == 1
    err = capsys.readouterr().err
    assert '51_haze.png (neither <scene>_hazy nor <scene>_GT)' in err
    assert not os.path.exists(tmp_path / 'out')
    with pytest.raises(PairingError, match='51_haze.png'):
        disk_dataset(fixture)


def test_a_clear_image_in_the_hazy_folder_is_named(tmp_path):
    fixture = make_dense_haze(str(tmp_path))
    os.rename(os.path.join(fixture.clear_dir, '46_GT.png'), os.path.join(fixture.hazy_dir, '46_GT.png'))
    with pytest.raises(PairingError, match=r'hazy/46_GT.png \(a clear image in the hazy folder\)'):
        disk_dataset(fixture)


def test_a_hazy_image_without_its_clear_one_is_named(tmp_path):
    fixture = make_i_haze(str(tmp_path))
    os.remove(os.path.join(fixture.clear_dir, '31_indoor_GT.jpg'))
    with pytest.raises(PairingError, match='1 of 2 hazy images .* no clear partner .*31_indoor_hazy.jpg'):
        disk_dataset(fixture, split='test')


def test_an_unnumbered_image_cannot_be_split(tmp_path):
    fixture = make_nh_haze(str(tmp_path))
    for old, new in (('44_hazy.png', 'extra_hazy.png'), ('44_GT.png', 'extra_GT.png')):
        os.rename(os.path.join(fixture.hazy_dir, old), os.path.join(fixture.hazy_dir, new))
    with pytest.raises(PairingError, match='do not start with an image number.*extra_hazy.png'):
        disk_dataset(fixture, split='train')
    assert len(disk_dataset(fixture)) == len(fixture.pairs)  # without a split it is just another pair


def test_official_rearrangement_of_a_real_set(tmp_path):
    """gUNet's IN/ + GT/ layout (identical names) of NH-HAZE: the set's rule refuses it with the
    way out in the message; pairing: same_name takes it, and the split still goes by number."""
    names = [(f'{i:02d}.png', f'{i:02d}.png', i % 4) for i in NUMBERS['nh-haze']]
    fixture = _build(str(tmp_path), 'nh-haze', 'NH-HAZE/IN', 'NH-HAZE/GT', names)
    with pytest.raises(PairingError, match=r'NH-HAZE/IN/44.png \(neither .*pairing: same_name'):
        disk_dataset(fixture, split='test')
    ds = disk_dataset(fixture, split='test', pairing='same_name')
    check_all(ds, expected_in(fixture, 'test'), lossy=False)


def test_split_flag_needs_a_set_with_a_published_split(tmp_path, capsys):
    fixture = make_reside_6k(str(tmp_path))
    with pytest.raises(SystemExit) as stop:
        prepare(fixture, tmp_path / 'out', '--split', 'test')
    assert stop.value.code == 2
    assert '--split test with --dataset reside-6k: reside-6k has no numbered split' in capsys.readouterr().err


def test_option_checks_name_the_key():
    def opt(**ds):
        return {'model_type': 'GUNetModel', 'datasets': {'test': {'type': 'PairedDehazeDataset', **ds}},
                'val': {'save_img': False}}

    check_owned_keys(opt(dataset='nh-haze', split='test'))
    with pytest.raises(ValueError, match="datasets.test.dataset: unknown set 'nh_haze'; did you mean 'nh-haze'"):
        check_owned_keys(opt(dataset='nh_haze'))
    with pytest.raises(ValueError, match="datasets.test.split: Unknown split 'tets'"):
        check_owned_keys(opt(dataset='nh-haze', split='tets'))
    with pytest.raises(ValueError, match="datasets.test.split: .*'paired'"):
        check_owned_keys(opt(dataset='paired', split='test'))
    with pytest.raises(ValueError, match="unknown key 'spilt'; did you mean 'split'"):
        check_owned_keys(opt(spilt='test'))
    bad_val = opt()
    bad_val['val'] = {'tiles': 512}
    with pytest.raises(ValueError, match="val: unknown key 'tiles'; did you mean 'tile'"):
        check_owned_keys(bad_val)
    for val, message in (({'tile': 8}, 'val.tile must be 0'), ({'tile': 64, 'tile_overlap': 40}, 'val.tile_overlap'),
                         ({'tile': '512'}, 'val.tile: expected an integer')):
        bad_val['val'] = val
        with pytest.raises(ValueError, match=message):
            check_owned_keys(bad_val)


# -- testing at full resolution in tiles ----------------------------------------------------------------
def build_model_net():
    from gunet_arch.archs.gunet_arch import GUNet

    torch.manual_seed(0)
    return GUNet(**{k: v for k, v in TINY_NET.items() if k != 'type'}).eval()


def test_tiled_validation_scores_as_the_whole_image(tmp_path, monkeypatch):
    """val.tile runs the package tiling (whole-image SK statistics): a 48x64 photo in 24-pixel
    tiles scores within 0.02 dB PSNR (the bound the README states for tiling) and 1e-3 SSIM of
    the untiled test, and the tiles really ran."""
    import gunet_arch.tools.inference as inference

    root = tmp_path / 'NH-HAZE'
    root.mkdir()
    rng = np.random.default_rng(0)
    smooth = lambda: np.kron(rng.uniform(0, 255, (6, 8, 3)), np.ones((8, 8, 1)))  # noqa: E731
    for number in (51, 52):
        clear = cv2.GaussianBlur(smooth(), (0, 0), 3)
        cv2.imwrite(str(root / f'{number}_GT.png'), clear.round().astype(np.uint8))
        cv2.imwrite(str(root / f'{number}_hazy.png'), (clear * 0.6 + 90).round().astype(np.uint8))
    weights = tmp_path / 'net.pth'
    net = randomise_batch_norms(build_model_net())
    torch.save({'params': net.state_dict()}, weights)

    calls = []
    real_run_tiled = inference.run_tiled
    monkeypatch.setattr(inference, 'run_tiled', lambda *a: calls.append(a[2:]) or real_run_tiled(*a))
    scores = {}
    for tile in (None, 24):
        results = tmp_path / f'results_{tile}'
        opt = {'name': 'tiles', 'model_type': 'GUNetModel', 'num_gpu': 0, 'is_train': False, 'dist': False,
               'rank': 0, 'world_size': 1, 'network_g': dict(TINY_NET),
               'path': {'pretrain_network_g': str(weights), 'param_key_g': 'params', 'strict_load_g': True,
                        'results_root': str(results), 'log': str(results),
                        'visualization': str(results / 'visualization')},
               'val': {'save_img': False, 'gallery': False, 'tile': tile, 'tile_overlap': 8, 'metrics': {
                   'psnr': {'type': 'calculate_psnr_dehaze', 'crop_border': 0},
                   'ssim': {'type': 'calculate_ssim_dehaze', 'crop_border': 0}}}}
        check_owned_keys(opt)
        ds_opt = {'name': 'NH-HAZE-test', 'type': 'PairedDehazeDataset', 'phase': 'test', 'dataroot_lq': str(root),
                  'dataroot_gt': str(root), 'io_backend': {'type': 'disk'}, 'dataset': 'nh-haze', 'split': 'test'}
        loader = build_dataloader(build_dataset(ds_opt), ds_opt, num_gpu=0, dist=False)
        model = build_model(opt)
        model.validation(loader, current_iter='tiles', tb_logger=None, save_img=False)
        scores[tile] = read_metrics_csv(str(results / 'NH-HAZE-test_metrics.csv'))[0]
    assert calls == [(24, 8), (24, 8)]
    assert sorted(scores[24]) == sorted(scores[None]) == ['51_hazy', '52_hazy']
    for image, untiled in scores[None].items():
        assert scores[24][image]['psnr'] == pytest.approx(untiled['psnr'], abs=0.02)
        assert scores[24][image]['ssim'] == pytest.approx(untiled['ssim'], abs=1e-3)
    assert scores[24] != scores[None]  # tiles are not bit-identical to one pass: the tiled path ran


# -- several seeds ------------------------------------------------------------------------------------
def test_summarize_seeds(tmp_path, capsys):
    psnr = [20.0, 20.5, 21.25]
    ssim = [0.70, 0.72, 0.75]
    for seed, (p, s) in enumerate(zip(psnr, ssim)):
        rows = [('51_hazy', {'psnr': p - 1, 'ssim': s}), ('52_hazy', {'psnr': p + 1, 'ssim': s})]
        write_metrics_csv(str(tmp_path / f'test_seed{seed}' / 'NH-HAZE-test_metrics.csv'), ['psnr', 'ssim'], rows,
                          {'psnr': p, 'ssim': s})
    runs = [str(tmp_path / f'test_seed{seed}') for seed in range(3)]
    # A file named twice (a folder and its CSV) counts once.
    assert summarize.main(runs + [os.path.join(runs[0], 'NH-HAZE-test_metrics.csv')]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == '| set | metric | mean ± std | min | max | n |'
    assert lines[2] == (f'| NH-HAZE-test | psnr | {statistics.mean(psnr):.2f} ± {statistics.stdev(psnr):.2f} '
                        '| 20.00 | 21.25 | 3 |')
    assert lines[3] == (f'| NH-HAZE-test | ssim | {statistics.mean(ssim):.4f} ± {statistics.stdev(ssim):.4f} '
                        '| 0.7000 | 0.7500 | 3 |')

    assert summarize.main(runs[:1]) == 0
    assert '20.00 (one run)' in capsys.readouterr().out
    empty = tmp_path / 'empty'
    empty.mkdir()
    assert summarize.main([str(empty)]) == 1
    assert f'{empty}: no *_metrics.csv' in capsys.readouterr().err


def test_force_yml_manual_seed_seeds_the_run(tiny_its, tmp_path, monkeypatch):
    """basicsr 1.4.2 seeds before applying --force_yml; the seed loop of the docs relies on the
    forced value being the one the generators start from."""
    import random

    from basicsr.utils.options import parse_options
    from conftest import tiny_train_opt, write_option_file

    opt_file = write_option_file(tiny_train_opt(*tiny_its, str(tmp_path / 'exp'), name='seeded'),
                                 str(tmp_path / 'seeded.yml'))
    draws = {}
    for seed in (0, 5):
        monkeypatch.setattr('sys.argv', ['test.py', '-opt', opt_file, '--force_yml', f'manual_seed={seed}',
                                         f'name=seeded_{seed}'])
        opt, _ = parse_options(str(tmp_path), is_train=False)
        assert opt['manual_seed'] == seed and opt['name'] == f'seeded_{seed}'
        assert torch.initial_seed() == seed
        draws[seed] = (random.random(), np.random.rand(), torch.rand(1).item())
    monkeypatch.setattr('sys.argv', ['test.py', '-opt', opt_file, '--force_yml', 'manual_seed=5'])
    parse_options(str(tmp_path), is_train=False)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == draws[5] != draws[0]
