#!/usr/bin/env python
"""Peak memory of scripts/inference.py: the measurements behind its memory model and its limits.

    python scripts/benchmark_inference_memory.py network [--variants t s] [--sizes 256 512 1024]
    python scripts/benchmark_inference_memory.py model               # whole images and tiles vs MemoryModel
    python scripts/benchmark_inference_memory.py photo --megapixels 12 --max-memory 1G
    python scripts/benchmark_inference_memory.py batch --count 500   # a long run does not grow

Every measurement runs in a fresh process; peak resident memory is the kernel's high-water mark
of that process (VmHWM, read as it exits, or after a reset through /proc/self/clear_refs), so it
counts everything the process touched: PyTorch, oneDNN, OpenCV, Python. Linux only. Weights are a random gUNet of the
variant asked for: memory and time do not depend on the weights' values.

``network``: the deployed network's forward alone, bytes per padded input pixel.
``model``: whole runs on photos of several sizes, untiled and tiled, against MemoryModel.estimate.
``photo``: one large photo through scripts/inference.py (time, peak, the tiling it chose).
``batch``: COUNT photos of mixed sizes, a few of them broken, in one run, against the largest
photo alone and against the first fifth of the run: a run that grows would show.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time

import cv2
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, 'scripts', 'inference.py')
GIB, MIB = 2**30, 2**20


# Runs scripts/inference.py and, as the process ends, writes its peak resident memory (VmHWM).
# Not ru_maxrss: a child's ru_maxrss starts from its parent's resident size at fork (Linux keeps
# the high-water mark across exec), so a child of a process that holds PyTorch would be charged
# for it.
_LAUNCH = textwrap.dedent('''
    import atexit, os, runpy, sys
    def report():
        with open('/proc/self/status') as f:
            peak = next(int(line.split()[1]) * 1024 for line in f if line.startswith('VmHWM:'))
        with open(os.environ['INFERENCE_PEAK_FILE'], 'w') as f:
            f.write(str(peak))
    atexit.register(report)
    sys.argv = sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name='__main__')
''')


def run_inference(args, env=None):
    """scripts/inference.py with ``args`` in a fresh process: ``(exit status, peak resident
    bytes, seconds, stderr)``; the peak is None when the process did not end by itself."""
    start = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        peak_file = os.path.join(tmp, 'peak')
        env = dict(os.environ if env is None else env, INFERENCE_PEAK_FILE=peak_file)
        proc = subprocess.run([sys.executable, '-c', _LAUNCH, SCRIPT, *map(str, args)], env=env, cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        peak = int(open(peak_file).read()) if os.path.exists(peak_file) else None
    return proc.returncode, peak, time.monotonic() - start, proc.stderr.decode('utf-8', 'replace')


def write_weights(path, variant='t', seed=0):
    import torch

    import gunet_arch  # noqa: F401
    from gunet_arch.archs import GUNet

    torch.manual_seed(seed)
    torch.save({'params': GUNet(variant).state_dict()}, path)
    return path


def write_photo(path, height, width, seed=0, quality=95, rows=1024):
    """A photo-like image (smooth structure, fine texture), made and written a band of rows at a
    time so that a 100-megapixel one does not need gigabytes here. JPEG or PNG by extension."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((height // 64 + 2, width // 64 + 2, 3)).astype(np.float32)
    img = np.empty((height, width, 3), np.uint8)
    for top in range(0, height, rows):
        n = min(rows, height - top)
        # The coarse grid, resized band by band (cv2's linear resize of a sub-grid keeps the seams away).
        y = (np.arange(top, top + n) + 0.5) * (coarse.shape[0] - 1) / height
        x = (np.arange(width) + 0.5) * (coarse.shape[1] - 1) / width
        band = cv2.remap(coarse, np.broadcast_to(x[None, :], (n, width)).astype(np.float32),
                         np.broadcast_to(y[:, None], (n, width)).astype(np.float32), cv2.INTER_LINEAR)
        band += rng.normal(0, 0.03, band.shape).astype(np.float32)
        img[top:top + n] = np.clip(band * 255 + 0.5, 0, 255).astype(np.uint8)
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if path.lower().endswith(('.jpg', '.jpeg')) else []
    if not cv2.imwrite(path, img, params):
        raise OSError(f'cannot write {path}')
    return path


def inference_args(src, out, weights, *extra):
    return ['--input', src, '--output', out, '--weights', weights, '--device', 'cpu', *map(str, extra)]


# -- network: the forward alone -------------------------------------------------------------------
_FORWARD = textwrap.dedent('''
    import json, sys, time
    import torch
    import gunet_arch
    from gunet_arch.archs import GUNet
    variant, h, w = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    def status(key):
        with open('/proc/self/status') as f:
            return next(int(l.split()[1]) * 1024 for l in f if l.startswith(key))
    torch.manual_seed(0)
    net = GUNet(variant).eval()
    net.deploy()
    with torch.no_grad():
        net(torch.rand(1, 3, 32, 32))
    x = torch.rand(1, 3, h, w)
    before = status('VmRSS:')
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')  # resets VmHWM, the peak, to the current resident size
    start = time.monotonic()
    with torch.no_grad():
        y = net(x).clamp_(0, 1)
    seconds = time.monotonic() - start
    ph, pw = h + max(-h % net.pad_multiple, net.min_size - h), w + max(-w % net.pad_multiple, net.min_size - w)
    print(json.dumps({'peak': status('VmHWM:') - before, 'padded_pixels': ph * pw, 'baseline': before,
                      'seconds': seconds}))
''')


def measure_network(variants, sizes):
    rows = []
    for variant in variants:
        for size in sizes:
            proc = subprocess.run([sys.executable, '-c', _FORWARD, variant, str(size), str(size)], cwd=ROOT,
                                  capture_output=True, text=True, check=True)
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            rows.append((variant, size, r['peak'] / r['padded_pixels'], r['peak'], r['baseline'], r['seconds']))
            print(f'| gUNet-{variant.upper()} | {size}x{size} | {rows[-1][2]:.0f} | {r["peak"] / MIB:.0f} | '
                  f'{r["baseline"] / MIB:.0f} | {r["seconds"]:.2f} |', flush=True)
    return rows


# -- model: whole runs against the estimate -------------------------------------------------------
_RUN = textwrap.dedent('''
    import json, os, sys
    sys.path.insert(0, os.path.join(sys.argv[1], 'scripts'))
    import torch
    from gunet_arch.tools.inference import MemoryBudget, dehaze_files, load_dehazer
    src, out, weights, tile = sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
    def status(key):
        with open('/proc/self/status') as f:
            return next(int(l.split()[1]) * 1024 for l in f if l.startswith(key))
    net, device, dtype = load_dehazer(weights, device='cpu')
    budget = MemoryBudget.create(net, device, dtype, 0)
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')
    report = dehaze_files([(src, out)], net, device, dtype, tile, 32, progress=False, budget=budget)
    assert report.written, report.failed
    print(json.dumps({'peak': status('VmHWM:') - budget.baseline, 'baseline': budget.baseline}))
''')


def measure_model(cases, weights, folder):
    """Peak over the baseline of dehazing one photo, measured and estimated, for each
    ``(height, width, tile, extension)``."""
    import torch

    from gunet_arch.tools.image_io import read_image
    from gunet_arch.tools.inference import MemoryModel

    class _Net:  # what MemoryModel reads off a network
        base_dim, pad_multiple, min_size = 24, 8, 24

    model = MemoryModel.for_network(_Net(), 'cpu', torch.float32)
    worst = 0.0
    for h, w, tile, ext in cases:
        src = write_photo(os.path.join(folder, f'p{h}x{w}{ext}'), h, w)
        img = read_image(src)
        estimate = model.estimate(h, w, 1 if img.ndim == 2 else img.shape[2], img.itemsize, os.path.getsize(src),
                                  tile, 32)
        del img
        proc = subprocess.run([sys.executable, '-c', _RUN, ROOT, src, os.path.join(folder, f'out{ext}'), weights,
                               str(tile)], cwd=ROOT, capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(proc.stderr[-2000:])
        peak = json.loads(proc.stdout.strip().splitlines()[-1])['peak']
        worst = max(worst, peak / estimate)
        print(f'| {w}x{h} {ext} | {tile or "whole"} | {peak / MIB:.0f} | {estimate / MIB:.0f} | '
              f'{peak / estimate:.2f} |', flush=True)
    return worst


# -- batch: a long run ----------------------------------------------------------------------------
def write_batch(folder, count, lo, hi, seed=0):
    """``count`` photos of lo..hi px a side (PNG, JPEG, gray, RGBA, 16-bit mixed), among them a
    few broken files; returns the largest photo's path and the names of the broken ones."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder)
    broken = {'zero.png': b'', 'text.png': b'not an image\n' * 4}
    largest, largest_px = None, 0
    for i in range(count - len(broken) - 2):
        h, w = (int(v) for v in rng.integers(lo, hi + 1, 2))
        kind = i % 5
        ext = '.jpg' if kind == 1 else '.png'
        path = os.path.join(folder, f'{i:04d}{ext}')
        write_photo(path, h, w, seed=i)
        if kind == 2:  # gray
            cv2.imwrite(path, cv2.imread(path, cv2.IMREAD_GRAYSCALE))
        elif kind == 3:  # 16-bit colour with alpha
            img = cv2.imread(path).astype(np.uint16) * 257
            cv2.imwrite(path, np.dstack([img, np.full((h, w), 40000, np.uint16)]))
        if h * w > largest_px:
            largest, largest_px = path, h * w
    good = cv2.imencode('.png', np.full((hi, hi, 3), 128, np.uint8))[1].tobytes()
    broken['truncated.png'] = good[:len(good) // 2]
    broken['truncated.jpg'] = cv2.imencode('.jpg', np.full((hi, hi, 3), 128, np.uint8))[1].tobytes()[:200]
    for name, data in broken.items():
        with open(os.path.join(folder, name), 'wb') as f:
            f.write(data)
    return largest, sorted(broken)


def measure_batch(count, lo, hi, weights, folder):
    photos = os.path.join(folder, 'batch')
    largest, broken = write_batch(photos, count, lo, hi)
    code, alone, _, err = run_inference(inference_args(largest, os.path.join(folder, 'alone'), weights))
    assert code == 0, err
    first = os.path.join(folder, 'first')
    os.makedirs(first)
    names = sorted(os.listdir(photos))[:count // 5]
    for name in names:
        os.link(os.path.join(photos, name), os.path.join(first, name))
    _, part, _, _ = run_inference(inference_args(first, os.path.join(folder, 'out_first'), weights))
    out = os.path.join(folder, 'out')
    code, whole, seconds, err = run_inference(inference_args(photos, out, weights))
    written = sum(len(files) for _, _, files in os.walk(out))
    listed = [name for name in broken if name in err]
    print(f'{count} photos of {lo}..{hi} px, {len(broken)} of them broken: exit status {code}, {written} written, '
          f'{len(listed)} broken ones listed, {seconds:.0f} s')
    print(f'peak resident memory: whole run {whole / MIB:.0f} MiB, first {len(names)} photos {part / MIB:.0f} MiB, '
          f'largest photo alone {alone / MIB:.0f} MiB: {whole / alone:.3f}x the largest alone')
    ok = code == 1 and written == count - len(broken) and len(listed) == len(broken) and whole <= 1.10 * alone
    print('PASS' if ok else 'FAIL')
    return ok


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest='what', required=True)
    net = sub.add_parser('network')
    net.add_argument('--variants', nargs='+', default=['t', 's'])
    net.add_argument('--sizes', nargs='+', type=int, default=[128, 256, 384, 512, 768, 1024, 1448])
    sub.add_parser('model')
    photo = sub.add_parser('photo')
    photo.add_argument('--megapixels', type=float, default=12)
    photo.add_argument('--max-memory', default=None)
    photo.add_argument('--tile', type=int, default=0)
    photo.add_argument('--variant', default='t')
    photo.add_argument('--keep', help='keep the photo and its output in this folder')
    batch = sub.add_parser('batch')
    batch.add_argument('--count', type=int, default=500)
    batch.add_argument('--min-size', type=int, default=16)
    batch.add_argument('--max-size', type=int, default=96)
    args = parser.parse_args(argv)
    print(f'CPU: {_cpu_model()}; {os.cpu_count()} cores', flush=True)

    if args.what == 'network':
        print('| network | input | peak B/px | peak MiB | process before (MiB) | seconds |\n|---|---|---|---|---|---|')
        measure_network(args.variants, args.sizes)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep if getattr(args, 'keep', None) else tmp
        os.makedirs(folder, exist_ok=True)
        weights = write_weights(os.path.join(folder, 'weights.pth'), getattr(args, 'variant', 't'))
        if args.what == 'model':
            print('| photo | tile | measured MiB over baseline | estimated MiB | measured/estimated |')
            print('|---|---|---|---|---|')
            cases = [(512, 512, 0, '.png'), (1024, 1024, 0, '.jpg'), (1536, 2048, 0, '.png'),
                     (1500, 2000, 128, '.jpg'), (1500, 2000, 256, '.png'), (1500, 2000, 464, '.jpg'),
                     (1500, 2000, 768, '.jpg'), (1000, 4000, 1024, '.jpg')]
            worst = measure_model(cases, weights, folder)
            print(f'largest measured/estimated: {worst:.2f}')
            return 0 if worst <= 1.0 else 1
        if args.what == 'photo':
            side = int((args.megapixels * 1e6 / 12) ** 0.5)
            h, w = 3 * side, 4 * side
            src = write_photo(os.path.join(folder, f'photo_{w}x{h}.jpg'), h, w)
            extra = (['--max-memory', args.max_memory] if args.max_memory else []) + \
                (['--tile', args.tile] if args.tile else [])
            code, peak, seconds, err = run_inference(inference_args(src, os.path.join(folder, 'out'), weights, *extra))
            print('\n'.join(line.strip() for line in err.replace('\r', '\n').splitlines() if 'tiles of' in line))
            print(f'{w}x{h} ({h * w / 1e6:.1f} MP) gUNet-{args.variant.upper()} {" ".join(map(str, extra))}: '
                  f'exit status {code}, {seconds:.0f} s, peak resident memory {peak / MIB:.0f} MiB '
                  f'({peak / GIB:.2f} GiB)')
            return code
        return 0 if measure_batch(args.count, args.min_size, args.max_size, weights, folder) else 1


def _cpu_model():
    try:
        with open('/proc/cpuinfo') as f:
            return next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
    except (OSError, StopIteration):
        return 'unknown'


if __name__ == '__main__':
    sys.path.insert(0, ROOT)
    sys.exit(main())
