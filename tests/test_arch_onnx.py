"""ONNX export parity (runs when the deploy extra is installed)."""
import os
import subprocess
import sys

import pytest
import torch

ort = pytest.importorskip('onnxruntime')
pytest.importorskip('onnxscript')

import gunet_arch  # noqa: E402,F401
from gunet_arch.archs import GUNet  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_export_script_matches_pytorch_on_two_sizes(tmp_path):
    torch.manual_seed(0)
    net = GUNet(depths=[1, 1, 1, 1, 1, 1, 1]).eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 1.5)
    weights = tmp_path / 'net.pth'
    torch.save({'params': net.state_dict()}, weights)
    out = tmp_path / 'gunet.onnx'
    res = subprocess.run([sys.executable, os.path.join(ROOT, 'scripts', 'export_onnx.py'), '--weights', str(weights),
                          '--output', str(out)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    session = ort.InferenceSession(str(out), providers=['CPUExecutionProvider'])
    for shape in ((1, 3, 64, 64), (2, 3, 77, 101)):
        x = torch.rand(shape)
        with torch.no_grad():
            ref = net(x).numpy()
        got = session.run(None, {'image': x.numpy()})[0]
        assert got.shape == ref.shape
        assert abs(got - ref).max() < 1e-4
