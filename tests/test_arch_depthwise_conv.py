"""DepthwiseConv2d, the reflect-padded depthwise conv of every gConv block: in CPU training its own
backward (a grouped conv's weight gradient, the padding folded back in place) gives the gradients
of the plain nn.Conv2d it replaces; without autograd it is that nn.Conv2d."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gunet_arch.archs import GUNet
from gunet_arch.archs.gunet_arch import DepthwiseConv2d, _fold_reflect_padding


def seeded_pair(dim, kernel_size, seed=0):
    torch.manual_seed(seed)
    ours = DepthwiseConv2d(dim, kernel_size)
    torch.manual_seed(seed)
    plain = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim, padding_mode='reflect')
    return ours, plain


def gradients(conv, x, grad_out):
    x = x.detach().clone().requires_grad_(True)
    out = conv(x)
    return out, torch.autograd.grad(out, [x, conv.weight, conv.bias], grad_out)


def test_same_parameters_and_initialisation_as_nn_conv2d():
    ours, plain = seeded_pair(24, 5)
    assert isinstance(ours, nn.Conv2d)
    assert ours.state_dict().keys() == plain.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), plain.state_dict().values()))


@pytest.mark.parametrize('pad', [1, 2, 3])
def test_fold_is_the_backward_of_reflect_padding(pad):
    g = torch.Generator().manual_seed(pad)
    x = torch.randn(2, 3, 9, 7, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(2, 3, 9 + 2 * pad, 7 + 2 * pad, dtype=torch.float64, generator=g)
    expected, = torch.autograd.grad(F.pad(x, (pad, ) * 4, mode='reflect'), x, grad)
    assert torch.allclose(_fold_reflect_padding(grad.clone(), pad), expected, rtol=0, atol=1e-12)


# 24 channels take the grouped weight gradient in groups of 12, 16 in groups of 8, 7 (prime) the
# depthwise one.
@pytest.mark.parametrize('dim', [24, 16, 7])
@pytest.mark.parametrize('kernel_size', [5, 3])
@pytest.mark.parametrize('channels_last', [True, False], ids=['channels_last', 'nchw'])
def test_training_gradients_equal_those_of_nn_conv2d(dim, kernel_size, channels_last):
    ours, plain = seeded_pair(dim, kernel_size)
    ours, plain = ours.double(), plain.double()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, dim, 13, 10, dtype=torch.float64, generator=g).contiguous(memory_format=memory_format)
    grad_out = torch.randn(3, dim, 13, 10, dtype=torch.float64, generator=g)
    out, got = gradients(ours, x, grad_out)
    assert type(out.grad_fn).__name__ == '_ReflectDepthwiseConvBackward'  # the fast backward did run
    expected_out, expected = gradients(plain, x, grad_out)
    assert torch.equal(out, expected_out)
    for name, a, b in zip(('input', 'weight', 'bias'), got, expected):
        assert a.shape == b.shape and a.dtype == b.dtype, name
        assert torch.allclose(a, b, rtol=0, atol=1e-10 * b.abs().max().item()), name
    assert got[0].is_contiguous(memory_format=memory_format)


def test_without_autograd_it_is_the_plain_conv():
    ours, plain = seeded_pair(16, 5)
    x = torch.randn(2, 16, 12, 12).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        out = ours(x)
    assert out.grad_fn is None and torch.equal(out, plain(x))


def test_bfloat16_autocast_computes_in_bfloat16_and_returns_float32_weight_gradients():
    ours, plain = seeded_pair(16, 5)
    x = torch.randn(2, 16, 12, 12).contiguous(memory_format=torch.channels_last)
    grad_out = torch.randn(2, 16, 12, 12, generator=torch.Generator().manual_seed(2))
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out, got = gradients(ours, x, grad_out.bfloat16())
        expected_out, expected = gradients(plain, x, grad_out.bfloat16())
    assert out.dtype == torch.bfloat16 and torch.equal(out, expected_out)
    assert [t.dtype for t in got] == [torch.float32] * 3
    for name, a, b in zip(('input', 'weight', 'bias'), got, expected):
        # Both sum bfloat16 products, in different orders: equal to bfloat16 precision.
        assert torch.allclose(a, b.float(), rtol=0, atol=2e-2 * b.abs().max().item()), name


def test_every_gconv_block_of_the_network_uses_it():
    net = GUNet(variant='t', base_dim=8, depths=[1, 1, 1, 1, 1])
    convs = [blk.conv.Wv[1] for layer in net.layers for blk in layer.blocks]
    assert len(convs) == 5 and all(type(c) is DepthwiseConv2d for c in convs)
