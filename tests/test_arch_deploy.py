"""The deployed (BatchNorm-folded, in-place) form computes the same function."""
import copy

import pytest
import torch
from conftest import EPS_SENSITIVE_VAR, randomise_batch_norms
from torch import nn

import gunet_arch  # noqa: F401
from gunet_arch.archs import GUNet


def trained_looking(net, seed=0):
    """Random BatchNorm statistics with running variances near eps (see EPS_SENSITIVE_VAR)."""
    return randomise_batch_norms(net, seed=seed, var_range=EPS_SENSITIVE_VAR)


@pytest.mark.parametrize('variant,size', [('t', (64, 48)), ('s', (45, 77))])
def test_deploy_matches_eval_model(variant, size):
    torch.manual_seed(1)
    net = trained_looking(GUNet(variant=variant).eval())
    deployed = copy.deepcopy(net).deploy()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in deployed.modules())
    assert deployed.deployed and any(type(m).__name__ == 'DeployedBlock' for m in deployed.modules())
    x = torch.rand(2, 3, *size)
    with torch.no_grad():
        expected = net(x)
        assert (expected - x).abs().max() > 0.1  # a real residual, not a near-identity network
        assert (deployed(x) - expected).abs().max().item() < 1e-6


def test_the_deploy_comparison_would_see_a_wrong_eps():
    """The network above is eps-sensitive: folding with eps 0 (eps forgotten) or 1e-4 moves the
    output by far more than the 1e-6 the comparison allows."""
    torch.manual_seed(1)
    net = trained_looking(GUNet(variant='t').eval())
    x = torch.rand(2, 3, 64, 48)
    with torch.no_grad():
        expected = net(x)
        for eps in (0.0, 1e-4):
            wrong = copy.deepcopy(net)
            for m in wrong.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eps = eps
            assert (wrong.deploy()(x) - expected).abs().max().item() > 1e-5


def test_deploy_refuses_training_mode():
    net = GUNet(depths=[1, 1, 1, 1, 1, 1, 1])
    with pytest.raises(RuntimeError, match='eval'):
        net.deploy()


def test_deploy_is_idempotent_and_in_place():
    net = trained_looking(GUNet(depths=[1, 1, 1, 1, 1, 1, 1]).eval())
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        before = net(x)
    assert net.deploy() is net and net.deploy() is net  # a second deploy must not fold again
    with torch.no_grad():
        assert (net(x) - before).abs().max().item() < 1e-6


def test_deployed_model_still_differentiable_with_respect_to_input():
    # The in-place fast path is for inference only; gradients w.r.t. the image still work.
    net = GUNet(depths=[1, 1, 1, 1, 1, 1, 1]).eval().deploy()
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    net(x).mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()

