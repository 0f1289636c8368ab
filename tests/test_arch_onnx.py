"""ONNX export parity: scripts/export_onnx.py (the deployed, BatchNorm-folded graph) run by
onnxruntime against the PyTorch eval model. onnxruntime and onnxscript come with the deploy
extra, which `make test` installs: a missing one is an error here, not a skip."""
import onnxruntime as ort
import torch
from conftest import EPS_SENSITIVE_VAR, load_script, randomise_batch_norms

import gunet_arch  # noqa: F401
from gunet_arch.archs import GUNet


def test_export_script_matches_pytorch_on_two_sizes(tmp_path, capsys):
    """Random BatchNorm statistics with variances near eps, so that a fold with a wrong or
    missing eps moves the output by several 1e-6 (measured: 6e-6 with eps forgotten), while the
    right graph agrees with PyTorch to float32 rounding (measured: 1.2e-7). The export runs
    in-process (the script's main): an interpreter start would add seconds and test nothing."""
    torch.manual_seed(0)
    net = randomise_batch_norms(GUNet(depths=[1, 1, 1, 1, 1, 1, 1]).eval(), var_range=EPS_SENSITIVE_VAR)
    weights = tmp_path / 'net.pth'
    torch.save({'params': net.state_dict()}, weights)
    out = tmp_path / 'gunet.onnx'
    assert load_script('export_onnx').main(['--weights', str(weights), '--output', str(out)]) == 0
    assert f'wrote {out}' in capsys.readouterr().out
    session = ort.InferenceSession(str(out), providers=['CPUExecutionProvider'])
    for shape in ((1, 3, 64, 64), (2, 3, 77, 101)):
        x = torch.rand(shape)
        with torch.no_grad():
            ref = net(x).numpy()
        got = session.run(None, {'image': x.numpy()})[0]
        assert got.shape == ref.shape
        assert abs(ref - x.numpy()).max() > 0.1  # a real residual, not a near-identity network
        assert abs(got - ref).max() < 1e-6


def test_the_trace_is_kept_per_architecture_and_refuses_other_weights():
    """The export above left its trace in this process (and the cache folder): another model of
    the same architecture reuses it, while weights of another architecture do not fit it."""
    from gunet_arch.export import _graphs, _with_weights, deployed_graph, graph_is_cached, graph_key

    same = GUNet(depths=[1, 1, 1, 1, 1, 1, 1]).eval().deploy()
    deployed_graph(same)  # no export after the test above
    assert graph_is_cached(same)
    trace = _graphs[graph_key(same)]
    assert _with_weights(trace, same.state_dict()) is not None
    other = GUNet(depths=[1, 1, 1, 2, 1, 1, 1]).eval().deploy()
    assert graph_key(other) != graph_key(same)
    assert _with_weights(trace, other.state_dict()) is None


def test_the_cache_folder_keeps_the_most_recently_used_graphs(tmp_path, monkeypatch):
    """Each upgrade traces anew, so the folder is pruned to MAX_CACHED_GRAPHS when a graph is
    added: the least recently used go (a read counts as a use), other files stay."""
    import os

    from gunet_arch import export

    monkeypatch.setenv(export.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(export, '_graphs', {})
    net = GUNet(depths=[1, 1, 1, 1, 1, 1, 1]).eval().deploy()
    key = export.graph_key(net)
    old = [tmp_path / f'gunet-{i:032x}.onnx' for i in range(export.MAX_CACHED_GRAPHS + 2)]
    for age, path in enumerate(old):
        path.write_bytes(b'stale')
        os.utime(path, (1e9 - age, 1e9 - age))  # old[0] is the most recent of them
    other = tmp_path / 'notes.txt'
    other.write_text('not a graph')
    os.utime(other, (1, 1))

    export.deployed_graph(net)  # traces (nothing cached for this key) and writes its graph
    kept = sorted(p.name for p in tmp_path.glob('gunet-*.onnx'))
    expected = sorted([f'gunet-{key}.onnx'] + [p.name for p in old[:export.MAX_CACHED_GRAPHS - 1]])
    assert kept == expected and other.exists()

    # A read marks a graph as used: read in another process (this one forgets its trace), the
    # graph is now the most recent, and the next write prunes an older one instead.
    cached = tmp_path / f'gunet-{key}.onnx'
    os.utime(cached, (1, 1))
    monkeypatch.setattr(export, '_graphs', {})
    export.deployed_graph(net)
    assert cached.stat().st_mtime > 1e9
    export.prune_cache(str(tmp_path), keep=2)
    assert sorted(p.name for p in tmp_path.glob('gunet-*.onnx')) == sorted([cached.name, old[0].name])
    assert other.exists()
