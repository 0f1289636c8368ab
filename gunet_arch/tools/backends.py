"""The runtimes that can run a deployed gUNet: PyTorch, ONNX Runtime and OpenVINO.

Each backend runs the same network: the deployed model itself (``torch``), or its ONNX graph
(``gunet_arch.export.deployed_graph``, dynamic batch, height and width, so a new image size needs
no new export or compile) run by ``onnxruntime`` or ``openvino`` on the CPU (OpenVINO also
compiles for a fixed size once one size has run for a while, see ``OpenVINOBackend``). A
backend is a callable like the network: N x 3 x H x W float32 in [0, 1] in, the unclamped
output out; the ``torch`` backend is the network itself.

``auto`` takes the fastest installed backend (OpenVINO, then ONNX Runtime, then PyTorch, the
order scripts/benchmark.py measures) whose output agrees with PyTorch within 1e-4 on a probe
image, and says which. Setting a runtime up costs time once: the ONNX export (5-20 s on a 2-core
CPU, kept per architecture in the cache folder, see ``gunet_arch.export.cache_dir``) and the
runtime's compile (about 0.5 s). ``auto`` pays that only for a run with enough pixels to win it
back (``workload``), and says so when it does not.

Tiled images: the tiled path (``gunet_arch.tools.inference.tiled_forward``) gathers the SK
fusions' whole-image statistics by replacing the fusions' pooling inside the PyTorch module,
which an ONNX graph does not expose; a runtime backend therefore hands tiled images to its
PyTorch model (``tiling_module``), and the inference code prints a note when that happens.

``bf16``: OpenVINO's bfloat16 inference precision (AVX512-BF16 / AMX), 1.6-1.9x its float32
speed where measured (scripts/benchmark.py), with outputs within about 2e-3 of float32. On CPUs
with those units OpenVINO would pick bfloat16 by itself; float32 is therefore asked for
explicitly unless ``bf16``. PyTorch's CPU bfloat16 (autocast) measured between 8% slower and 16%
faster than its float32, always slower than OpenVINO's float32, and is not offered.
"""
import importlib.util
import sys
import time

import numpy as np
import torch

BACKENDS = ('torch', 'onnxruntime', 'openvino')
BACKEND_CHOICES = ('auto', ) + BACKENDS
AUTO_ORDER = ('openvino', 'onnxruntime', 'torch')  # fastest first (scripts/benchmark.py)
TOLERANCE = 1e-4  # max |difference| from PyTorch float32 for a backend to be used
BF16_TOLERANCE = 2e-2  # the same for bfloat16 (measured: 1e-3 to 2.4e-3); a broken graph is off by >0.1
PROBE_SIZE = (72, 88)  # not a multiple of 8: the probe goes through the padding too
# auto sets a runtime up only for runs of at least this many pixels. Measured on a busy 2-core
# Xeon: the export took 10-80 s, OpenVINO's compile about 1 s, and OpenVINO saved 1.4 s or more
# per megapixel over the deployed PyTorch model in float32 (gUNet-T and -S at 256² and 512²).
AUTO_MIN_PIXELS_EXPORT = 40_000_000
AUTO_MIN_PIXELS_CACHED = 2_000_000
PACKAGES = {'onnxruntime': 'onnxruntime', 'openvino': 'openvino'}
EXTRAS = {'onnxruntime': 'deploy', 'openvino': 'openvino'}


class BackendError(ValueError):
    """A backend that was asked for and cannot run; the message names the option at fault."""


def _stderr(message):
    print(message, file=sys.stderr, flush=True)


def installed(name):
    """Whether backend ``name`` can be imported (torch always can)."""
    if name == 'torch':
        return True
    return importlib.util.find_spec(PACKAGES[name]) is not None and importlib.util.find_spec('onnxscript') is not None


def cpu_has_bf16():
    """Whether OpenVINO's CPU plugin runs bfloat16 natively here (AVX512-BF16 or AMX)."""
    import openvino as ov

    return 'BF16' in ov.Core().get_property('CPU', 'OPTIMIZATION_CAPABILITIES')


class Backend:
    """A runtime running a gUNet: call it like the network. ``tiling_module`` is the PyTorch
    model that tiled images run on (see the module doc); ``tiles_itself`` (True for a network
    that is its own backend) says whether that is this backend."""
    name = None
    tiles_itself = False

    def __init__(self, net, bf16=False):
        self.tiling_module = net
        self.bf16 = bool(bf16)

    # What the inference code reads off a network (MemoryModel, the tiling).
    @property
    def base_dim(self):
        return self.tiling_module.base_dim

    @property
    def pad_multiple(self):
        return self.tiling_module.pad_multiple

    @property
    def min_size(self):
        return self.tiling_module.min_size

    def eval(self):
        return self

    def __call__(self, x):
        raise NotImplementedError

    def __repr__(self):
        return f'{self.__class__.__name__}({self.describe()})'

    def describe(self):
        return self.name + (' bfloat16' if self.bf16 else '')


def _as_array(x):
    return np.ascontiguousarray(x.detach().to('cpu', torch.float32).numpy())


def onnxruntime_options(threads=None):
    """ONNX Runtime's session options as OnnxRuntimeBackend runs a graph (scripts/benchmark.py
    runs its single convolutions with them too)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.add_session_config_entry('session.intra_op.allow_spinning', '0')
    return options


class OnnxRuntimeBackend(Backend):
    """ONNX Runtime's CPU provider on the deployed graph, all graph optimisations on, as many
    intra-op threads as PyTorch uses (OMP_NUM_THREADS / torch.set_num_threads rule both), and
    those threads sleeping between runs. By default they spin for a while after each run, taking
    the cores from whatever comes next: the next image's decoding, or, in one process with other
    runtimes, their work (OpenVINO run right after ONNX Runtime measured 52 instead of 39 ms for
    gUNet-T at 256² on a 2-core Xeon; ONNX Runtime's own time did not change)."""
    name = 'onnxruntime'

    def __init__(self, net, graph, threads=None):
        super().__init__(net)
        import onnxruntime as ort

        self.session = ort.InferenceSession(graph, onnxruntime_options(threads), providers=['CPUExecutionProvider'])

    def __call__(self, x):
        return torch.from_numpy(self.session.run(None, {'image': _as_array(x)})[0])


class OpenVINOBackend(Backend):
    """OpenVINO's CPU plugin on the deployed graph: latency hint, one stream, as many threads as
    PyTorch uses, and the inference precision stated (f32, or bf16 with ``bf16``).

    It is compiled first for dynamic batch, height and width, so any new size runs at once.
    OpenVINO plans a fixed shape better: compiled for one shape, gUNet ran 10-22% faster (T and S
    at 256² and 512², 2-core Xeon) and its forward held half the memory. Once one shape has run
    in the dynamic model for ``STATIC_AFTER`` times as long as that model took to compile (about
    0.5 s), it is compiled for that shape (about 0.25 s); another shape brings the dynamic model
    back (its compile again). A folder of same-size photos thus runs at the fixed-shape speed
    after its first seconds, and alternating sizes cost at most 1/STATIC_AFTER extra in compiles.
    Only one compiled model is held at a time: each keeps the buffers of the largest input it
    ran, and ``--max-memory`` counts one forward."""
    name = 'openvino'
    STATIC_AFTER = 4

    def __init__(self, net, graph, bf16=False, threads=None):
        super().__init__(net, bf16)
        import openvino as ov

        self._core = ov.Core()
        self._config = {
            'INFERENCE_PRECISION_HINT': 'bf16' if bf16 else 'f32',
            'PERFORMANCE_HINT': 'LATENCY',
            'NUM_STREAMS': '1',
            'INFERENCE_NUM_THREADS': str(threads or torch.get_num_threads()),
        }
        self._source = self._core.read_model(graph)
        t0 = time.perf_counter()
        self._compile(None)
        self._switch_s = time.perf_counter() - t0
        self._run_shape, self._run_s = None, 0.0  # the current run of one shape in the dynamic model

    def _compile(self, shape):
        """The dynamic model (``shape`` None) or one for ``shape``, after dropping the current one."""
        self.compiled = self.request = None
        model = self._source
        if shape is not None:
            model = model.clone()
            model.reshape(list(shape))
        self.compiled = self._core.compile_model(model, 'CPU', self._config)
        self.request = self.compiled.create_infer_request()
        self.fixed_shape = shape

    @property
    def settled(self):
        """Whether the last input's shape runs in a model compiled for it (steady state)."""
        return self.fixed_shape is not None and self.fixed_shape == self._run_shape

    def __call__(self, x):
        x = _as_array(x)
        shape = tuple(x.shape)
        if self.fixed_shape is not None and shape != self.fixed_shape:
            self._compile(None)
        if shape != self._run_shape:
            self._run_shape, self._run_s = shape, 0.0
        t0 = time.perf_counter()
        # share_outputs=False (the default): the result is a copy, not the request's buffer
        # that the next image overwrites.
        out = torch.from_numpy(self.request.infer({0: x})[0])
        if self.fixed_shape is None:
            self._run_s += time.perf_counter() - t0
            if self._run_s >= self.STATIC_AFTER * self._switch_s:
                try:
                    self._compile(shape)
                except RuntimeError as err:  # keep the dynamic model, which just ran this shape
                    _stderr(f'note: OpenVINO could not compile for {shape} ({err}); keeping the dynamic model')
                    self._compile(None)
                    self._run_s = float('-inf')  # not again for this run of one shape
        return out


def _probe(net):
    g = torch.Generator().manual_seed(0)
    h, w = max(PROBE_SIZE[0], net.min_size), max(PROBE_SIZE[1], net.min_size)
    return torch.rand(1, 3, h, w, generator=g)


def agreement(backend, net, x=None):
    """max |backend(x) - net(x)|, ``net`` in PyTorch float32 (x: a probe image by default)."""
    x = _probe(net) if x is None else x
    with torch.no_grad():
        ref = net(x).float()
        got = backend(x).float()
    if got.shape != ref.shape:
        return float('inf')
    return float((got - ref).abs().max())


def backend_name(backend):
    """'torch' for a network, the runtime's name for a Backend."""
    return getattr(backend, 'name', 'torch')


def build_backend(net, name, bf16=False, threads=None, log=_stderr):
    """Backend ``name`` for the eval-mode GUNet ``net`` (deployed or not), unchecked."""
    if name == 'torch':
        return net
    from ..export import deployed_graph

    graph = deployed_graph(net, log=log)
    if name == 'onnxruntime':
        return OnnxRuntimeBackend(net, graph, threads)
    return OpenVINOBackend(net, graph, bf16, threads)


_auto_choice = {}  # (graph key, bf16, threads) -> backend name that auto chose in this process


def _check_request(name, device, bf16):
    """Refuse, naming the option, what cannot run: unknown names, runtimes that are not
    installed, CPU runtimes on CUDA, bfloat16 where it is not offered."""
    if name not in BACKEND_CHOICES:
        raise BackendError(f'--backend: unknown backend {name!r} (choose from {", ".join(BACKEND_CHOICES)})')
    kind = torch.device(device).type
    if kind != 'cpu' and name not in ('auto', 'torch'):
        raise BackendError(f'--backend {name} runs on the CPU; use --device cpu, or --backend torch on {kind}')
    if bf16 and kind != 'cpu':
        raise BackendError(f'--bf16 is for the CPU (OpenVINO), not --device {kind}' +
                           ('; on CUDA use --fp16' if kind == 'cuda' else ''))
    if name in PACKAGES and not installed(name):
        raise BackendError(f'--backend {name}: the {PACKAGES[name]} package (and onnxscript, for the export) is '
                           f'not installed: pip install -e .[{EXTRAS[name]}]')
    if bf16 and name in ('torch', 'onnxruntime'):
        why = ('PyTorch\'s CPU bfloat16 measured slower than OpenVINO\'s float32' if name == 'torch' else
               'ONNX Runtime\'s CPU provider has no bfloat16 convolutions')
        raise BackendError(f'--bf16 runs on the openvino backend, not --backend {name} ({why})')
    if bf16 and name in ('auto', 'openvino'):
        if not installed('openvino'):
            raise BackendError('--bf16 needs OpenVINO: pip install -e .[openvino]')
        if not cpu_has_bf16():
            raise BackendError('--bf16: this CPU has no bfloat16 units (AVX512-BF16 or AMX) that OpenVINO uses')


def _checked(net, name, bf16, threads, log):
    """``(backend, difference)``, or ``(None, reason)`` when it cannot be built or disagrees."""
    tolerance = BF16_TOLERANCE if bf16 else TOLERANCE
    try:
        backend = build_backend(net, name, bf16 and name == 'openvino', threads, log)
        diff = agreement(backend, net)
    except Exception as err:  # noqa: BLE001 - a runtime that fails to load is reported, not fatal
        return None, f'{err.__class__.__name__}: {err}'
    if not diff <= tolerance:
        return None, f'its output differs from PyTorch by {diff:.1e} (> {tolerance:g})'
    return backend, diff


def create_backend(net, name='auto', device='cpu', bf16=False, workload=None, threads=None, log=_stderr):
    """The backend to run ``net`` (an eval-mode GUNet) with, ``name`` one of BACKEND_CHOICES.

    Every backend but torch is checked against PyTorch on a probe image first; one that
    disagrees is refused (BackendError) when asked for by name, and passed over by ``auto``.
    ``workload``: the pixels this run will process, if known (``auto`` sets a runtime up only
    when that repays the setup, see the module doc; None counts as a large run). ``log``
    receives the lines to show (which backend, and why)."""
    _check_request(name, device, bf16)
    if name == 'torch' or torch.device(device).type != 'cpu':
        return net
    if name != 'auto':
        backend, diff = _checked(net, name, bf16, threads, log)
        if backend is None:
            raise BackendError(f'--backend {name}: {diff}')
        log(f'backend: {backend.describe()} (agrees with PyTorch within {diff:.1e} on a probe image)')
        return backend
    return _auto(net, bf16, workload, threads, log)


def _auto(net, bf16, workload, threads, log):
    from ..export import graph_is_cached, graph_key

    candidates = [n for n in AUTO_ORDER if n != 'torch' and installed(n)]
    if bf16:
        candidates = ['openvino']
    if not candidates:
        log('backend: torch (auto; no other runtime installed: pip install -e .[deploy,openvino])')
        return net
    key = (graph_key(net), bf16, threads or torch.get_num_threads())
    chosen = _auto_choice.get(key)
    if chosen == 'torch':
        return net
    cached = graph_is_cached(net)
    need = AUTO_MIN_PIXELS_CACHED if cached else AUTO_MIN_PIXELS_EXPORT
    if chosen is None and workload is not None and workload < need and not bf16:
        how = 'compiling' if cached else 'exporting the graph (once per architecture) and compiling'
        log(f'backend: torch (auto; {how} for {candidates[0]} would cost more than it saves on '
            f'{workload / 1e6:.1f} megapixels; --backend {candidates[0]} uses it anyway)')
        return net
    for name in [chosen] if chosen else candidates:
        backend, diff = _checked(net, name, bf16, threads, log)
        if backend is not None:
            _auto_choice[key] = name
            log(f'backend: {backend.describe()} (auto; agrees with PyTorch within {diff:.1e} on a probe image)')
            return backend
        log(f'note: backend {name} passed over: {diff}')
    if bf16:
        raise BackendError('--bf16: the openvino backend could not be used (see the note above)')
    _auto_choice[key] = 'torch'
    log('backend: torch (auto)')
    return net


def workload_pixels(paths, max_pixels=None):
    """The pixels of the images at ``paths`` as their headers tell. Unreadable ones count 0, and
    so do those over ``max_pixels`` (refused before decoding): a decompression bomb's claimed
    size must not make a run look big enough to set up a runtime."""
    from .image_io import peek_size

    total = 0
    for path in paths:
        size = peek_size(path)
        if size and not (max_pixels and size[0] * size[1] > max_pixels):
            total += size[0] * size[1]
    return total
