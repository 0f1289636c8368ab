"""Data for the gallery tests (tests/test_gallery.py, tests/browser/): photo-like hazy | dehazed |
clear triples made from scikit-image's photographs, and a test run of a random tiny gUNet
through GUNetModel's own validation, which writes a results folder as gunet_arch/test.py does."""
import os

import cv2
import numpy as np
from conftest import TINY_NET

from gunet_arch.tools.gallery import GalleryEntry


def _photos():
    import skimage.data as data

    return [cv2.cvtColor(p, cv2.COLOR_RGB2BGR) for p in
            (data.astronaut(), data.coffee(), data.chelsea(), data.rocket(), data.immunohistochemistry())]


def photo_triples(count, size=(320, 240), seed=0):
    """``count`` (hazy, dehazed, clear) uint8 BGR images of ``size`` (w, h), each a different
    crop of a photograph with the detail of a 620x460 SOTS image shrunk to ``size`` (what a
    thumbnail of one holds): hazed as I = J t + A (1 - t), 'dehazed' = clear plus a residual
    error. Integer arithmetic in OpenCV, so 500 of them take a fraction of a second."""
    rng = np.random.default_rng(seed)
    w, h = size
    scale = max(w / 620, h / 460)
    bases = [cv2.resize(p, (round(700 * scale), round(520 * scale)), interpolation=cv2.INTER_AREA) for p in _photos()]
    noise = rng.normal(0, 3, (h + 40, w + 40, 3)).round().astype(np.int16)
    for i in range(count):
        base = bases[i % len(bases)]
        y, x = rng.integers(0, base.shape[0] - h + 1), rng.integers(0, base.shape[1] - w + 1)
        clear = base[y:y + h, x:x + w]
        if rng.random() < 0.5:
            clear = clear[:, ::-1]
        clear = np.ascontiguousarray(clear)
        t, airlight = rng.uniform(0.4, 0.9), rng.uniform(180, 240)
        hazy = cv2.convertScaleAbs(clear, alpha=t, beta=airlight * (1 - t))
        ny, nx = rng.integers(0, 41), rng.integers(0, 41)
        residual = noise[ny:ny + h, nx:nx + w] + np.int16(round((1 - t) * 20))
        dehazed = np.clip(clear.astype(np.int16) + residual, 0, 255).astype(np.uint8)
        yield hazy, dehazed, clear


def write_photo_set(root, count, size=(320, 240), seed=0, ext='.jpg'):
    """``count`` gallery entries whose images are files under ``root`` (JPEG by default: quick
    to write and read), with made-up PSNR/SSIM; returns the entries."""
    entries = []
    folders = {role: os.path.join(root, role) for role in ('hazy', 'dehazed', 'clear')}
    for folder in folders.values():
        os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed + 1)
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if ext == '.jpg' else []
    for i, images in enumerate(photo_triples(count, size, seed)):
        name = f'{i + 1}_{(i % 10) + 1}'
        paths = {}
        for role, img in zip(folders, images):
            paths[role] = os.path.join(folders[role], f'{name}{ext}')
            cv2.imwrite(paths[role], img, params)
        entries.append(GalleryEntry(name, paths['hazy'], paths['dehazed'], paths['clear'],
                                    {'psnr': float(rng.uniform(15, 40)), 'ssim': float(rng.uniform(0.7, 1.0))}))
    return entries


def tiny_test_run(results_root, tiny_val, name='tiny_gallery', save_img=True, extra_val=None):
    """GUNetModel's validation at test time (is_train false, as gunet_arch/test.py runs it) with a
    random tiny gUNet over the tiny validation set: results_root gets visualization/, the
    metrics CSV, gallery/ and index.html. Returns the model."""
    from basicsr.data import build_dataloader, build_dataset
    from basicsr.models import build_model

    results_root = str(results_root)
    opt = {
        'name': name, 'model_type': 'GUNetModel', 'num_gpu': 0, 'is_train': False, 'dist': False,
        'rank': 0, 'world_size': 1, 'network_g': dict(TINY_NET),
        'path': {'pretrain_network_g': None, 'strict_load_g': True, 'results_root': results_root,
                 'log': results_root, 'visualization': os.path.join(results_root, 'visualization')},
        'val': {'save_img': save_img, 'suffix': None, 'metrics': {
            'psnr': {'type': 'calculate_psnr_dehaze', 'crop_border': 0},
            'ssim': {'type': 'calculate_ssim_dehaze', 'crop_border': 0}}, **(extra_val or {})},
    }
    ds_opt = {'name': 'tinyval', 'type': 'PairedDehazeDataset', 'phase': 'test', 'dataroot_lq': tiny_val[0],
              'dataroot_gt': tiny_val[1], 'io_backend': {'type': 'disk'}}
    loader = build_dataloader(build_dataset(ds_opt), ds_opt, num_gpu=0, dist=False)
    model = build_model(opt)
    model.validation(loader, current_iter=name, tb_logger=None, save_img=save_img)
    return model
