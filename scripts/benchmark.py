#!/usr/bin/env python
"""Size, cost and CPU speed of gUNet, printed as one markdown table.

Per variant: exact parameter count, MACs at 1x3x256x256, median CPU latency at 256^2 and 512^2 of
the baseline, the eval model and the deployed model (interleaved runs, same weights), peak
memory of one forward, and the time of one training step (batch 4, 256^2, forward + L1 +
backward + AdamW) of the baseline and of the trainable model.

The baseline is the official network as the official code runs it: NCHW, eager, with the SK
fusion that concatenates its inputs into a 5-D view. Without ``--official`` it is our GUNet with
that fusion and memory format put back (same parameters, same arithmetic); with
``--official PATH`` (a clone of IDKiro/gUNet, needs ``timm``) the official module itself runs.

    python scripts/benchmark.py                      # all variants, 2 threads
    python scripts/benchmark.py --variants t s --official ../gUNet
"""
import argparse
import copy
import importlib
import os
import platform
import statistics
import sys
import time
import types

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from gunet_arch.archs import VARIANTS, GUNet  # noqa: E402


class ConcatSKFusion(nn.Module):
    """The official SK fusion's arithmetic: concat, 5-D view, sum, softmax, weighted sum."""

    def __init__(self, fusion):
        super().__init__()
        self.mlp = fusion.mlp

    def forward(self, up, skip):
        b, c, h, w = up.shape
        feats = torch.cat([up, skip], dim=1).view(b, 2, c, h, w)
        attn = self.mlp(feats.sum(dim=1))
        attn = torch.softmax(attn.view(b, 2, c, 1, 1), dim=1)
        return (feats * attn).sum(dim=1)


def plain_baseline(net):
    """A copy of ``net`` in the official form: NCHW and the concat-based SK fusion."""
    base = copy.deepcopy(net)
    base.channels_last = False
    base.to(memory_format=torch.contiguous_format)
    for i, fusion in enumerate(base.fusions):
        base.fusions[i] = ConcatSKFusion(fusion)
    return base


class OfficialWrapper(nn.Module):
    """The official module behind our [0, 1] interface (same padding, range and crop)."""

    def __init__(self, official, pad_like):
        super().__init__()
        self.official = official
        # Only the padding rule of our GUNet, not the module (its weights must not be counted).
        self.pad = types.MethodType(GUNet.pad, types.SimpleNamespace(
            pad_multiple=pad_like.pad_multiple, min_size=pad_like.min_size))

    def forward(self, x):
        h, w = x.shape[-2:]
        y = self.official(self.pad(x * 2 - 1))[..., :h, :w]
        return y * 0.5 + 0.5


def load_official(path, variant, state_dict):
    models_dir = os.path.join(path, 'models')
    if not os.path.isfile(os.path.join(models_dir, 'gunet.py')):
        sys.exit(f'--official: {models_dir}/gunet.py not found (expected a clone of IDKiro/gUNet)')
    if '_official_gunet' not in sys.modules:
        # Import models/gunet.py on its own: the official models/__init__ pulls in every baseline.
        pkg = types.ModuleType('_official_gunet')
        pkg.__path__ = [models_dir]
        sys.modules['_official_gunet'] = pkg
    try:
        module = importlib.import_module('_official_gunet.gunet')
    except ImportError as err:
        sys.exit(f'--official: cannot import the official gunet.py ({err}); it needs timm: pip install timm')
    official = getattr(module, f'gunet_{variant}')()
    official.load_state_dict(state_dict, strict=True)
    return official.eval()


def count_macs(net, size=256):
    """Multiply-accumulates of one 1x3xSxS forward: every conv, plus one per element for each
    BatchNorm, gate product and SK weighting (the multiplies the paper's profiler counts)."""
    net = plain_baseline(net).eval()
    total = [0]

    def conv_hook(m, inp, out):
        total[0] += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    def elementwise_hook(m, inp, out):
        total[0] += out.numel()

    def fusion_hook(m, inp, out):
        total[0] += 2 * out.numel()

    hooks = []
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.BatchNorm2d) or m.__class__.__name__ == 'ConvLayer':
            hooks.append(m.register_forward_hook(elementwise_hook))  # BN scale / gate product
        elif isinstance(m, ConcatSKFusion):
            hooks.append(m.register_forward_hook(fusion_hook))
    with torch.no_grad():
        net.forward_features(torch.zeros(1, 3, size, size))
    for h in hooks:
        h.remove()
    return total[0]


def _peak_forward_kib(variant, form, size, threads):
    """In a fresh process: resident-memory high-water mark added by one forward, in KiB."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = GUNet(variant=variant).eval()
    net = plain_baseline(net).eval() if form == 'baseline' else net.deploy()
    x = torch.rand(1, 3, size, size)
    before = _high_water_kib()
    with torch.inference_mode():
        net(x)
    return _high_water_kib() - before


def _high_water_kib():
    # VmHWM belongs to this process image; getrusage's ru_maxrss would also carry the parent's
    # peak across the fork+exec that started this process.
    with open('/proc/self/status') as f:
        return next(int(line.split()[1]) for line in f if line.startswith('VmHWM:'))


def peak_memory_mib(variant, form, size, threads):
    """Peak memory of one forward beyond the model itself, measured in a new process so that
    memory the allocator kept from earlier runs cannot hide it."""
    if not os.path.exists('/proc/self/status'):
        return float('nan')  # Linux only
    return in_fresh_process(_peak_forward_kib, variant, form, size, threads) / 1024


def in_fresh_process(fn, *args):
    """``fn(*args)`` in a newly started interpreter (not a fork of this one)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context('spawn')) as pool:
        return pool.submit(fn, *args).result()


def interleaved_medians(fns, repeats, warmup=1):
    """Median seconds of each callable, the callables taking turns so load changes hit all."""
    times = {k: [] for k in fns}
    for i in range(warmup + repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            if i >= warmup:
                times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def random_bn_statistics(net, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=g) * 0.2 - 0.1)


def train_step_fn(net, x, y):
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, weight_decay=0.01)
    net.train()

    def step():
        opt.zero_grad(set_to_none=True)
        loss = F.l1_loss(net(x), y)
        loss.backward()
        opt.step()
        return loss

    return step


def compare_gradients(a, b, x, y):
    """Max |difference| of loss and of every gradient after one backward from the same weights."""
    losses, grads = [], []
    for net in (a, b):
        net.train()
        net.zero_grad(set_to_none=True)
        loss = F.l1_loss(net(x), y)
        loss.backward()
        losses.append(loss.item())
        grads.append({n.removeprefix('official.'): p.grad.detach().clone() for n, p in net.named_parameters()})
    grad_diff = max((grads[0][n] - grads[1][n]).abs().max().item() for n in grads[0])
    return abs(losses[0] - losses[1]), grad_diff


def bench_variant(variant, args):
    torch.manual_seed(0)
    net = GUNet(variant=variant).eval()
    random_bn_statistics(net)
    params = sum(p.numel() for p in net.parameters())
    macs = count_macs(net)
    baseline = plain_baseline(net).eval()
    if args.official:
        baseline = OfficialWrapper(load_official(args.official, variant, net.state_dict()), net).eval()
    deployed = copy.deepcopy(net).deploy()
    row = {'variant': variant.upper(), 'params': params, 'macs': macs}

    for size in args.sizes:
        x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(size))
        with torch.inference_mode():
            ref = baseline(x)
            row[f'diff{size}'] = max((m(x) - ref).abs().max().item() for m in (net, deployed))
            med = interleaved_medians({
                'base': lambda x=x: baseline(x),
                'eval': lambda x=x: net(x),
                'deploy': lambda x=x: deployed(x)
            }, args.repeats)
        row[f'mem{size}'] = {k: peak_memory_mib(variant, k, size, args.threads) for k in ('baseline', 'deploy')}
        row[f'lat{size}'] = med

    if variant in args.train_variants:
        g = torch.Generator().manual_seed(1)
        x = torch.rand(4, 3, 256, 256, generator=g)
        y = torch.rand(4, 3, 256, 256, generator=g)
        torch.manual_seed(0)
        trainable = GUNet(variant=variant)
        base_train = plain_baseline(trainable)
        if args.official:
            base_train = OfficialWrapper(load_official(args.official, variant, trainable.state_dict()), trainable)
        row['train_diff'] = compare_gradients(base_train, trainable, x, y)
        # Fresh identical copies so both optimizers start from the same state.
        a, b = copy.deepcopy(base_train), copy.deepcopy(trainable)
        row['train'] = interleaved_medians({
            'base': train_step_fn(a, x, y),
            'ours': train_step_fn(b, x, y)
        }, args.train_repeats)
    return row


def _bench_variant_worker(variant, args):
    torch.set_num_threads(args.threads)
    return bench_variant(variant, args)


def bench_variant_in_new_process(variant, args):
    """Each variant in its own process: how much heap earlier variants left behind changes how
    often a forward page-faults, which moves the timings (the baseline's most), so measuring
    every variant from the same starting state keeps the rows comparable and order-free."""
    return in_fresh_process(_bench_variant_worker, variant, args)


def fmt_ms(seconds):
    return f'{seconds * 1000:.0f}' if seconds >= 0.1 else f'{seconds * 1000:.1f}'


def render(rows, args):
    sizes = args.sizes
    base_name = 'official' if args.official else 'baseline'
    head = ['variant', 'params', 'MACs G (/1e9)', 'MACs G (/1024³)']
    for s in sizes:
        head += [f'{s}² {base_name} ms', f'{s}² eval ms', f'{s}² deployed ms', f'{s}² speed-up (eval / deployed)']
    head += [f'peak MiB {sizes[-1]}² ({base_name} / deployed)', f'train step ms ({base_name} / ours)',
             'train speed-up', 'max |Δ| out / grad']
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for r in rows:
        cells = [r['variant'], f"{r['params']:,}", f"{r['macs'] / 1e9:.3f}", f"{r['macs'] / 1024**3:.3f}"]
        for s in sizes:
            lat = r[f'lat{s}']
            cells += [fmt_ms(lat['base']), fmt_ms(lat['eval']), fmt_ms(lat['deploy']),
                      f"{lat['base'] / lat['eval']:.2f}× / {lat['base'] / lat['deploy']:.2f}×"]
        mem = r[f'mem{sizes[-1]}']
        cells.append(f"{mem['baseline']:.0f} / {mem['deploy']:.0f}")
        if 'train' in r:
            t = r['train']
            cells += [f"{fmt_ms(t['base'])} / {fmt_ms(t['ours'])}", f"{t['base'] / t['ours']:.2f}×"]
            grad = f"{r['train_diff'][1]:.1e}"
        else:
            cells += ['–', '–']
            grad = '–'
        out_diff = max(r[f'diff{s}'] for s in sizes)
        cells.append(f'{out_diff:.1e} / {grad}')
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--variants', nargs='+', default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument('--sizes', nargs='+', type=int, default=[256, 512])
    parser.add_argument('--threads', type=int, default=2, help='torch CPU threads (default 2)')
    parser.add_argument('--repeats', type=int, default=7, help='timed forward runs per model and size')
    parser.add_argument('--train-variants', nargs='*', default=list(VARIANTS), choices=list(VARIANTS),
                        help='variants whose training step is timed')
    parser.add_argument('--train-repeats', type=int, default=3)
    parser.add_argument('--official', metavar='PATH', help='a clone of IDKiro/gUNet to time side by side')
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)

    rows = []
    for v in args.variants:
        print(f'benchmarking gUNet-{v.upper()} ...', file=sys.stderr, flush=True)
        rows.append(bench_variant_in_new_process(v, args))
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            cpu = next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
    except (OSError, StopIteration):
        pass
    print(f'CPU: {cpu}; torch {torch.__version__}; {args.threads} threads; median of {args.repeats} interleaved '
          f'runs (train: {args.train_repeats}); fp32; batch 1 inference, batch 4 training.\n')
    print(render(rows, args))


if __name__ == '__main__':
    main()
