#!/usr/bin/env python
"""Size, cost and CPU speed of gUNet in each of its forms and runtimes, as markdown tables.

Steady state is the headline: per variant, form and image size, the form and the baseline
dehaze many images in one warm process of their own, taking turns image by image (the order
rotating each round) so that a change in the machine's load hits both alike; each figure is the
median over the rounds, and a speed-up is the median of the per-round ratios to the baseline.
Nothing else runs in that process, as in a script that dehazes a folder, and its malloc is
glibc's as it comes, as the official code runs: glibc hands the baseline's large freed
activations back to the kernel and faults them in again on the next image. The same rounds are
run once more with malloc keeping freed memory for reuse (``malloc kept``, as GUNetModel sets it
for CPU training): the baseline at its fastest, which the official code does not do.
A runtime that adapts to a size it keeps seeing (OpenVINO compiles a model for that fixed size
after a few seconds of it, see gunet_arch/tools/backends.py) runs until it has before the rounds.

Then every form runs in this one process, taking turns in the same way (``all forms``), with the
op-mix bound timed in the same rounds; the GFLOP/s and the share of the bound come from these
rounds. Forms in one process share one heap, and a PyTorch form's time there depends on what the
others leave in it: beside every other form the baseline of gUNet-S at 512² took 730-1,000 ms,
against 1,190-1,750 ms beside a runtime that keeps its own buffers, or alone.

Separately, one fresh process per form and size times the first image (after the form is set
up, which is timed too: the compile of a runtime) and the memory that first forward adds.

Forms: ``baseline`` the official network as the official code runs it (NCHW, eager, the SK
fusion that concatenates its inputs into a 5-D view; our GUNet with that fusion and memory
format put back, same parameters and arithmetic, or with ``--official PATH``, a clone of
IDKiro/gUNet, needing ``timm``, the official module itself); ``eval`` our GUNet in eval mode;
``deployed`` after ``net.deploy()``; ``onnxruntime`` and ``openvino`` the deployed graph run by
those runtimes (gunet_arch/tools/backends.py, float32); ``openvino-bf16`` OpenVINO with bfloat16
inference precision; ``autocast-bf16`` the deployed model under torch.autocast(bfloat16). Forms
whose runtime is not installed, or bfloat16 on a CPU without bfloat16 units, are left out.

The op-mix bound: every convolution of the network, measured alone at its real shape (input
size, channels, kernel, stride, groups) in the fastest form available here (PyTorch NCHW or
channels_last, ONNX Runtime, OpenVINO), summed over the network's convolutions. It is what the
network would take if everything between the convolutions (activations, gates, residual sums,
padding, the SK fusions) cost nothing; its convolution FLOPs over that time are the achievable
GFLOP/s, and each form's share of the bound is its GFLOP/s over those. bfloat16 forms are held
against the bound measured in bfloat16.

Training: one step (forward, L1, backward, AdamW) of the baseline and of the trainable model,
batch ``--train-batch`` at ``--train-size``, interleaved, in a process of its own. By default
both run with glibc's malloc keeping freed memory, as GUNetModel sets it for CPU training: the
ratio is then the network code's alone. ``--train-allocator default`` times both with malloc as
it comes (how the official training loop runs).

    python scripts/benchmark.py --variants t s --train-variants      # inference only
    python scripts/benchmark.py --variants s --sizes --train-variants s --train-batch 16   # training only
    python scripts/benchmark.py --variants t s --official ../gUNet
"""
import argparse
import copy
import importlib
import os
import platform
import statistics
import sys
import tempfile
import time
import types

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from gunet_arch.archs import VARIANTS, GUNet  # noqa: E402
from gunet_arch.models.amp import cpu_has_bf16_units  # noqa: E402
from gunet_arch.models.cpu_allocator import keep_freed_memory  # noqa: E402
from gunet_arch.tools import backends  # noqa: E402

FORMS = ('baseline', 'eval', 'deployed', 'onnxruntime', 'openvino', 'openvino-bf16', 'autocast-bf16')
BF16_FORMS = ('openvino-bf16', 'autocast-bf16')
CPU_FLAGS = ('avx2', 'avx512f', 'avx512_vnni', 'avx512_bf16', 'avx512_fp16', 'amx_tile', 'amx_bf16', 'amx_int8')


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
    # On the meta device: shapes only, no arithmetic (a 256² forward would take seconds).
    net = plain_baseline(net).eval().to('meta')
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
        net.forward_features(torch.zeros(1, 3, size, size, device='meta'))
    for h in hooks:
        h.remove()
    return total[0]


# -- the forms ------------------------------------------------------------------------------------
def available_forms(wanted=FORMS):
    """The forms of ``wanted`` that can run here."""
    have_bf16 = backends.installed('openvino') and backends.cpu_has_bf16()
    ok = {
        'onnxruntime': backends.installed('onnxruntime'),
        'openvino': backends.installed('openvino'),
        'openvino-bf16': have_bf16,
    }
    return [f for f in wanted if ok.get(f, True)]


class Autocast(nn.Module):
    """``net`` under CPU bfloat16 autocast, output back in float32."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        with torch.autocast('cpu', torch.bfloat16):
            return self.net(x).float()


def build_form(form, net, baseline, threads):
    """A callable for ``form``: 1 x 3 x H x W [0, 1] float32 -> output. ``net`` is the eval-mode
    GUNet, ``baseline`` the official-structure model with the same weights."""
    if form == 'baseline':
        return baseline
    if form == 'eval':
        return net
    if form in ('deployed', 'autocast-bf16'):
        deployed = copy.deepcopy(net).deploy()
        return Autocast(deployed) if form == 'autocast-bf16' else deployed
    name = form.split('-')[0]
    return backends.build_backend(net, name, bf16=form.endswith('bf16'), threads=threads, log=_log)


def _log(message):
    print(message, file=sys.stderr, flush=True)


def settle(fn, x, limit_s=120):
    """Run ``fn`` on ``x`` until a runtime that adapts to a size it keeps seeing has (OpenVINO
    compiles for it after a few seconds), as it would in a folder of same-size photos."""
    deadline = time.perf_counter() + limit_s
    while not getattr(fn, 'settled', True) and time.perf_counter() < deadline:
        fn(x)


def take_turns(timers, rounds, n_inputs, warmup=2):
    """``{name: [seconds per round]}`` of ``timers`` (``name -> callable(image index) -> seconds``)
    taking turns image by image, in an order that rotates from round to round, the images cycling
    through ``n_inputs``; the first ``warmup`` rounds are not kept."""
    names = list(timers)
    times = {k: [] for k in names}
    for i in range(warmup + rounds):
        shift = i % len(names)
        for k in names[shift:] + names[:shift]:
            seconds = timers[k](i % n_inputs)
            if i >= warmup:
                times[k].append(seconds)
    return times


def timed_call(fn, inputs):
    """``fn`` as a timer for ``take_turns``: seconds of one call on ``inputs[i]``."""

    def timer(i):
        t0 = time.perf_counter()
        fn(inputs[i])
        return time.perf_counter() - t0

    return timer


def steady_state(fns, inputs, rounds, warmup=2):
    """``{form: [seconds per round]}``: every form of ``fns`` in this process, on the same image
    each round, taking turns (``take_turns``)."""
    with torch.inference_mode():
        for fn in fns.values():
            settle(fn, inputs[0])
        return take_turns({k: timed_call(fn, inputs) for k, fn in fns.items()}, rounds, len(inputs), warmup)


# -- each form with the baseline in a warm process of their own -----------------------------------
def _load_forms(forms, config, state_path, official, threads):
    """``{form: callable}`` of ``forms`` of one GUNet of ``config`` with the weights saved at
    ``state_path`` (the network and its baseline built once for all of them)."""
    net = GUNet(**config).eval()
    net.load_state_dict(torch.load(state_path, weights_only=True))
    baseline = plain_baseline(net).eval()
    if official:
        baseline = OfficialWrapper(load_official(official, net.variant, net.state_dict()), net).eval()
    return {form: build_form(form, net, baseline, threads) for form in forms}


def _form_worker(forms, config, state_path, official, inputs_path, threads, malloc):
    """The process of one ``FormWorker``: each of ``forms`` built once, then, per line read from
    stdin, ``settle SIZE`` (reply when every form has settled on that size) or ``SIZE I FORM``
    (FORM dehazes image I of that size; reply the seconds it took). Replies are the stdout lines
    that start with '@'."""
    torch.set_num_threads(threads)
    if malloc == 'kept':
        keep_freed_memory()
    fns = _load_forms(forms, config, state_path, official, threads)
    inputs = torch.load(inputs_path, weights_only=True)
    print('@ready', flush=True)
    with torch.inference_mode():
        for line in sys.stdin:
            words = line.split()
            if words[0] == 'settle':
                for fn in fns.values():
                    settle(fn, inputs[int(words[1])][0])
                print('@settled', flush=True)
            else:
                x = inputs[int(words[0])][int(words[1])]
                fn = fns[words[2]]
                t0 = time.perf_counter()
                fn(x)
                print(f'@{time.perf_counter() - t0!r}', flush=True)


class FormWorker:
    """``forms`` in one warm process of their own, as a script that runs only them meets it: its
    own heap, glibc's malloc as it comes (or keeping freed memory, ``malloc='kept'``). A PyTorch
    form's time depends on what else shares its heap: the baseline of gUNet-S at 512² took
    730-1,000 ms in a process beside every other form, against 1,190-1,750 ms beside a runtime
    that keeps its own buffers, or alone."""

    def __init__(self, forms, config, state_path, official, inputs_path, threads, malloc='default'):
        import subprocess

        self.forms = list(forms)
        self._stderr = tempfile.TemporaryFile()
        spec = {'forms': self.forms, 'config': config, 'state_path': state_path, 'official': official,
                'inputs_path': inputs_path, 'threads': threads, 'malloc': malloc}
        self.process = subprocess.Popen(_this_script('--form-worker', spec), stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=self._stderr, text=True)

    def _ask(self, line=None):
        if line is not None:
            self.process.stdin.write(line + '\n')
            self.process.stdin.flush()
        for reply in self.process.stdout:
            if reply.startswith('@'):
                return reply[1:].strip()
        self.process.wait()
        self._stderr.seek(0)
        tail = self._stderr.read().decode(errors='replace')[-3000:]
        raise RuntimeError(f'the process timing {" and ".join(self.forms)} ended (exit {self.process.returncode}):'
                           f'\n{tail}')

    def ready(self):
        self._ask()

    def settle(self, size):
        self._ask(f'settle {size}')

    def timer(self, size, form):
        """A timer for ``take_turns``: the seconds ``form`` took on image I of ``size``."""
        return lambda i: float(self._ask(f'{size} {i} {form}'))

    def close(self):
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=60)
            except Exception:  # noqa: BLE001 - a worker that will not end is killed
                self.process.kill()
                self.process.wait()
        self._stderr.close()


# -- the op-mix bound -----------------------------------------------------------------------------
def conv_mix(net, size):
    """``{signature: count}`` of the convolutions a 1 x 3 x size x size forward of ``net`` runs;
    a signature is (in, out, kh, kw, stride, padding, groups, H, W) of the conv's input."""
    mix = {}

    def hook(m, inp, out):
        h, w = inp[0].shape[-2:]
        sig = (m.in_channels, m.out_channels, *m.kernel_size, m.stride[0], m.padding[0], m.groups, h, w)
        mix[sig] = mix.get(sig, 0) + 1

    hooks = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            net(torch.rand(1, 3, size, size))
    finally:
        for h in hooks:
            h.remove()
    return mix


def conv_flops(sig):
    cin, cout, kh, kw, stride, pad, groups, h, w = sig
    oh, ow = (h + 2 * pad - kh) // stride + 1, (w + 2 * pad - kw) // stride + 1
    return 2 * cout * oh * ow * (cin // groups) * kh * kw


def _single_conv_onnx(sig):
    """A one-Conv ONNX model (with bias) of signature ``sig``, static shape."""
    from onnx import TensorProto, helper, numpy_helper

    cin, cout, kh, kw, stride, pad, groups, h, w = sig
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((cout, cin // groups, kh, kw)).astype(np.float32) * 0.1, 'w')
    bias = numpy_helper.from_array(rng.standard_normal(cout).astype(np.float32), 'b')
    node = helper.make_node('Conv', ['x', 'w', 'b'], ['y'], kernel_shape=[kh, kw], strides=[stride, stride],
                            pads=[pad] * 4, group=groups)
    graph = helper.make_graph([node], 'conv', [helper.make_tensor_value_info('x', TensorProto.FLOAT, [1, cin, h, w])],
                              [helper.make_tensor_value_info('y', TensorProto.FLOAT, None)], [weight, bias])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid('', 18)]).SerializeToString()


def conv_op_forms(sig, threads, bf16=False):
    """``{(precision, form): callable()}`` running convolution ``sig`` alone, in each form
    available: float32 in PyTorch (NCHW and channels_last), ONNX Runtime and OpenVINO, and with
    ``bf16`` OpenVINO's bfloat16."""
    cin, cout, kh, kw, stride, pad, groups, h, w = sig
    x = torch.rand(1, cin, h, w)
    conv = nn.Conv2d(cin, cout, (kh, kw), stride, pad, groups=groups).eval()
    conv_cl = copy.deepcopy(conv).to(memory_format=torch.channels_last)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    fns = {('fp32', 'torch NCHW'): lambda: conv(x), ('fp32', 'torch channels_last'): lambda: conv_cl(x_cl)}
    graph, xs = _single_conv_onnx(sig), x.numpy()
    if backends.installed('onnxruntime'):
        import onnxruntime as ort

        session = ort.InferenceSession(graph, backends.onnxruntime_options(threads), providers=['CPUExecutionProvider'])
        # Bound once: the input used in place and the output written into one buffer, so that
        # only the convolution is timed (session.run would allocate a new output every call).
        binding = session.io_binding()
        binding.bind_cpu_input('x', xs)
        binding.bind_output('y')
        session.run_with_iobinding(binding)
        binding.bind_ortvalue_output('y', binding.get_outputs()[0])
        fns[('fp32', 'onnxruntime')] = lambda: session.run_with_iobinding(binding)
    if backends.installed('openvino'):
        core, model = _openvino_core(), _openvino_core().read_model(graph)
        for precision in ('fp32', 'bf16') if bf16 else ('fp32', ):
            compiled = core.compile_model(model, 'CPU', {
                'INFERENCE_PRECISION_HINT': 'bf16' if precision == 'bf16' else 'f32',
                'PERFORMANCE_HINT': 'LATENCY', 'NUM_STREAMS': '1', 'INFERENCE_NUM_THREADS': str(threads)})
            request = compiled.create_infer_request()
            # The input shared, not copied in, and the output left in the request's buffer.
            fns[(precision, 'openvino')] = lambda request=request: request.infer(
                {0: xs}, share_inputs=True, share_outputs=True)
    return fns


_OV_CORE = []


def _openvino_core():
    """One OpenVINO Core for all the single-conv models (a Core per model costs a plugin load)."""
    if not _OV_CORE:
        import openvino as ov

        _OV_CORE.append(ov.Core())
    return _OV_CORE[0]


class OpMix:
    """The op-mix bound as something to run: every convolution of the network alone, each in
    the form that ran it fastest (picked by ``repeats`` interleaved runs), as often as the
    network runs it. ``runner(precision)`` goes into the steady-state rounds beside the forms,
    so that the bound and the forms are timed under the same load."""

    def __init__(self, mix, threads, repeats, precisions=('fp32', )):
        self.flops = sum(count * conv_flops(sig) for sig, count in mix.items())
        self.plan = {p: [] for p in precisions}
        self.wins = {p: {} for p in precisions}  # form -> FLOPs it was fastest on
        with torch.inference_mode():
            for sig, count in mix.items():
                fns = conv_op_forms(sig, threads, bf16='bf16' in precisions)
                times = interleaved_medians(fns, repeats, warmup=2)
                for p in precisions:
                    best = min((k for k in times if k[0] == p), key=times.get)
                    self.plan[p].append((fns[best], count))
                    self.wins[p][best[1]] = self.wins[p].get(best[1], 0) + count * conv_flops(sig)

    def runner(self, precision):
        plan = self.plan[precision]

        def run(x):
            for fn, count in plan:
                for _ in range(count):
                    fn()

        return run


# -- a fresh process ------------------------------------------------------------------------------
def _first_image_worker(form, config, state_path, official, size, threads):
    """In a fresh process: ``(setup s, first image s, KiB the first forward added to the
    resident high-water mark)`` of ``form`` for a GUNet of ``config`` with the weights saved at
    ``state_path``."""
    torch.set_num_threads(threads)
    x = torch.rand(1, 3, size, size)
    t0 = time.perf_counter()
    fn = _load_forms([form], config, state_path, official, threads)[form]
    setup = time.perf_counter() - t0
    before = _high_water_kib() if os.path.exists('/proc/self/status') else 0
    with torch.inference_mode():
        t0 = time.perf_counter()
        fn(x)
        first = time.perf_counter() - t0
    peak = _high_water_kib() - before if before else float('nan')
    return setup, first, peak


def first_image(form, net, size, args, state_path):
    """``(setup s, first image s, peak KiB)`` of ``form`` in a newly started interpreter running
    this file (so it works however this module was imported)."""
    import json
    import subprocess

    spec = {'form': form, 'config': _config(net), 'state_path': state_path, 'official': args.official,
            'size': size, 'threads': args.threads}
    done = subprocess.run(_this_script('--first-image-probe', spec), capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f'first-image probe of {form} at {size}² failed:\n{done.stderr[-3000:]}')
    return tuple(json.loads(done.stdout.strip().splitlines()[-1]))


def _this_script(flag, spec):
    """The command that runs this file (whichever way this module was imported) in a new
    interpreter as one of its own child processes: ``flag`` with ``spec`` as JSON."""
    import json

    return [sys.executable, os.path.abspath(__file__), flag, json.dumps(spec)]


def _config(net):
    return {'base_dim': net.base_dim, 'depths': list(net.depths), 'kernel_size': net.kernel_size}


def _peak_forward_kib(variant, form, size, threads):
    """In a fresh process: resident-memory high-water mark added by one forward, in KiB
    (``form`` 'baseline' or 'deploy', random weights)."""
    torch.manual_seed(0)
    net = GUNet(variant=variant).eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, 'net.pth')
        torch.save(net.state_dict(), path)
        form = 'deployed' if form == 'deploy' else form
        return _first_image_worker(form, _config(net), path, None, size, threads)[2]


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


def train_step_fn(net, x, y, bf16=False):
    """One training step; ``bf16``: the forward under CPU bfloat16 autocast, as GUNetModel runs
    ``train.amp: {enabled: true, dtype: bfloat16}``."""
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, weight_decay=0.01)
    net.train()

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast('cpu', torch.bfloat16, enabled=bf16):
            out = net(x)
        loss = F.l1_loss(out.float(), y)
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


def cpu_description():
    """``(model name, {flag: present})`` from /proc/cpuinfo (the platform's name elsewhere)."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name') and name == (platform.processor() or platform.machine()):
                    name = line.split(':', 1)[1].strip()
                elif line.startswith('flags') and not flags:
                    flags = set(line.split(':', 1)[1].split())
    except OSError:
        pass
    return name, {f: f in flags for f in CPU_FLAGS}


def _runtime_versions():
    out = [f'torch {torch.__version__}']
    for name in ('onnxruntime', 'openvino'):
        if backends.installed(name):
            out.append(f'{name} {importlib.import_module(name).__version__}')
    return ', '.join(out)


def pair_rounds(variant, forms, net, args, state_path, inputs_path, all_inputs):
    """``{size: {(form, malloc): (baseline seconds, form seconds)}}``: each form and the baseline
    taking turns image by image in one warm process of their own (``FormWorker``), nothing else in
    it: malloc as it comes and, with ``--kept-malloc``, kept. Only that process runs, as on a
    machine where one script dehazes a folder; this process has built none of its forms yet."""
    mallocs = ['default'] + ['kept'] * args.kept_malloc
    _log(f'gUNet-{variant.upper()}: each form and the baseline in a process of their own')
    rounds = {size: {} for size in args.sizes}
    for malloc in mallocs:
        for form in forms:
            if form == 'baseline':
                continue
            worker = FormWorker(['baseline', form], _config(net), state_path, args.official, inputs_path,
                                args.threads, malloc)
            try:
                worker.ready()
                for size in args.sizes:
                    worker.settle(size)
                    t = take_turns({k: worker.timer(size, k) for k in ('baseline', form)}, args.repeats,
                                   len(all_inputs[size]))
                    rounds[size][(form, malloc)] = (t['baseline'], t[form])
            finally:
                worker.close()
    return rounds


def measure_size(size, inputs, fns, deployed, pairs, net, args, state_path, forms):
    """Every figure of one image size: output differences, the op-mix bound and steady state of
    all forms in this process (``fns``), the rounds of each form with the baseline in a process of
    their own (``pairs``), the first image."""
    _log(f'gUNet-{net.variant.upper() if net.variant else "?"} {size}x{size}: op-mix bound, steady state, '
         'first image ...')
    with torch.inference_mode():
        ref = fns['baseline'](inputs[0])
        diff = {k: float((fn(inputs[0]).float() - ref).abs().max()) for k, fn in fns.items()}
    precisions = ['fp32'] + ['bf16'] * (any(f in BF16_FORMS for f in forms) and backends.installed('openvino'))
    mix = OpMix(conv_mix(deployed, size), args.threads, args.op_repeats, precisions)
    bound_names = {p: f'op-mix bound {p}' for p in precisions}
    times = steady_state(dict(fns, **{bound_names[p]: mix.runner(p) for p in precisions}), inputs, args.repeats)
    first = {f: first_image(f, net, size, args, state_path) for f in forms if f in args.first_image}

    def ratio(times, num, den):  # median of the per-round ratios
        return statistics.median(a / b for a, b in zip(times[num], times[den]))

    def bound(form):
        return bound_names.get('bf16' if form in BF16_FORMS else 'fp32')

    pair_ms, pair_speedup = {}, {}
    for malloc in ('default', 'kept'):
        rounds = {f: pairs[(f, malloc)] for f in forms if (f, malloc) in pairs}
        if not rounds:
            continue
        pair_ms[malloc] = {f: statistics.median(t) for f, (_, t) in rounds.items()}
        pair_ms[malloc]['baseline'] = statistics.median(t for base, _ in rounds.values() for t in base)
        pair_speedup[malloc] = {f: ratio({'baseline': b, f: t}, 'baseline', f) for f, (b, t) in rounds.items()}
        pair_speedup[malloc]['baseline'] = 1.0
    return {
        'ms': {k: statistics.median(times[k]) for k in fns},
        'speedup': {k: ratio(times, 'baseline', k) for k in fns},
        'share': {k: ratio(times, bound(k), k) for k in fns if bound(k)},
        'pair_ms': pair_ms, 'pair_speedup': pair_speedup,
        'bounds': {p: (statistics.median(times[n]), mix.flops, mix.wins[p]) for p, n in bound_names.items()},
        'rounds': args.repeats, 'diff': diff, 'first': first,
    }


def bench_variant(variant, args):
    """One variant: sizes, op-mix bounds, steady state (each form with the baseline in a process of
    their own, and all forms in one process) and first image of every form, training."""
    torch.manual_seed(0)
    net = GUNet(variant=variant).eval()
    random_bn_statistics(net)
    forms = available_forms(args.forms)
    row = {'variant': variant.upper(), 'params': sum(p.numel() for p in net.parameters()), 'macs': count_macs(net),
           'forms': forms, 'sizes': {}}
    with tempfile.TemporaryDirectory() as tmp:
        state_path, inputs_path = os.path.join(tmp, 'net.pth'), os.path.join(tmp, 'inputs.pt')
        torch.save(net.state_dict(), state_path)
        all_inputs = {}
        for size in args.sizes:
            g = torch.Generator().manual_seed(size)
            all_inputs[size] = [torch.rand(1, 3, size, size, generator=g) for _ in range(3)]
        torch.save(all_inputs, inputs_path)
        pairs = {}
        if args.sizes and args.pairs:
            pairs = pair_rounds(variant, forms, net, args, state_path, inputs_path, all_inputs)
        baseline = plain_baseline(net).eval()
        if args.official:
            baseline = OfficialWrapper(load_official(args.official, variant, net.state_dict()), net).eval()
        fns = {form: build_form(form, net, baseline, args.threads) for form in forms}
        deployed = fns.get('deployed') or copy.deepcopy(net).deploy()
        for size in args.sizes:
            row['sizes'][size] = measure_size(size, all_inputs[size], fns, deployed, pairs.get(size, {}), net, args,
                                              state_path, forms)
    if variant in args.train_variants:
        row['train'], row['train_diff'] = in_fresh_process(_train_worker, variant, args)
    return row


def _train_worker(variant, args):
    # A process of its own, so that the allocator setting reaches neither the inference figures
    # nor the next variant.
    torch.set_num_threads(args.threads)
    if args.train_allocator == 'kept':
        keep_freed_memory()
    return bench_training(variant, args)


def bench_training(variant, args):
    """``(median seconds {'base', 'ours'}, (loss diff, grad diff))`` of one training step."""
    g = torch.Generator().manual_seed(1)
    x = torch.rand(args.train_batch, 3, args.train_size, args.train_size, generator=g)
    y = torch.rand(args.train_batch, 3, args.train_size, args.train_size, generator=g)
    torch.manual_seed(0)
    trainable = GUNet(variant=variant)
    base_train = plain_baseline(trainable)
    if args.official:
        base_train = OfficialWrapper(load_official(args.official, variant, trainable.state_dict()), trainable)
    diff = compare_gradients(base_train, trainable, x, y)
    # Fresh identical copies so the optimizers start from the same state.
    steps = {'base': train_step_fn(copy.deepcopy(base_train), x, y),
             'ours': train_step_fn(copy.deepcopy(trainable), x, y)}
    if cpu_has_bf16_units():
        steps['ours-bf16'] = train_step_fn(copy.deepcopy(trainable), x, y, bf16=True)
    return interleaved_medians(steps, args.train_repeats), diff


def fmt_ms(seconds):
    if seconds != seconds:  # nan
        return '–'
    return f'{seconds * 1000:.0f}' if seconds >= 0.1 else f'{seconds * 1000:.1f}'


def render(rows, args):
    """The tables: sizes and bounds per variant, steady state and first image per form, training."""
    base_name = 'official' if args.official else 'baseline'
    out = []
    if args.sizes:
        head = ['variant', 'params', 'MACs G (/1e9)', 'MACs G (/1024³)']
        for s in args.sizes:
            head += [f'{s}² conv GFLOP', f'{s}² op-mix bound ms (fp32 / bf16)', f'{s}² bound GFLOP/s (fp32 / bf16)',
                     f'{s}² fastest conv forms (fp32 / bf16, share of FLOPs)']
        out += ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
        for r in rows:
            cells = [r['variant'], f"{r['params']:,}", f"{r['macs'] / 1e9:.3f}", f"{r['macs'] / 1024**3:.3f}"]
            for s in args.sizes:
                bounds = r['sizes'][s]['bounds']
                flops = bounds['fp32'][1]
                ms = ' / '.join(fmt_ms(b[0]) for b in bounds.values())
                rate = ' / '.join(f'{b[1] / b[0] / 1e9:.0f}' for b in bounds.values())
                wins = ' / '.join(', '.join(f'{k} {v / b[1] * 100:.0f}%' for k, v in sorted(
                    b[2].items(), key=lambda kv: -kv[1])) for b in bounds.values())
                cells += [f'{flops / 1e9:.2f}', ms, rate, wins]
            out.append('| ' + ' | '.join(cells) + ' |')
        out.append('')
        head = ['variant', 'form']
        # The headline: each form and the baseline alone in a warm process, malloc as it comes.
        mallocs = {'default': ('steady ms', 'speed-up'), 'kept': ('steady ms, malloc kept', 'speed-up, malloc kept')}
        mallocs = {k: v for k, v in mallocs.items() if args.pairs and (k == 'default' or args.kept_malloc)}
        for s in args.sizes:
            for labels in mallocs.values():
                head += [f'{s}² {label}' for label in labels]
            head += [f'{s}² all forms ms', f'{s}² all forms speed-up', f'{s}² all forms GFLOP/s',
                     f'{s}² share of bound', f'{s}² first image ms (setup s)', f'{s}² peak MiB']
        head.append(f'max |Δ| vs {base_name}')
        out += ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
        for r in rows:
            for form in r['forms']:
                cells = [r['variant'], base_name if form == 'baseline' else form]
                for s in args.sizes:
                    d = r['sizes'][s]
                    for malloc in mallocs:
                        ms_, speed_ = d['pair_ms'].get(malloc, {}), d['pair_speedup'].get(malloc, {})
                        cells += [fmt_ms(ms_[form]), f'{speed_[form]:.2f}×'] if form in ms_ else ['–', '–']
                    ms = d['ms'][form]
                    flops = d['bounds']['fp32'][1]
                    speed, share = d['speedup'].get(form), d['share'].get(form)
                    cells += [fmt_ms(ms), f'{speed:.2f}×' if speed else '–', f'{flops / ms / 1e9:.1f}',
                              f'{share * 100:.0f}%' if share else '–']
                    if form in d['first']:
                        setup, first, peak = d['first'][form]
                        cells += [f'{fmt_ms(first)} ({setup:.1f})', f'{peak / 1024:.0f}']
                    else:
                        cells += ['–'] * 2
                diff = max(r['sizes'][s]['diff'][form] for s in args.sizes)
                cells.append(f'{diff:.1e}')
                out.append('| ' + ' | '.join(cells) + ' |')
    trained = [r for r in rows if 'train' in r]
    if trained:
        if out:
            out.append('')
        head = ['variant', f'train step ms ({base_name} / ours)', 'train speed-up',
                'ours with bfloat16 autocast ms (speed-up)', 'max |Δ| loss / grad']
        out += ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
        for r in trained:
            t = r['train']
            bf16 = f"{fmt_ms(t['ours-bf16'])} ({t['base'] / t['ours-bf16']:.2f}×)" if 'ours-bf16' in t else '–'
            out.append(f"| {r['variant']} | {fmt_ms(t['base'])} / {fmt_ms(t['ours'])} | {t['base'] / t['ours']:.2f}× | "
                       f"{bf16} | {r['train_diff'][0]:.1e} / {r['train_diff'][1]:.1e} |")
    return '\n'.join(out)


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--variants', nargs='+', default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument('--sizes', nargs='*', type=int, default=[256, 512],
                        help='square image sizes for inference (none: training only)')
    parser.add_argument('--threads', type=int, default=2, help='CPU threads of every runtime (default 2)')
    parser.add_argument('--forms', nargs='+', default=list(FORMS), choices=FORMS,
                        help='forms to time (the baseline is always among them)')
    parser.add_argument('--repeats', type=int, default=15, help='timed steady-state rounds per size')
    parser.add_argument('--op-repeats', type=int, default=9, help='timed runs of each convolution alone')
    parser.add_argument('--first-image', nargs='*', default=None, choices=FORMS, metavar='FORM',
                        help='forms timed on a first image in a fresh process (default: all; none: skip)')
    parser.add_argument('--pairs', action=argparse.BooleanOptionalAction, default=True,
                        help='time each form and the baseline in a warm process of their own, the headline '
                             '(default: on; off: all forms in one process only)')
    parser.add_argument('--kept-malloc', action=argparse.BooleanOptionalAction, default=True,
                        help='with --pairs, also time each form and the baseline in a process whose malloc '
                             'keeps freed memory (default: on)')
    parser.add_argument('--train-variants', nargs='*', default=list(VARIANTS), choices=list(VARIANTS),
                        help='variants whose training step is timed')
    parser.add_argument('--train-batch', type=int, default=16, help='training batch (default 16)')
    parser.add_argument('--train-size', type=int, default=256, help='training crop size (default 256)')
    parser.add_argument('--train-repeats', type=int, default=3)
    parser.add_argument('--train-allocator', choices=['kept', 'default'], default='kept',
                        help="'kept': both train with glibc keeping freed memory, as GUNetModel does on "
                             "the CPU (gunet_arch/models/cpu_allocator.py); 'default': malloc as it comes")
    parser.add_argument('--official', metavar='PATH', help='a clone of IDKiro/gUNet to time side by side')
    parser.add_argument('--first-image-probe', metavar='JSON', help=argparse.SUPPRESS)  # first_image's child
    parser.add_argument('--form-worker', metavar='JSON', help=argparse.SUPPRESS)  # a FormWorker's process
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.first_image_probe:
        import json

        print(json.dumps(_first_image_worker(**json.loads(args.first_image_probe))))
        return
    if args.form_worker:
        import json

        _form_worker(**json.loads(args.form_worker))
        return
    if 'baseline' not in args.forms:
        args.forms = ['baseline'] + list(args.forms)
    if args.first_image is None:
        args.first_image = list(FORMS)
    torch.set_num_threads(args.threads)
    cpu, flags = cpu_description()
    load = os.getloadavg() if hasattr(os, 'getloadavg') else None

    rows = []
    for v in args.variants:
        _log(f'benchmarking gUNet-{v.upper()} ...')
        rows.append(bench_variant(v, args))
    end_load = os.getloadavg() if load else None
    print(f'CPU: {cpu}; {os.cpu_count()} logical CPUs; flags: '
          + ', '.join(f + ('' if on else ' (no)') for f, on in flags.items()))
    what = [f'{_runtime_versions()}; {args.threads} threads']
    if args.sizes:
        what.append(f'batch 1 inference, median of {args.repeats} round-robin rounds'
                    + (' of each form and the baseline in a process of their own, and' if args.pairs else '')
                    + ' of all forms in one process')
    if any('train' in r for r in rows):
        kept = ' (freed memory kept, as GUNetModel trains on the CPU)' if args.train_allocator == 'kept' else ''
        what.append(f'training: batch {args.train_batch} at {args.train_size}², median of {args.train_repeats}, '
                    f'in a process of its own, malloc {args.train_allocator} for both{kept}')
    if load:
        what.append(f'load average {load[0]:.2f} at the start, {end_load[0]:.2f} at the end')
    print('; '.join(what) + '.\n')
    print(render(rows, args))


if __name__ == '__main__':
    main()
