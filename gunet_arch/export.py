"""ONNX export of the deployed gUNet with dynamic batch, height and width.

``export_onnx`` writes the graph to a file (scripts/export_onnx.py). ``deployed_graph`` gives
the same graph, as bytes, to the runtimes of ``gunet_arch.tools.backends``: the export traces
the network with symbolic image sizes, which takes 5-20 s on a 2-core CPU whatever the weights,
so the traced graph is kept per architecture (in this process and in a cache folder) and each
model's weights are written into a copy of it by name.
"""
import copy
import functools
import hashlib
import json
import os
import re
import sys

import torch

from .atomic import atomic_write_bytes

# Below this side length the padding switches from reflect to replicate, a branch an exported
# graph cannot hold; the exported model is specified for sides >= this.
MIN_EXPORT_SIDE = 24
DEFAULT_OPSET = 18
CACHE_ENV = 'GUNET_CACHE_DIR'
# Graphs kept in the cache folder, the most recently used first. The key holds the versions of
# torch, onnx, onnxscript and of this package's network code, so every upgrade starts new
# traces (6-20 MB each) and the old ones would otherwise stay for good.
MAX_CACHED_GRAPHS = 8
_CACHED_NAME = re.compile(r'gunet-[0-9a-f]{32}\.onnx')

_graphs = {}  # graph key -> ONNX bytes of the traced graph (weights of whichever model traced it)


def _deployed(net):
    """``net`` in its deployed form: itself when it is deployed, else a deployed copy."""
    if getattr(net, 'deployed', False):
        return net.eval()
    return copy.deepcopy(net).eval().deploy()


def _export_program(net, opset, example_size=(61, 83)):
    """torch.onnx's program of deployed ``net``: input ``image``, output ``dehazed``.

    The example size is deliberately not a multiple of 8 so that the padding is traced as a
    function of the input size rather than specialised away; its batch of 2 keeps the batch
    dimension symbolic (the tracer specialises a size of 1)."""
    side = max(MIN_EXPORT_SIDE, net.min_size)
    x = torch.rand(2, 3, max(side, example_size[0]), max(side, example_size[1]))
    dims = {
        0: torch.export.Dim('batch', min=1, max=1024),
        2: torch.export.Dim('height', min=side, max=16384),
        3: torch.export.Dim('width', min=side, max=16384),
    }
    with torch.no_grad():
        program = torch.onnx.export(
            net, (x, ),
            None,
            input_names=['image'],
            output_names=['dehazed'],
            dynamic_shapes={'x': dims},
            opset_version=opset,
            dynamo=True,
            optimize=False,
            verbose=False)
    if program is None:
        raise RuntimeError('ONNX export produced no program')
    return program


def export_onnx(net, path, opset=DEFAULT_OPSET):
    """Export ``net`` (a GUNet, deployed first if it is not) to ``path``.

    The graph takes ``image`` (N x 3 x H x W, [0, 1]) and returns ``dehazed`` (same shape,
    unclamped), padding and cropping inside as the PyTorch model does, for any H, W >= 24. It is
    ``deployed_graph`` run through onnxscript's optimiser, as torch.onnx.export optimises."""
    net = net.eval()
    if not getattr(net, 'deployed', False):
        net.deploy()
    atomic_write_bytes(path, deployed_graph(net, opset, optimize=True))
    return path


# -- the graph the runtimes run -------------------------------------------------------------------
def cache_dir():
    """Where traced graphs are kept: $GUNET_CACHE_DIR, else $XDG_CACHE_HOME/gunet-basicsr, else
    ~/.cache/gunet-basicsr. An empty GUNET_CACHE_DIR keeps them in this process only."""
    if CACHE_ENV in os.environ:
        return os.environ[CACHE_ENV] or None
    base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
    return os.path.join(base, 'gunet-basicsr')


def graph_key(net, opset=DEFAULT_OPSET):
    """What the traced graph depends on: the architecture, the opset, the exporter's versions
    and the source of the network, its deployed form and this exporter."""
    import onnx
    import onnxscript

    from .archs import deploy, gunet_arch

    h = hashlib.sha256(json.dumps({
        'base_dim': net.base_dim, 'depths': list(net.depths), 'kernel_size': net.kernel_size, 'opset': opset,
        'torch': torch.__version__, 'onnx': onnx.__version__, 'onnxscript': onnxscript.__version__,
    }, sort_keys=True).encode())
    h.update(_source_digest(gunet_arch, deploy, sys.modules[__name__]))
    return h.hexdigest()[:32]


@functools.lru_cache(maxsize=None)
def _source_digest(*modules):
    """Of the source files as this process first read them (close to the code it runs, even when
    the files are edited while it runs)."""
    h = hashlib.sha256()
    for module in modules:
        with open(module.__file__, 'rb') as f:
            h.update(f.read())
    return h.digest()


def _with_weights(graph, state_dict):
    """``graph`` (ONNX bytes) with every parameter of ``state_dict`` written into the initializer
    of the same name; None when the graph does not have them all, shape for shape."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load_from_string(graph)
    inits = {i.name: i for i in model.graph.initializer}
    for name, value in state_dict.items():
        init = inits.get(name)
        array = value.detach().cpu().contiguous().numpy()
        if init is None or tuple(init.dims) != array.shape or init.data_type != onnx.TensorProto.FLOAT:
            return None
        init.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(array, np.float32), name))
    return model.SerializeToString()


def _read_cached(path):
    try:
        with open(path, 'rb') as f:
            return f.read()
    except OSError:
        return None


def deployed_graph(net, opset=DEFAULT_OPSET, optimize=False, log=None):
    """The ONNX graph (bytes) of ``net``'s deployed form with ``net``'s weights.

    The trace is taken without torch.onnx's optimiser, which folds the weights it sees into the
    graph (a zero bias drops out of its Conv) and so would tie the trace to one set of weights;
    ``optimize`` runs that optimiser (onnxscript's) once the weights are in, as export_onnx
    does. The runtimes fold constants themselves when they load a graph.

    The trace is reused when this process or the cache folder (``cache_dir``) has one for the
    same ``graph_key``; otherwise the export runs once (``log`` is told) and its trace is kept.
    A cached file that is unreadable or does not fit is replaced by a new export."""
    net = _deployed(net)
    state = net.state_dict()
    key = graph_key(net, opset)
    folder = cache_dir()
    path = os.path.join(folder, f'gunet-{key}.onnx') if folder else None

    def sources():  # (from the file?, trace): the file is read only if this process has none that fits
        yield False, _graphs.get(key)
        if path:
            yield True, _read_cached(path)

    for from_file, source in sources():
        if source is not None:
            try:
                graph = _with_weights(source, state)
            except Exception:  # noqa: BLE001 - a damaged cache file: export anew
                graph = None
            if graph is not None:
                _graphs[key] = source
                if from_file:
                    _mark_used(path)
                elif path and not os.path.isfile(path):
                    _write_cache(path, source, log)
                return _optimized(graph) if optimize else graph
    if log:
        log('exporting the deployed graph to ONNX (once per architecture; it is cached)')
    graph = _export_program(net, opset).model_proto.SerializeToString()
    _graphs[key] = graph
    if path:
        _write_cache(path, graph, log)
    return _optimized(graph) if optimize else graph


def _optimized(graph):
    import onnx
    import onnxscript

    return onnxscript.optimizer.optimize(onnx.load_from_string(graph)).SerializeToString()


def _write_cache(path, graph, log):
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        atomic_write_bytes(path, graph)
    except OSError as err:
        if log:
            log(f'note: cannot cache the ONNX graph in {os.path.dirname(path)} ({err}); '
                'it is kept for this process only')
        return
    prune_cache(os.path.dirname(path))


def _mark_used(path):
    """Record a read of a cached graph in its modification time (access times are often not
    kept), which is what ``prune_cache`` orders by."""
    try:
        os.utime(path)
    except OSError:
        pass


def prune_cache(folder, keep=MAX_CACHED_GRAPHS):
    """Delete all but the ``keep`` most recently used graphs in ``folder``. Only files named as
    ``deployed_graph`` names them are touched; one that another process removes first is skipped."""
    try:
        names = [n for n in os.listdir(folder) if _CACHED_NAME.fullmatch(n)]
    except OSError:
        return
    stamped = []
    for name in names:
        try:
            stamped.append((os.stat(os.path.join(folder, name)).st_mtime, name))
        except OSError:
            continue
    for _, name in sorted(stamped, reverse=True)[keep:]:
        try:
            os.remove(os.path.join(folder, name))
        except OSError:
            pass


def graph_is_cached(net, opset=DEFAULT_OPSET):
    """Whether ``deployed_graph`` would find a trace for ``net`` without exporting."""
    key = graph_key(net, opset)
    folder = cache_dir()
    return key in _graphs or bool(folder and os.path.isfile(os.path.join(folder, f'gunet-{key}.onnx')))
