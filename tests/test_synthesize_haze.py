"""scripts/synthesize_haze.py: the scattering model, depth, photo selection, split and naming."""
import os
import re

import cv2
import numpy as np
import pytest
from conftest import load_script

from gunet_arch.tools import haze_synthesis as hs

ITS_HAZY = re.compile(r'^(\d+)_(\d+)_(\d\.\d\d)\.png$')


def _photo(h, w, seed):
    """Colourful, textured, photo-like: passes the filter that package data folders need."""
    rng = np.random.default_rng(seed)
    small = rng.uniform(0, 1, (h // 16, w // 16, 3)).astype(np.float32)
    img = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    img += rng.normal(0, 0.08, img.shape).astype(np.float32)
    return np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)


@pytest.fixture
def photo_dir(tmp_path):
    folder = tmp_path / 'photos'
    folder.mkdir()
    for i, name in enumerate(['beach.png', 'city_left.png', 'city_right.png', 'forest.jpg', 'harbour.png']):
        cv2.imwrite(str(folder / name), _photo(96, 128 + 16 * i, seed=i))
    cv2.imwrite(str(folder / 'gray.png'), _photo(96, 128, 9)[..., 0])
    cv2.imwrite(str(folder / 'tiny.png'), _photo(32, 32, 10))
    mask = np.zeros((96, 128, 3), np.uint8)
    mask[20:60, 30:90] = (0, 0, 255)
    cv2.imwrite(str(folder / 'mask.png'), mask)
    disparity = np.full((96, 128), 20.0, np.float32)
    disparity[48:] = 60.0  # the lower half is three times nearer
    disparity[0, :5] = np.inf  # unmatched pixels, as Middlebury maps have
    np.savez(folder / 'city_disp.npz', disparity)
    return str(folder)


def test_add_haze_then_recover_transmission_exactly():
    rng = np.random.default_rng(0)
    clear = rng.uniform(0, 0.6, (20, 30, 3))
    depth = rng.uniform(0.1, 1.0, (20, 30))
    hazy = hs.add_haze(clear, depth, 0.85, 1.3)
    np.testing.assert_allclose(hs.recover_transmission(hazy, clear, 0.85), np.exp(-1.3 * depth), rtol=1e-9)


def test_written_pairs_obey_the_scattering_model(tmp_path, photo_dir):
    rows = hs.synthesize_dataset(str(tmp_path / 'out'), [photo_dir], count=3, seed=1, size=64, min_side=64,
                                 heldout_scenes=1, log=lambda *_: None)
    assert len(rows) == 5 * 3
    for row in rows:
        assert hs.A_RANGE[0] <= row['A'] <= hs.A_RANGE[1] and hs.BETA_RANGE[0] <= row['beta'] <= hs.BETA_RANGE[1]
        m = ITS_HAZY.match(row['hazy'])
        assert m and float(m.group(3)) == row['beta'] and row['clear'] == f'{m.group(1)}.png'
        split_dir = tmp_path / 'out' / row['split']
        hazy = cv2.imread(str(split_dir / 'hazy' / row['hazy'])).astype(np.float64) / 255
        clear = cv2.imread(str(split_dir / 'clear' / row['clear'])).astype(np.float64) / 255
        t = hs.recover_transmission(hazy, clear, row['A'], min_contrast=0.2)
        t = t[np.isfinite(t)]
        # Transmission is exp(-beta d) with d in [0, 1]; 8-bit rounding blurs it only slightly.
        assert t.size > 100
        assert np.percentile(t, 1) > np.exp(-row['beta']) - 0.05 and np.percentile(t, 99) < 1.05
        # and exactly the transmission of the depth map stored with it
        depth = cv2.imread(str(split_dir / 'depth' / row['hazy']), cv2.IMREAD_UNCHANGED) / 65535
        t_map = hs.recover_transmission(hazy, clear, row['A'], min_contrast=0.2)
        assert np.nanmedian(np.abs(t_map - hs.transmission(depth, row['beta']))) < 0.01


def test_real_depth_from_disparity_is_used(tmp_path, photo_dir):
    rows = hs.synthesize_dataset(str(tmp_path / 'out'), [photo_dir], count=1, seed=0, size=0, min_side=64,
                                 heldout_scenes=0, log=lambda *_: None)
    by_source = {r['source']: r for r in rows}
    assert by_source['city_left.png']['depth'] == 'real'
    assert by_source['city_right.png']['depth'] == 'prior'  # the disparity belongs to the left view
    row = by_source['city_left.png']
    hazy = cv2.imread(str(tmp_path / 'out' / 'train' / 'hazy' / row['hazy'])).astype(np.float64) / 255
    clear = cv2.imread(str(tmp_path / 'out' / 'train' / 'clear' / row['clear'])).astype(np.float64) / 255
    t = hs.recover_transmission(hazy, clear, row['A'], min_contrast=0.2)
    far, near = np.nanmedian(t[8:40]), np.nanmedian(t[56:])
    # depth = 1 (far, disparity 20) and 1/3 (near, disparity 60) after normalisation
    assert far == pytest.approx(np.exp(-row['beta']), abs=0.03)
    assert near == pytest.approx(np.exp(-row['beta'] / 3), abs=0.03)


def test_depth_from_disparity_fills_holes_and_normalises():
    disparity = np.array([[10.0, 20.0, np.inf], [40.0, 0.0, 20.0]] * 4, np.float32)
    depth = hs.depth_from_disparity(disparity)
    assert np.isfinite(depth).all() and depth.max() <= 1.0 and depth.min() > 0
    assert depth[0, 0] == pytest.approx(1.0) and depth[1, 0] == pytest.approx(0.25)


def test_depth_prior_is_plausible_and_varies_between_versions():
    img = np.random.default_rng(0).uniform(0, 1, (60, 40, 3)).astype(np.float32)
    depth = hs.depth_prior(img)
    assert depth.min() == pytest.approx(hs.NEAREST_DEPTH) and depth.max() == pytest.approx(1.0)
    assert depth[0].mean() > depth[-1].mean()  # the top of the frame is farther
    rng = np.random.default_rng(1)
    a, b = hs.depth_prior(img, rng), hs.depth_prior(img, rng)
    for d in (a, b):
        assert 0.1 <= d.min() <= 0.4 and 0.5 <= d.max() <= 1.0 and d[:10].mean() > d[-10:].mean()
    assert np.abs(a - b).mean() > 0.01


def test_only_colour_photographs_are_used(photo_dir):
    skipped = []
    found = hs.find_photographs([photo_dir], min_side=64, log=skipped.append)
    assert sorted(map(os.path.basename, found)) == ['beach.png', 'city_left.png', 'city_right.png', 'forest.jpg',
                                                    'harbour.png']
    reasons = dict(line.split(': ', 1) for line in skipped)
    assert reasons['skipped, grayscale'] == 'gray.png'
    assert reasons['skipped, too small (< 64 px)'] == 'tiny.png'
    assert 'mask.png' in ' '.join(skipped)


def test_heldout_scenes_are_never_trained_on(tmp_path, photo_dir):
    rows = hs.synthesize_dataset(str(tmp_path / 'out'), [photo_dir], count=2, seed=3, size=64, min_side=64,
                                 heldout_scenes=2, log=lambda *_: None)
    train = {r['source'] for r in rows if r['split'] == 'train'}
    held = {r['source'] for r in rows if r['split'] == 'heldout'}
    assert train and held and not train & held
    assert {hs.scene_of(s) for s in train}.isdisjoint({hs.scene_of(s) for s in held})
    # stereo views stay together
    assert ('city_left.png' in held) == ('city_right.png' in held)
    # clear ids are unique across the two splits
    train_ids = set(os.listdir(tmp_path / 'out' / 'train' / 'clear'))
    held_ids = set(os.listdir(tmp_path / 'out' / 'heldout' / 'clear'))
    assert not train_ids & held_ids


def test_same_seed_same_set_and_no_silent_merge(tmp_path, photo_dir):
    kwargs = dict(count=2, seed=5, size=64, min_side=64, heldout_scenes=1, log=lambda *_: None)
    a = hs.synthesize_dataset(str(tmp_path / 'a'), [photo_dir], **kwargs)
    b = hs.synthesize_dataset(str(tmp_path / 'b'), [photo_dir], **kwargs)
    assert a == b
    with pytest.raises(FileExistsError):
        hs.synthesize_dataset(str(tmp_path / 'a'), [photo_dir], **kwargs)
    assert hs.synthesize_dataset(str(tmp_path / 'a'), [photo_dir], overwrite=True, **kwargs) == a


def test_package_photographs_are_found():
    """The default input: scikit-image's colour photographs, including the motorcycle with its
    real disparity, and none of its gray or synthetic images. scikit-image comes with the demo
    extra, which `make test` installs: missing, this is an error, not a skip."""
    import skimage  # noqa: F401
    folders = hs.default_photo_dirs()
    found = {os.path.basename(p) for p in hs.find_photographs(folders, log=lambda *_: None)}
    assert {'astronaut.png', 'chelsea.png', 'coffee.png', 'motorcycle_left.png'} <= found
    assert not found & {'camera.png', 'horse.png', 'logo.png', 'color.png', 'chessboard_RGB.png', 'phantom.png'}
    left = next(p for p in hs.find_photographs(folders, log=lambda *_: None) if p.endswith('motorcycle_left.png'))
    assert hs.find_depth_file(left)[0] == 'disparity'


def test_command_line(tmp_path, photo_dir, capsys):
    """scripts/synthesize_haze.py's main, in-process (`make demo`, run by test_demo_pipeline.py,
    starts it as a user does)."""
    args = ['--input', photo_dir, '--output', str(tmp_path / 'out'), '--count', '2', '--size', '64',
            '--min-side', '64', '--heldout', '1']
    script = load_script('synthesize_haze')
    assert script.main(args) == 0
    out = capsys.readouterr().out
    assert 'heldout: 2 hazy images' in out or 'heldout: 4 hazy images' in out
    assert (tmp_path / 'out' / hs.PARAMS_FILE).is_file()
    assert script.main(args) == 1
    assert 'already exists' in capsys.readouterr().err
