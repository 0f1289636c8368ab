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
