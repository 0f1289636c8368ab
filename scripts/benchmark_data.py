"""Loader speed of PairedDehazeDataset: image folders on disk vs. the LMDBs of scripts/prepare_lmdb.py.

Measures training samples per second of one loader process (random 256x256 crops with edge
decay, flips and rotations, the way a DataLoader worker produces them) and the size on disk of
each storage, then prints a markdown table. LMDB rows are measured twice, with the checksum check of
every record read (what training does) and without it, and the check's own time is measured
directly too (checksum of the records of the same samples), as the share of a sample's loading time.

    python scripts/benchmark_data.py                       # synthetic ITS-like PNGs
    python scripts/benchmark_data.py --format jpg --height 413 --width 550   # OTS-like JPEGs
    python scripts/benchmark_data.py --dataset its --hazy datasets/ITS/hazy --clear datasets/ITS/clear \
        --limit 500
"""
import argparse
import copy
import os
import random
import shutil
import tempfile
import time

import cv2
import numpy as np
import torch

from gunet_arch.data import DATASET_PRESETS, PairedDehazeDataset, prepare_lmdb
from gunet_arch.data.lmdb_store import LmdbPair, read_value, record_checksum
from gunet_arch.data.pairing import pair_folders

# How the downloads are written: PNG at zlib's default level (libpng, PIL, MATLAB), JPEG at the
# quality OTS-like sets use.
WRITE_PARAMS = {'png': [cv2.IMWRITE_PNG_COMPRESSION, 6], 'jpg': [cv2.IMWRITE_JPEG_QUALITY, 95]}


def synthesize(root, clear_count, hazy_per_clear, hw, ext='png', seed=0):
    """Photo-like images (smooth structure plus fine texture, so they compress about as much as
    real photographs) named like ITS / OTS: <id>.<ext> clear, <id>_<k>_<beta>.<ext> hazy."""
    rng = np.random.default_rng(seed)
    hazy_dir, clear_dir = os.path.join(root, 'hazy'), os.path.join(root, 'clear')
    os.makedirs(hazy_dir)
    os.makedirs(clear_dir)
    h, w = hw
    for i in range(1, clear_count + 1):
        coarse = rng.random((h // 32 + 2, w // 32 + 2, 3)).astype(np.float32)
        smooth = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
        texture = rng.normal(0, 0.03, (h, w, 3)).astype(np.float32)
        clear = np.clip(smooth + texture, 0, 1)
        cv2.imwrite(os.path.join(clear_dir, f'{i}.{ext}'), (clear * 255).round().astype(np.uint8), WRITE_PARAMS[ext])
        for k in range(1, hazy_per_clear + 1):
            t = 0.4 + 0.5 * rng.random()
            hazy = clear * t + 0.9 * (1 - t)
            cv2.imwrite(os.path.join(hazy_dir, f'{i}_{k}_{t:.5f}.{ext}'), (hazy * 255).round().astype(np.uint8),
                        WRITE_PARAMS[ext])
    return hazy_dir, clear_dir


def limited_copy(hazy_dir, clear_dir, dataset, limit, root):
    """Symlink the first ``limit`` pairs of a real set, so a benchmark need not read all of it."""
    pairs, _ = pair_folders(hazy_dir, clear_dir, DATASET_PRESETS[dataset].pairing)
    out_hazy, out_clear = os.path.join(root, 'hazy'), os.path.join(root, 'clear')
    os.makedirs(out_hazy)
    os.makedirs(out_clear)
    for pair in pairs[:limit]:
        for src, folder in ((pair.hazy_path, out_hazy), (pair.clear_path, out_clear)):
            dst = os.path.join(folder, os.path.basename(src))
            if not os.path.exists(dst):
                os.symlink(os.path.abspath(src), dst)
    return out_hazy, out_clear


def disk_bytes(paths):
    """Bytes the files take on disk (following symlinks)."""
    return sum(os.stat(p).st_blocks * 512 for p in paths)


def folder_files(*folders):
    return [os.path.join(f, n) for f in folders for n in os.listdir(f)]


def sample_order(dataset, samples, seed):
    random.seed(seed)
    return [random.randrange(len(dataset)) for _ in range(samples)]


def samples_per_second(dataset, samples, seed):
    order = sample_order(dataset, samples, seed)
    start = time.perf_counter()
    for index in order:
        dataset[index]
    return samples / (time.perf_counter() - start)


def unverified(dataset):
    """The same LMDB dataset without the checksum check (entries without their crc)."""
    twin = copy.copy(dataset)
    twin.lmdb_pairs = [LmdbPair(p.hazy._replace(crc=None), p.clear._replace(crc=None)) for p in dataset.lmdb_pairs]
    return twin


def checksum_seconds(dataset, samples, rounds):
    """Best time, per sample, of the checksum checks that ``samples`` random samples make."""
    best = float('inf')
    for r in range(rounds):
        values = []
        for index in sample_order(dataset, samples, seed=r):
            pair = dataset.lmdb_pairs[index]
            values += [read_value(dataset.lq_root, pair.hazy.key), read_value(dataset.gt_root, pair.clear.key)]
        start = time.perf_counter()
        for value in values:
            record_checksum(value)
        best = min(best, (time.perf_counter() - start) / samples)
    return best


def measure(datasets, samples, rounds):
    """Best rate of each dataset over ``rounds`` interleaved passes: on a shared machine the other
    load only ever slows a pass down, and interleaving exposes every storage to it alike."""
    for dataset in datasets:  # warm the page cache and the lazily opened handles
        for index in range(len(dataset)):
            dataset[index]
    best = [0.0] * len(datasets)
    for r in range(rounds):
        for i, dataset in enumerate(datasets):
            best[i] = max(best[i], samples_per_second(dataset, samples, seed=r))
    return best


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--hazy', help='real hazy folder (default: synthesize images)')
    parser.add_argument('--clear', help='real clear folder')
    parser.add_argument('--dataset', default='paired', help='prepare_lmdb --dataset of the real folders')
    parser.add_argument('--limit', type=int, default=200, help='pairs of a real set to use')
    parser.add_argument('--clear-images', type=int, default=10, help='synthetic clear images')
    parser.add_argument('--hazy-per-clear', type=int, default=10, help='synthetic hazy images per clear one')
    parser.add_argument('--height', type=int, default=460, help='synthetic image height (ITS: 460)')
    parser.add_argument('--width', type=int, default=620, help='synthetic image width (ITS: 620)')
    parser.add_argument('--format', choices=sorted(WRITE_PARAMS), default='png',
                        help='file format of the synthetic downloads (png: like ITS, jpg: like OTS)')
    parser.add_argument('--gt-size', type=int, default=256)
    parser.add_argument('--samples', type=int, default=300, help='samples per timed pass')
    parser.add_argument('--repeats', type=int, default=5, help='timed passes per storage; the best is reported')
    parser.add_argument('--workdir', help='where to put the copies and LMDBs (default: a temporary folder)')
    args = parser.parse_args(argv)

    # One loader process on one core, as a DataLoader worker runs.
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    workdir = args.workdir or tempfile.mkdtemp(prefix='gunet_benchmark_data_')
    os.makedirs(workdir, exist_ok=True)
    try:
        if args.hazy:
            hazy_dir, clear_dir = limited_copy(args.hazy, args.clear, args.dataset, args.limit,
                                               os.path.join(workdir, 'src'))
            source = f'{args.dataset}, first {args.limit} pairs of {args.hazy}'
        else:
            hazy_dir, clear_dir = synthesize(os.path.join(workdir, 'src'), args.clear_images, args.hazy_per_clear,
                                             (args.height, args.width), args.format)
            source = (f'synthetic {args.height}x{args.width} {args.format.upper()}s, {args.clear_images} clear x '
                      f'{args.hazy_per_clear} hazy')
        storages = [('disk folders', {'type': 'disk'}, hazy_dir, clear_dir,
                     disk_bytes(folder_files(hazy_dir, clear_dir)))]
        has_jpeg = any(f.lower().endswith(('.jpg', '.jpeg')) for f in folder_files(hazy_dir, clear_dir))
        # Without JPEG files 'png' writes exactly what 'auto' does.
        for storage in ('auto', 'png', 'raw') if has_jpeg else ('auto', 'raw'):
            out = os.path.join(workdir, f'lmdb_{storage}')
            summary = prepare_lmdb(hazy_dir, clear_dir, out, dataset=args.dataset if args.hazy else 'its',
                                   storage=storage, overwrite=True, progress=False, log=lambda *a: None)
            size = disk_bytes(folder_files(summary['hazy_db'], summary['clear_db']))
            storages.append((f'LMDB, --storage {storage}', {'type': 'lmdb'}, summary['hazy_db'],
                             summary['clear_db'], size))

        datasets = [PairedDehazeDataset({
            'dataroot_lq': lq, 'dataroot_gt': gt, 'io_backend': backend, 'phase': 'train',
            'gt_size': args.gt_size, 'use_hflip': True, 'use_rot': True, 'edge_decay': 0.1})
            for _, backend, lq, gt, _ in storages]
        twins = [unverified(ds) for ds in datasets[1:]]
        rates = measure(datasets + twins, args.samples, args.repeats)
        rates, twin_rates = rates[:len(datasets)], [None] + rates[len(datasets):]
        crc_times = [None] + [checksum_seconds(ds, args.samples, args.repeats) for ds in datasets[1:]]
        rows = [(label, size, rate, len(ds)) for (label, _, _, _, size), rate, ds in zip(storages, rates, datasets)]

        base = rows[0][2]
        print(f'\nTraining samples ({args.gt_size}x{args.gt_size} crop, edge decay, flip, rot90) per second '
              f'of one loader process; {source}; {rows[0][3]} pairs. LMDB reads check the checksum of every '
              'record; "unchecked" is the same without that check, and "check" its own time per sample '
              '(both records), as a share of the checked loading time.\n')
        print('| storage | size on disk | samples/s | vs. disk | unchecked samples/s | check |')
        print('|---|---|---|---|---|---|')
        for (label, size, rate, _), twin_rate, crc in zip(rows, twin_rates, crc_times):
            extra = ('- | -' if twin_rate is None else
                     f'{twin_rate:.0f} | {crc * 1e6:.0f} µs, {crc * rate:.1%}')
            print(f'| {label} | {size / 2**20:.1f} MiB | {rate:.0f} | {rate / base:.2f}x | {extra} |')
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == '__main__':
    main()
