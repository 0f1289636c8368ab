"""The runtimes behind scripts/inference.py --backend (gunet_arch/tools/backends.py): each runs
the deployed graph within 1e-4 of the PyTorch model at several sizes from one export, auto takes
the fastest one that agrees, tiled images go through PyTorch, wrong requests name the option,
and scripts/benchmark.py prints its tables.

One small architecture (24 channels, one block per stage; tests/test_arch_onnx.py uses the same)
is traced once per process and, through the cache folder, once per machine: the trace is the
slow part (10-30 s on a busy 2-core machine); every model after it only has its weights written
into the graph. onnxruntime and openvino are installed by `make test` (extras deploy and
openvino): a missing one is an error here, not a skip."""
import cv2
import numpy as np
import pytest
import torch
from conftest import EPS_SENSITIVE_VAR, load_script, randomise_batch_norms

from gunet_arch.archs import VARIANTS, GUNet, Variant
from gunet_arch.models.amp import cpu_has_bf16_units
from gunet_arch.tools import backends
from gunet_arch.tools.backends import BackendError, create_backend

DEPTHS = [1] * 7


def small_net(seed=0):
    torch.manual_seed(seed)
    return randomise_batch_norms(GUNet(depths=DEPTHS).eval(), seed=seed, var_range=EPS_SENSITIVE_VAR)


@pytest.fixture(scope='module')
def net():
    return small_net()


@pytest.fixture
def fresh_auto(monkeypatch):
    """auto's per-process decisions forgotten, so each test sees its own."""
    monkeypatch.setattr(backends, '_auto_choice', {})


def max_diff(a, b):
    return float((a.float() - b.float()).abs().max())


@pytest.mark.parametrize('name', backends.BACKENDS)
def test_each_backend_agrees_with_pytorch_on_two_sizes_from_one_setup(net, name):
    lines = []
    backend = create_backend(net, name, log=lines.append)
    assert backends.backend_name(backend) == name
    if name == 'torch':
        assert backend is net and not lines  # the network is its own backend
    else:
        assert lines[-1].startswith(f'backend: {name} (agrees with PyTorch within')
    for shape in ((1, 3, 40, 56), (2, 3, 77, 101)):  # a new size and batch: no new export or compile
        x = torch.rand(shape)
        with torch.no_grad():
            ref = net(x)
        out = backend(x)
        assert out.shape == ref.shape
        assert max_diff(ref, x) > 0.1  # a real network, not a near-identity
        assert max_diff(out, ref) < 1e-4


def test_every_model_gets_its_own_weights_from_the_shared_trace(net):
    """Two models of one architecture share the trace, never the weights."""
    other = small_net(seed=1)
    a, b = create_backend(net, 'onnxruntime', log=lambda m: None), create_backend(other, 'onnxruntime',
                                                                                   log=lambda m: None)
    x = torch.rand(1, 3, 48, 48)
    with torch.no_grad():
        assert max_diff(net(x), other(x)) > 1e-2
        assert max_diff(a(x), net(x)) < 1e-4 and max_diff(b(x), other(x)) < 1e-4


def test_openvino_bf16_is_asked_for_and_close(net):
    """Where the CPU has bfloat16 units, --bf16 runs in bfloat16 and stays close; where it has
    none, it is refused with the reason (the check holds on either kind of CPU)."""
    fp32 = create_backend(net, 'openvino', log=lambda m: None)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        ref = net(x)
    assert max_diff(fp32(x), ref) < 1e-6  # float32 stated: not OpenVINO's bfloat16 default on AMX CPUs
    if not backends.cpu_has_bf16():
        with pytest.raises(BackendError, match='this CPU has no bfloat16 units'):
            create_backend(net, 'openvino', bf16=True, log=lambda m: None)
        return
    bf16 = create_backend(net, 'openvino', bf16=True, log=lambda m: None)
    assert 1e-5 < max_diff(bf16(x), ref) < backends.BF16_TOLERANCE


def test_openvino_compiles_for_a_size_it_keeps_seeing(net, monkeypatch):
    """One image of a size runs in the dynamic model; a size that keeps coming gets a model
    compiled for it (here at once: STATIC_AFTER 0), which agrees with PyTorch as the dynamic one
    does; another size runs at once again, in the dynamic model compiled anew."""
    backend = create_backend(net, 'openvino', log=lambda m: None)
    x, y = torch.rand(1, 3, 64, 64), torch.rand(2, 3, 40, 72)
    with torch.no_grad():
        ref_x, ref_y = net(x), net(y)
    first = backend(x)
    assert backend.fixed_shape is None and not backend.settled  # one image: not worth a compile
    monkeypatch.setattr(backend, 'STATIC_AFTER', 0)
    dynamic = backend(x)
    assert backend.fixed_shape == (1, 3, 64, 64) and backend.settled
    fixed = backend(x)
    assert max_diff(first, ref_x) < 1e-5 and max_diff(dynamic, ref_x) < 1e-5 and max_diff(fixed, ref_x) < 1e-5
    compiled = []
    compile_ = backend._compile
    monkeypatch.setattr(backend, '_compile', lambda shape: (compiled.append(shape), compile_(shape)))
    other = backend(y)
    assert compiled == [None, (2, 3, 40, 72)]  # the dynamic model ran y, then a model for y's shape
    assert max_diff(other, ref_y) < 1e-5 and backend.fixed_shape == (2, 3, 40, 72)


def test_openvino_keeps_the_dynamic_model_when_a_fixed_size_will_not_compile(net, monkeypatch, capsys):
    backend = create_backend(net, 'openvino', log=lambda m: None)
    monkeypatch.setattr(backend, 'STATIC_AFTER', 0)
    compile_ = backend._compile

    def no_fixed_sizes(shape):
        if shape is not None:
            raise RuntimeError('no fixed sizes here')
        compile_(shape)

    monkeypatch.setattr(backend, '_compile', no_fixed_sizes)
    x = torch.rand(1, 3, 48, 48)
    with torch.no_grad():
        ref = net(x)
    for _ in range(3):  # tried once for this run of one size, then left alone
        assert max_diff(backend(x), ref) < 1e-5 and backend.fixed_shape is None
    assert capsys.readouterr().err.count('could not compile for (1, 3, 48, 48)') == 1


def test_auto_takes_the_fastest_runtime_that_agrees(net, fresh_auto, monkeypatch):
    lines = []
    backend = create_backend(net, 'auto', log=lines.append)
    assert backends.backend_name(backend) == backends.AUTO_ORDER[0] == 'openvino'
    assert lines[-1].startswith('backend: openvino (auto; agrees with PyTorch within')
    # One that disagrees is passed over, with the reason, for the next one.
    build = backends.build_backend

    def broken_openvino(net, name, *args, **kwargs):
        backend = build(net, name, *args, **kwargs)
        if name == 'openvino':
            backend.__class__ = type('Broken', (backends.OpenVINOBackend, ), {
                '__call__': lambda self, x: backends.OpenVINOBackend.__call__(self, x) + 1e-3})
        return backend

    monkeypatch.setattr(backends, '_auto_choice', {})
    monkeypatch.setattr(backends, 'build_backend', broken_openvino)
    lines.clear()
    assert backends.backend_name(create_backend(net, 'auto', log=lines.append)) == 'onnxruntime'
    assert any(line.startswith('note: backend openvino passed over: its output differs from PyTorch by 1.0e-03')
               for line in lines)
    # The decision is kept for the process: openvino is not tried again.
    lines.clear()
    assert backends.backend_name(create_backend(net, 'auto', log=lines.append)) == 'onnxruntime'
    assert not any('openvino' in line for line in lines)


def test_auto_stays_on_torch_for_a_run_too_small_to_repay_the_setup(net, fresh_auto):
    lines = []
    assert backends.backend_name(create_backend(net, 'auto', workload=64 * 64, log=lines.append)) == 'torch'
    assert 'would cost more than it saves on 0.0 megapixels' in lines[-1]
    assert backends.backend_name(create_backend(net, 'auto', workload=10**9, log=lines.append)) == 'openvino'
    # The runtimes are for the CPU.
    assert create_backend(net, 'auto', device='cuda', log=lines.append) is net


def test_wrong_requests_name_the_option(net, monkeypatch):
    with pytest.raises(BackendError, match="--backend: unknown backend 'tensorrt'"):
        create_backend(net, 'tensorrt')
    with pytest.raises(BackendError, match='--backend onnxruntime runs on the CPU'):
        create_backend(net, 'onnxruntime', device='cuda')
    with pytest.raises(BackendError, match='--bf16 runs on the openvino backend, not --backend torch'):
        create_backend(net, 'torch', bf16=True)
    monkeypatch.setattr(backends, 'installed', lambda name: name != 'openvino')
    with pytest.raises(BackendError, match=r'--backend openvino: the openvino package .* -e \.\[openvino\]'):
        create_backend(net, 'openvino')


# -- through scripts/inference.py ---------------------------------------------------------------
@pytest.fixture(scope='module')
def photos(tmp_path_factory, net):
    """Two small photographs and the weights of ``net`` as a BasicSR checkpoint."""
    root = tmp_path_factory.mktemp('photos')
    rng = np.random.default_rng(0)
    (root / 'in').mkdir()
    for name, (h, w) in (('a.png', (40, 56)), ('b.png', (72, 64))):
        small = rng.uniform(0, 255, (4, 4, 3)).astype(np.float32)
        cv2.imwrite(str(root / 'in' / name), cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC).clip(0, 255)
                    .round().astype(np.uint8))
    torch.save({'params': net.state_dict()}, root / 'net.pth')
    return root


def run_inference(photos, out, *flags):
    return load_script('inference').main(['--input', str(photos / 'in'), '--output', str(photos / out), '--weights',
                                          str(photos / 'net.pth'), '--device', 'cpu', *flags])


def read(photos, out, name):
    return cv2.imread(str(photos / out / name)).astype(int)


def test_backend_flag_of_the_inference_script(photos, capsys):
    assert run_inference(photos, 'torch', '--backend', 'torch') == 0
    assert run_inference(photos, 'ort', '--backend', 'onnxruntime') == 0
    assert 'backend: onnxruntime (agrees with PyTorch within' in capsys.readouterr().err
    for name in ('a.png', 'b.png'):  # 1e-4 apart before rounding to 8 bits
        assert np.abs(read(photos, 'torch', name) - read(photos, 'ort', name)).max() <= 1


def test_tiled_images_run_on_pytorch_with_a_note(photos, capsys):
    """Tiles need the SK fusions' whole-image statistics, gathered inside the PyTorch module:
    with a runtime backend a tiled image runs on PyTorch, identically, and says so."""
    assert run_inference(photos, 'tiled_torch', '--backend', 'torch', '--tile', '32') == 0
    capsys.readouterr()
    assert run_inference(photos, 'tiled_ov', '--backend', 'openvino', '--tile', '32') == 0
    err = capsys.readouterr().err
    assert 'b.png: tiled on the torch backend' in err
    for name in ('a.png', 'b.png'):
        assert np.array_equal(read(photos, 'tiled_torch', name), read(photos, 'tiled_ov', name))


def test_bad_backend_flags_of_the_inference_script(photos, capsys, monkeypatch):
    with pytest.raises(SystemExit):
        run_inference(photos, 'bad', '--backend', 'tensorrt')
    assert "argument --backend: invalid choice: 'tensorrt'" in capsys.readouterr().err
    monkeypatch.setattr(backends, 'installed', lambda name: name != 'openvino')
    assert run_inference(photos, 'bad', '--backend', 'openvino') == 2
    assert 'error: --backend openvino: the openvino package' in capsys.readouterr().err
    assert not (photos / 'bad').exists()


# -- scripts/benchmark.py -------------------------------------------------------------------------
def test_benchmark_prints_its_tables(monkeypatch, capsys):
    """A tiny run: the columns are there (timings at 32 px mean nothing). The training step,
    unchanged but for its settable batch and size, is left out: it alone takes seconds."""
    monkeypatch.setitem(VARIANTS, 'q', Variant('q', tuple(DEPTHS), 24, 5,
                                               sum(p.numel() for p in GUNet(depths=DEPTHS).parameters())))
    load_script('benchmark').main(['--variants', 'q', '--sizes', '32', '--forms', 'openvino', 'openvino-bf16',
                                   '--repeats', '1', '--op-repeats', '1', '--first-image', '--train-variants'])
    out = capsys.readouterr().out
    assert out.startswith('CPU: ') and 'avx512_bf16' in out and 'load average' in out
    assert ('rounds of each form and the baseline in a process of their own, and of all forms in one process'
            in out)
    for column in ('32² op-mix bound ms (fp32 / bf16)', '32² bound GFLOP/s (fp32 / bf16)', '32² steady ms',
                   '32² speed-up', '32² steady ms, malloc kept', '32² speed-up, malloc kept', '32² all forms ms',
                   '32² all forms speed-up', '32² all forms GFLOP/s', '32² share of bound',
                   '32² first image ms (setup s)', '32² peak MiB', 'max |Δ| vs baseline'):
        assert f'| {column} |' in out
    rows = {line.split(' | ')[1]: line for line in out.splitlines() if line.startswith('| Q | ')}
    # openvino-bf16 only where the CPU has bfloat16 units (the flags line says which).
    assert {'baseline', 'openvino'} <= set(rows)
    assert ('openvino-bf16' in rows) == backends.cpu_has_bf16()
    # Every column of every form is measured (the first image was not asked for).
    assert rows['openvino'].count('–') == 2 and rows['openvino'].count('×') == 3


def test_benchmark_without_malloc_kept(monkeypatch, capsys):
    """``--no-kept-malloc``: each form with the baseline, and all forms in one process, malloc as it
    comes. ``--no-pairs``: all forms in one process only."""
    monkeypatch.setitem(VARIANTS, 'q', Variant('q', tuple(DEPTHS), 24, 5,
                                               sum(p.numel() for p in GUNet(depths=DEPTHS).parameters())))
    load_script('benchmark').main(['--variants', 'q', '--sizes', '32', '--forms', 'deployed', '--repeats', '2',
                                   '--op-repeats', '1', '--first-image', '--train-variants', '--no-kept-malloc'])
    out = capsys.readouterr().out
    assert '| 32² speed-up | 32² all forms ms |' in out and 'malloc kept' not in out
    load_script('benchmark').main(['--variants', 'q', '--sizes', '32', '--forms', 'deployed', '--repeats', '2',
                                   '--op-repeats', '1', '--first-image', '--train-variants', '--no-pairs'])
    out = capsys.readouterr().out
    assert '| form | 32² all forms ms |' in out and 'steady' not in out and 'a process of their own' not in out


def test_benchmark_form_worker(tmp_path):
    """Forms in a process of their own answer for the sizes and images they were given, and a
    process that dies says so with its error instead of hanging the rounds."""
    bench = load_script('benchmark')
    torch.save(GUNet(depths=DEPTHS).state_dict(), tmp_path / 'net.pth')
    torch.save({40: [torch.rand(1, 3, 40, 40), torch.rand(1, 3, 40, 40)]}, tmp_path / 'inputs.pt')
    config = {'base_dim': 24, 'depths': DEPTHS, 'kernel_size': 5}
    worker = bench.FormWorker(['baseline', 'openvino'], config, str(tmp_path / 'net.pth'), None,
                              str(tmp_path / 'inputs.pt'), 1)
    try:
        worker.ready()
        worker.settle(40)
        times = bench.take_turns({k: worker.timer(40, k) for k in ('baseline', 'openvino')}, 3, 2, warmup=1)
        assert all(len(t) == 3 and all(s > 0 for s in t) for t in times.values())
        with pytest.raises(RuntimeError, match='the process timing baseline and openvino ended'):
            worker.timer(41, 'openvino')(0)  # no such size: the worker's KeyError ends it
    finally:
        worker.close()
    assert worker.process.returncode is not None


def test_benchmark_first_image_probe(tmp_path):
    """What the fresh process of the first-image column runs, here in-process."""
    bench = load_script('benchmark')
    torch.save(GUNet(depths=DEPTHS).state_dict(), tmp_path / 'net.pth')
    config = {'base_dim': 24, 'depths': DEPTHS, 'kernel_size': 5}
    setup, first, peak = bench._first_image_worker('openvino', config, str(tmp_path / 'net.pth'), None, 40, 1)
    assert setup > 0 and first > 0 and peak >= 0


def test_benchmark_training_worker(monkeypatch):
    """What the training step's own process runs, here in-process (malloc left as it is): both
    forms time a step and agree on the loss and gradients."""
    monkeypatch.setitem(VARIANTS, 'q', Variant('q', tuple(DEPTHS), 24, 5,
                                               sum(p.numel() for p in GUNet(depths=DEPTHS).parameters())))
    bench = load_script('benchmark')
    args = bench.build_parser().parse_args(['--train-batch', '2', '--train-size', '32', '--train-repeats', '1',
                                            '--train-allocator', 'default'])
    times, (loss_diff, grad_diff) = bench._train_worker('q', args)
    assert times['base'] > 0 and times['ours'] > 0
    assert loss_diff < 1e-6 and grad_diff < 1e-5
    assert ('ours-bf16' in times) == cpu_has_bf16_units()
