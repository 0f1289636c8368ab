"""GUNet: exact layout, parameter counts, registry build, sizes, bad input."""
import math

import pytest
import torch
import yaml
from torch import nn

import gunet_arch  # noqa: F401  (registers GUNet)
from gunet_arch.archs import GUNet

OFFICIAL_PARAMS = {'t': 844_899, 's': 1_477_059, 'b': 2_741_379, 'd': 5_270_019}


@pytest.mark.parametrize('variant', 'tsbd')
def test_parameter_counts_match_the_official_model(variant):
    net = GUNet(variant=variant)
    assert sum(p.numel() for p in net.parameters()) == OFFICIAL_PARAMS[variant]


def expected_keys(depths, base_dim=24):
    """The official state-dict layout, written out from its description."""
    keys = ['inconv.proj.weight', 'inconv.proj.bias']
    half = len(depths) // 2
    for i, depth in enumerate(depths):
        for j in range(depth):
            p = f'layers.{i}.blocks.{j}.'
            keys += [p + f'norm.{n}' for n in ('weight', 'bias', 'running_mean', 'running_var', 'num_batches_tracked')]
            for conv in ('Wv.0', 'Wv.1', 'Wg.0', 'proj'):
                keys += [p + f'conv.{conv}.weight', p + f'conv.{conv}.bias']
    for i in range(half):
        keys += [f'downs.{i}.proj.weight', f'downs.{i}.proj.bias']
        keys += [f'ups.{i}.proj.0.weight', f'ups.{i}.proj.0.bias']
        keys += [f'skips.{i}.weight', f'skips.{i}.bias']
        keys += [f'fusions.{i}.mlp.1.weight', f'fusions.{i}.mlp.3.weight']
    keys += ['outconv.proj.0.weight', 'outconv.proj.0.bias']
    return keys


@pytest.mark.parametrize('variant,m', [('t', 2), ('s', 4)])
def test_state_dict_keys_are_the_official_ones(variant, m):
    sd = GUNet(variant=variant).state_dict()
    assert sorted(sd) == sorted(expected_keys([m, m, m, 2 * m, m, m, m]))
    for key in ('inconv.proj.weight', 'layers.0.blocks.0.norm.running_mean', 'layers.0.blocks.0.conv.Wv.1.weight',
                'fusions.0.mlp.1.weight', 'outconv.proj.0.bias'):
        assert key in sd
    assert sd['layers.3.blocks.0.conv.Wv.1.weight'].shape == (192, 1, 5, 5)  # 8N channels, depthwise 5x5
    assert sd['ups.0.proj.0.weight'].shape == (96, 48, 1, 1)  # 1x1 to 4 * C/2, then PixelShuffle(2)
    assert sd['downs.0.proj.weight'].shape == (48, 24, 2, 2)
    assert sd['fusions.0.mlp.1.weight'].shape == (4, 24, 1, 1)  # max(C/8, 4)
    assert sd['fusions.2.mlp.3.weight'].shape == (192, 12, 1, 1)


def test_initialisation_follows_the_paper_code():
    torch.manual_seed(0)
    net = GUNet(variant='b', channels_last=False)
    net_depth = sum(net.depths)
    w = torch.cat([b.conv.Wv[0].weight.flatten() for layer in net.layers[:1] for b in layer.blocks])
    fan = 24 + 24
    expected_std = (8 * net_depth)**(-1 / 4) * math.sqrt(2.0 / fan)
    assert w.std().item() == pytest.approx(expected_std, rel=0.08)
    for layer in net.layers:
        for b in layer.blocks:
            for conv in (b.conv.Wv[0], b.conv.Wv[1], b.conv.Wg[0], b.conv.proj):
                assert torch.count_nonzero(conv.bias) == 0
    # Convs outside the gConv blocks keep PyTorch's default init (uniform biases, not zero).
    assert torch.count_nonzero(net.skips[0].bias) > 0
    assert torch.count_nonzero(net.inconv.proj.bias) > 0


def test_build_through_basicsr_registry_from_yaml():
    from basicsr.archs import build_network

    opt = yaml.safe_load('network_g:\n  type: GUNet\n  variant: s\n')['network_g']
    net = build_network(opt)
    assert isinstance(net, GUNet) and net.depths == [4, 4, 4, 8, 4, 4, 4]
    explicit = build_network({'type': 'GUNet', 'base_dim': 24, 'depths': [2, 2, 2, 4, 2, 2, 2], 'kernel_size': 5})
    assert explicit.variant == 't'
    assert sum(p.numel() for p in explicit.parameters()) == OFFICIAL_PARAMS['t']


def _small_net(**kw):
    torch.manual_seed(0)
    return GUNet(depths=[1, 1, 1, 1, 1, 1, 1], **kw).eval()


@pytest.mark.parametrize('size', [(77, 101), (5, 9), (1, 1), (24, 24), (64, 32)])
def test_any_size_returns_same_size(size):
    net = _small_net()
    x = torch.rand(2, 3, *size)
    with torch.no_grad():
        y = net(x)
    assert y.shape == x.shape and torch.isfinite(y).all()


def test_forward_is_official_network_on_reflect_padded_minus_one_one_range():
    net = _small_net(channels_last=False)
    x = torch.rand(1, 3, 77, 101)
    with torch.no_grad():
        padded = nn.functional.pad(x * 2 - 1, (0, 3, 0, 3), mode='reflect')  # to 80 x 104
        expected = net.forward_features(padded)[..., :77, :101] * 0.5 + 0.5
        assert torch.allclose(net(x), expected, atol=1e-6)


def test_no_clamping_inside_forward():
    net = _small_net()
    with torch.no_grad():
        net.outconv.proj[0].bias.fill_(5.0)  # pushes every output far above 1
        y = net(torch.rand(1, 3, 32, 32))
    assert y.min() > 1.0


def test_memory_format_does_not_change_results():
    a = _small_net(channels_last=True)
    b = _small_net(channels_last=False)
    b.load_state_dict(a.state_dict())
    x = torch.rand(2, 3, 40, 56)
    with torch.no_grad():
        assert torch.allclose(a(x), b(x), atol=1e-5)


@pytest.mark.parametrize('shape', [(1, 1, 32, 32), (1, 4, 32, 32), (3, 32, 32), (1, 3, 32, 32, 1)])
def test_wrong_shape_is_a_value_error_naming_the_expected_shape(shape):
    with pytest.raises(ValueError, match=r'N x 3 x H x W'):
        _small_net()(torch.rand(shape))


def test_unknown_variant_lists_valid_ones():
    with pytest.raises(ValueError, match=r"unknown gUNet variant 'x'.*t, s, b, d"):
        GUNet(variant='x')
