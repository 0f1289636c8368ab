"""The deployed (BatchNorm-folded, in-place) form computes the same function."""
import copy

import pytest
import torch
from torch import nn

import gunet_arch  # noqa: F401
from gunet_arch.archs import GUNet


def randomise_bn(net, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) * 2 + 0.2)
                m.weight.copy_(torch.randn(m.num_features, generator=g))
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.3)


@pytest.mark.parametrize('variant,size', [('t', (64, 48)), ('s', (45, 77))])
def test_deploy_matches_eval_model(variant, size):
    torch.manual_seed(1)
    net = GUNet(variant=variant).eval()
    randomise_bn(net)
    deployed = copy.deepcopy(net).deploy()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in deployed.modules())
    x = torch.rand(2, 3, *size)
    with torch.no_grad():
        assert (deployed(x) - net(x)).abs().max().item() < 1e-4


def test_deploy_refuses_training_mode():
    net = GUNet(depths=[1, 1, 1, 1, 1, 1, 1])
    with pytest.raises(RuntimeError, match='eval'):
        net.deploy()


def test_deploy_is_idempotent_and_in_place():
    net = GUNet(depths=[1, 1, 1, 1, 1, 1, 1]).eval()
    randomise_bn(net)
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        before = net(x)
    assert net.deploy() is net and net.deploy() is net
    with torch.no_grad():
        assert (net(x) - before).abs().max().item() < 1e-4


def test_deployed_model_still_differentiable_with_respect_to_input():
    # The in-place fast path is for inference only; gradients w.r.t. the image still work.
    net = GUNet(depths=[1, 1, 1, 1, 1, 1, 1]).eval().deploy()
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    net(x).mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()

