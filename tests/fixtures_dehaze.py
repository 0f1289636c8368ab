"""Tiny dehazing sets in each public set's folder layout and file naming, made by the tests.

Every clear image encodes where each pixel is and which image it is: red = 4*y, green = 4*x,
blue = a code unique to the clear image. Every hazy image is a known function of its clear image
(``hazy_from_clear``), so a crop taken at different places in the two images, a flip applied to
one of them, or a wrong partner all break ``lq == hazy_from_clear(gt, k)``.
"""
import os
from collections import namedtuple

import cv2
import numpy as np
import torch

HAZY_HW = (32, 40)
# One expected pair: file names, the haze level k that hazy_from_clear takes, and the blue code of
# the clear image.
ExpectedPair = namedtuple('ExpectedPair', ['hazy', 'clear', 'k', 'code'])
FixtureSet = namedtuple('FixtureSet', ['dataset', 'hazy_dir', 'clear_dir', 'pairs', 'clear_hw', 'lossy'])


def clear_pixels(code, hw):
    """BGR uint8 clear image of size ``hw`` whose pixels spell out their own coordinates."""
    h, w = hw
    img = np.empty((h, w, 3), np.uint8)
    img[..., 2] = (4 * np.arange(h) % 256)[:, None]
    img[..., 1] = (4 * np.arange(w) % 256)[None, :]
    img[..., 0] = code
    return img


def hazy_from_clear(clear, k):
    """The hazy image of haze level k (0..3): brighter, flatter, still a one-to-one map of
    positions. Works on uint8 arrays in any channel order."""
    return (clear.astype(np.int32) // 2 + 100 + 8 * k).astype(np.uint8)


def centre(img, hw):
    top, left = (img.shape[0] - hw[0]) // 2, (img.shape[1] - hw[1]) // 2
    return img[top:top + hw[0], left:left + hw[1]]


def write_image(path, img):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    params = [cv2.IMWRITE_JPEG_QUALITY, 100, cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
              cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444] if path.endswith('.jpg') else []
    assert cv2.imwrite(path, img, params), path


def _build(root, dataset, hazy_sub, clear_sub, names, clear_hw=HAZY_HW, scene_of=None):
    """names: list of (hazy file name, clear file name, k). Each scene (by default each clear
    name) gets its own blue code; clear files of one scene are copies of one image."""
    hazy_dir, clear_dir = os.path.join(root, hazy_sub), os.path.join(root, clear_sub)
    scene_of = scene_of or (lambda clear_name: clear_name)
    codes, pairs = {}, []
    for hazy_name, clear_name, k in names:
        code = codes.setdefault(scene_of(clear_name), 30 * (len(codes) + 1))
        clear = clear_pixels(code, clear_hw)
        if not os.path.exists(os.path.join(clear_dir, clear_name)):
            write_image(os.path.join(clear_dir, clear_name), clear)
        write_image(os.path.join(hazy_dir, hazy_name), hazy_from_clear(centre(clear, HAZY_HW), k))
        pairs.append(ExpectedPair(hazy_name, clear_name, k, code))
    lossy = any(n.endswith('.jpg') for n, _, _ in names)
    return FixtureSet(dataset, hazy_dir, clear_dir, sorted(pairs), clear_hw, lossy)


def make_its(root):
    """RESIDE ITS: ITS/hazy/<id>_<k>_<beta>.png, ITS/clear/<id>.png; several hazy per clear."""
    names = [(f'{i}_{k}_0.{k}{i}179.png', f'{i}.png', k) for i in (1, 2, 3) for k in (1, 2)]
    return _build(root, 'its', 'ITS/hazy', 'ITS/clear', names)


def make_ots(root):
    """RESIDE OTS: JPEGs, hazy images split over haze/part1..; the clear folder is clear_images/."""
    names = [(f'{i:04d}_0.8_0.0{k}.jpg', f'{i:04d}.jpg', k) for i in (5, 12) for k in (1, 2)]
    fixture = _build(root, 'ots', 'OTS/haze/part1', 'OTS/clear/clear_images', names)
    # Move the second clear image's hazy images to part2, as the download spreads them.
    part2 = os.path.join(root, 'OTS/haze/part2')
    os.makedirs(part2)
    for name in os.listdir(fixture.hazy_dir):
        if name.startswith('0012_'):
            os.rename(os.path.join(fixture.hazy_dir, name), os.path.join(part2, name))
    return fixture._replace(hazy_dir=[fixture.hazy_dir, part2])


def make_sots_indoor(root):
    """SOTS indoor: hazy 1400_1.png smaller than clear 1400.png (the clear is centre-cropped)."""
    names = [(f'{i}_{k}.png', f'{i}.png', k) for i in (1400, 1401) for k in (1, 3)]
    return _build(root, 'sots-indoor', 'SOTS/indoor/hazy', 'SOTS/indoor/gt', names,
                  clear_hw=(HAZY_HW[0] + 4, HAZY_HW[1] + 6))


def make_sots_outdoor(root):
    """SOTS outdoor: hazy .jpg, clear .png."""
    names = [('0001_0.8_0.2.jpg', '0001.png', 0), ('0002_0.9_0.16.jpg', '0002.png', 1)]
    return _build(root, 'sots-outdoor', 'SOTS/outdoor/hazy', 'SOTS/outdoor/gt', names)


def make_haze4k(root):
    """Haze4K: train/haze/<id>_<A>_<beta>.png, train/gt/<id>.png."""
    names = [('1_0.89_1.56.png', '1.png', 0), ('2_0.93_0.8.png', '2.png', 2)]
    return _build(root, 'haze4k', 'Haze4K/train/haze', 'Haze4K/train/gt', names)


def make_rshaze(root):
    """RS-Haze: the same file name in hazy/ and GT/."""
    names = [(n, n, 1) for n in ('0001_0.5.png', '0002_0.25.png')]
    return _build(root, 'rshaze', 'RSHaze/train/hazy', 'RSHaze/train/GT', names)


def make_official_rearranged(root):
    """The official gUNet layout: <set>/IN and <set>/GT with identical names, GT holding one copy
    of the clear image per hazy image (2 scenes here, 4 GT files)."""
    names = [(f'{i}_{k}_0.{k}5.png', f'{i}_{k}_0.{k}5.png', k) for i in (1, 2) for k in (0, 1)]
    return _build(root, 'paired', 'data/ITS/IN', 'data/ITS/GT', names, scene_of=lambda name: name.split('_')[0])


def make_mixed_formats(root):
    """Same-name pairs in other pixel formats: gray hazy, RGBA clear, 16-bit clear (8x8)."""
    hazy_dir, clear_dir = os.path.join(root, 'IN'), os.path.join(root, 'GT')
    clear = clear_pixels(60, (8, 8))
    write_image(os.path.join(clear_dir, 'gray.png'), clear)
    write_image(os.path.join(hazy_dir, 'gray.png'), cv2.cvtColor(clear, cv2.COLOR_BGR2GRAY))
    write_image(os.path.join(clear_dir, 'rgba.png'), cv2.cvtColor(clear, cv2.COLOR_BGR2BGRA))
    write_image(os.path.join(hazy_dir, 'rgba.png'), clear)
    deep = np.full((8, 8, 3), 65535, np.uint16)
    deep[..., 0] = 32768
    write_image(os.path.join(clear_dir, 'deep.png'), deep)
    write_image(os.path.join(hazy_dir, 'deep.png'), np.full((8, 8, 3), 255, np.uint8))
    return hazy_dir, clear_dir


def check_mixed_formats(ds):
    """Items of make_mixed_formats' set: all RGB float, 16-bit scaled by 65535."""
    items = {os.path.basename(item['lq_path']): item for item in ds}
    gray = items['gray.png']['lq']
    assert gray.shape == (3, 8, 8) and torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    assert torch.equal(items['rgba.png']['gt'], items['rgba.png']['lq'])
    deep_gt = items['deep.png']['gt']
    assert torch.allclose(deep_gt[0], torch.tensor(1.0)) and torch.allclose(deep_gt[2], torch.tensor(32768 / 65535))
    assert torch.equal(items['deep.png']['lq'], torch.ones(3, 8, 8))


MAKERS = {
    'its': make_its, 'ots': make_ots, 'sots-indoor': make_sots_indoor, 'sots-outdoor': make_sots_outdoor,
    'haze4k': make_haze4k, 'rshaze': make_rshaze, 'paired': make_official_rearranged,
}


def to_uint8(tensor):
    """CHW float [0,1] RGB tensor -> HWC uint8 BGR array (the order the fixtures are written in)."""
    arr = (tensor.numpy().transpose(1, 2, 0) * 255.0).round().astype(np.uint8)
    return arr[..., ::-1]


def check_item(item, expected, lossy=False, same_clear_content=False):
    """Assert that a dataset item is an aligned pair of ``expected``; returns gt as uint8 BGR.
    ``same_clear_content``: gt may come from any copy of the expected clear image (an LMDB
    stores copies once)."""
    lq, gt = to_uint8(item['lq']), to_uint8(item['gt'])
    assert lq.shape == gt.shape
    want = hazy_from_clear(gt, expected.k)
    if lossy:
        # JPEG: small differences everywhere; a shifted or flipped crop moves the red or green
        # channel by >= 2 levels per pixel (4 per pixel step in the clear image, halved in the
        # hazy one).
        diff = np.abs(lq.astype(int) - want.astype(int)).reshape(-1, 3).mean(0)
        assert (diff < 1.2).all(), diff
        assert abs(int(np.median(gt[..., 0])) - expected.code) <= 2
    else:
        np.testing.assert_array_equal(lq, want)
        assert (gt[..., 0] == expected.code).all()
    assert os.path.basename(item['lq_path']) == expected.hazy
    if not same_clear_content:
        assert os.path.basename(item['gt_path']) == expected.clear
    return gt
