"""PairedDehazeDataset on folders: pairing, alignment, crops, augmentation, colour, bad input."""
import os
import random

import numpy as np
import pytest
import torch
from basicsr.data import build_dataloader, build_dataset
from basicsr.utils.registry import DATASET_REGISTRY
from fixtures_dehaze import (
    HAZY_HW,
    MAKERS,
    ExpectedPair,
    centre,
    check_item,
    check_mixed_formats,
    clear_pixels,
    hazy_from_clear,
    make_its,
    make_mixed_formats,
    make_sots_indoor,
    to_uint8,
    write_image,
)

import gunet_arch  # noqa: F401  (registers the dataset)
from gunet_arch.data.image_codec import ImageDecodeError
from gunet_arch.data.paired_dehaze_dataset import PairedDehazeDataset, edge_decay_start
from gunet_arch.data.pairing import PairingError


def disk_opt(fixture, **extra):
    opt = {'dataroot_lq': fixture.hazy_dir, 'dataroot_gt': fixture.clear_dir, 'io_backend': {'type': 'disk'},
           'phase': 'val'}
    opt.update(extra)
    return opt


@pytest.fixture(scope='module')
def its(tmp_path_factory):
    return make_its(str(tmp_path_factory.mktemp('its')))


def test_registered_with_basicsr():
    assert DATASET_REGISTRY.get('PairedDehazeDataset') is PairedDehazeDataset


@pytest.mark.parametrize('dataset', sorted(MAKERS))
def test_full_images_pair_correctly_in_every_layout(tmp_path, dataset):
    fixture = MAKERS[dataset](str(tmp_path))
    ds = PairedDehazeDataset(disk_opt(fixture))
    assert len(ds) == len(fixture.pairs)
    for index, expected in enumerate(fixture.pairs):
        item = ds[index]
        assert item['lq'].dtype == torch.float32 and item['lq'].shape == (3, *HAZY_HW)
        assert 0 <= item['lq'].min() and item['lq'].max() <= 1
        gt = check_item(item, expected, fixture.lossy)
        if not fixture.lossy:
            np.testing.assert_array_equal(gt, centre(clear_pixels(expected.code, fixture.clear_hw), HAZY_HW))


def test_sots_indoor_clear_is_centre_cropped_to_hazy_size(tmp_path):
    fixture = make_sots_indoor(str(tmp_path))
    gt = to_uint8(PairedDehazeDataset(disk_opt(fixture))[0]['gt'])
    # red = 4*y, green = 4*x: the crop starts 2 rows and 3 columns into the 36x46 clear image.
    assert gt[0, 0, 2] == 4 * 2 and gt[0, 0, 1] == 4 * 3 and gt.shape[:2] == HAZY_HW


def _orientation(gt):
    """Which of the 8 flips/rotations was applied, read from the coordinate-coded clear pixels."""
    red, green = gt[..., 2].astype(int), gt[..., 1].astype(int)
    rows_follow_y = red[1, 0] != red[0, 0]
    dy = np.sign((red if rows_follow_y else green)[1, 0] - (red if rows_follow_y else green)[0, 0])
    dx = np.sign((green if rows_follow_y else red)[0, 1] - (green if rows_follow_y else red)[0, 0])
    return bool(rows_follow_y), int(dy), int(dx)


def test_training_crops_are_aligned_and_augmented_identically(its):
    ds = PairedDehazeDataset(disk_opt(its, phase='train', gt_size=16, use_hflip=True, use_rot=True,
                                      edge_decay=0.1))
    random.seed(0)
    seen = set()
    for step in range(160):
        index = step % len(ds)
        item = ds[index]
        assert item['lq'].shape == (3, 16, 16) and item['gt'].shape == (3, 16, 16)
        seen.add(_orientation(check_item(item, its.pairs[index])))
    assert len(seen) == 8  # every flip/rot90 combination occurs, always on both images


def test_no_augmentation_keeps_orientation(its):
    ds = PairedDehazeDataset(disk_opt(its, phase='train', gt_size=16, use_hflip=False, use_rot=False))
    for index in range(len(ds)):
        gt = check_item(ds[index], its.pairs[index])
        assert _orientation(gt) == (True, 1, 1)


def _official_start(size, crop, edge_decay):
    """The official loader's crop draw for one axis, written out as the reference."""
    if random.random() < crop / size * edge_decay:
        return 0 if random.randint(0, 1) == 0 else size - crop
    return random.randint(0, size - crop)


def test_edge_decay_draws_like_the_official_loader():
    for decay in (0.0, 0.1, 1.0):
        random.seed(3)
        ours = [edge_decay_start(40, 16, decay) for _ in range(500)]
        random.seed(3)
        assert ours == [_official_start(40, 16, decay) for _ in range(500)]
    random.seed(1)
    draws = [edge_decay_start(40, 16, 1.0) for _ in range(20000)]
    at_border = np.mean([d in (0, 24) for d in draws])
    # P(snap) = 16/40 = 0.4, plus the uniform draw hitting a border: 0.6 * 2/25.
    assert abs(at_border - (0.4 + 0.6 * 2 / 25)) < 0.015


def test_training_crop_positions_follow_edge_decay(its):
    ds = PairedDehazeDataset(disk_opt(its, phase='train', gt_size=16, edge_decay=1.0))
    random.seed(5)
    tops = [int(to_uint8(ds[0]['gt'])[0, 0, 2]) // 4 for _ in range(400)]
    assert set(tops) <= set(range(0, HAZY_HW[0] - 16 + 1))
    assert np.mean([t in (0, HAZY_HW[0] - 16) for t in tops]) > 0.4


def test_val_crop_size_takes_the_centre(its):
    ds = PairedDehazeDataset(disk_opt(its, val_crop_size=16))
    item = ds[0]
    gt = check_item(item, its.pairs[0])
    assert gt.shape[:2] == (16, 16)
    assert gt[0, 0, 2] == 4 * ((HAZY_HW[0] - 16) // 2) and gt[0, 0, 1] == 4 * ((HAZY_HW[1] - 16) // 2)


def test_grayscale_rgba_and_16_bit_sources_become_rgb(tmp_path):
    hazy_dir, clear_dir = make_mixed_formats(str(tmp_path))
    check_mixed_formats(PairedDehazeDataset({'dataroot_lq': hazy_dir, 'dataroot_gt': clear_dir,
                                             'io_backend': {'type': 'disk'}, 'phase': 'test'}))


def test_builds_from_basicsr_options_and_loads_batches(its):
    opt = {'name': 'ITS', 'type': 'PairedDehazeDataset', 'dataroot_lq': its.hazy_dir, 'dataroot_gt': its.clear_dir,
           'io_backend': {'type': 'disk'}, 'gt_size': 16, 'use_hflip': True, 'use_rot': True, 'edge_decay': 0.1,
           'use_shuffle': True, 'num_worker_per_gpu': 0, 'batch_size_per_gpu': 3, 'dataset_enlarge_ratio': 1,
           'prefetch_mode': None, 'phase': 'train', 'scale': 1}
    ds = build_dataset(opt)
    batch = next(iter(build_dataloader(ds, opt, num_gpu=0, dist=False, sampler=None, seed=0)))
    assert batch['lq'].shape == (3, 3, 16, 16) and len(batch['lq_path']) == 3


def test_train_phase_needs_gt_size(its):
    with pytest.raises(ValueError, match='gt_size'):
        PairedDehazeDataset(disk_opt(its, phase='train'))


# Bad input: each error names the file.

def test_unpaired_hazy_image_fails_at_creation_unless_skipped(tmp_path):
    fixture = make_its(str(tmp_path))
    write_image(os.path.join(fixture.hazy_dir, '9_1_0.5.png'), clear_pixels(1, HAZY_HW))
    with pytest.raises(PairingError, match=r'1 of 7 hazy images.*9_1_0\.5\.png'):
        PairedDehazeDataset(disk_opt(fixture))
    assert len(PairedDehazeDataset(disk_opt(fixture, skip_unpaired=True))) == 6


def test_truncated_image_is_named(tmp_path):
    fixture = make_its(str(tmp_path))
    path = os.path.join(fixture.hazy_dir, fixture.pairs[0].hazy)
    data = open(path, 'rb').read()
    open(path, 'wb').write(data[:len(data) // 2])
    with pytest.raises(ImageDecodeError, match=r'truncated.*1_1_0\.11179\.png'):
        PairedDehazeDataset(disk_opt(fixture))[0]


def test_image_smaller_than_gt_size_is_named(its):
    ds = PairedDehazeDataset(disk_opt(its, phase='train', gt_size=64))
    with pytest.raises(ValueError, match=r'1_1_0\.11179\.png is 32x40.*smaller than gt_size 64'):
        ds[0]


def test_mismatched_sizes_name_both_files(tmp_path):
    fixture = make_its(str(tmp_path))
    clear = os.path.join(fixture.clear_dir, '1.png')
    write_image(clear, clear_pixels(30, (HAZY_HW[0] + 4, HAZY_HW[1])))  # taller but not wider
    with pytest.raises(ValueError, match=r'hazy .*1_1_0\.11179\.png is 32x40.*clear .*1\.png is 36x40'):
        PairedDehazeDataset(disk_opt(fixture))[0]


def test_wrong_hazy_content_is_detected_by_the_fixture_check(its):
    """The fixture check itself must catch a wrong partner, or the tests above prove nothing."""
    item = PairedDehazeDataset(disk_opt(its))[0]
    with pytest.raises(AssertionError):
        check_item(item, ExpectedPair(its.pairs[0].hazy, its.pairs[0].clear, its.pairs[0].k + 1, 30))
    shifted = dict(item, lq=torch.roll(item['lq'], 1, dims=1))
    with pytest.raises(AssertionError):
        check_item(shifted, its.pairs[0])
    flipped = dict(item, lq=torch.flip(item['lq'], dims=[2]))
    with pytest.raises(AssertionError):
        check_item(flipped, its.pairs[0])
    assert (to_uint8(item['lq']) == hazy_from_clear(to_uint8(item['gt']), its.pairs[0].k)).all()
