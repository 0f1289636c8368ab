"""gUNet ("Rethinking Performance Gains in Image Dehazing Networks", arXiv 2209.11448).

The module tree, parameter names, initialisation and arithmetic are those of the official
network, so official state dicts load with ``strict=True`` and give the official outputs. Three
things differ, none of which changes a result beyond float rounding:

* the SK fusion weighs its two inputs directly instead of concatenating them into a 5-D view
  (the concat and the sum over it cost more than the whole fusion on CPU),
* the network can run in ``channels_last`` memory format, which the convolutions prefer on CPU, and
* in training on the CPU, the 5x5 depthwise conv computes its gradients its own way (see
  ``DepthwiseConv2d``): oneDNN's own depthwise weight gradient is the slowest op of a step.

The public forward works on BasicSR's [0, 1] images; the official [-1, 1] range, the padding to
a multiple of the coarsest stage's stride (8 for the paper's 7 stages) and the crop back all
happen inside.
"""
import math

import torch
import torch.nn.functional as F
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from .variants import network_config, variant_of


@torch.no_grad()
def _trunc_normal_inverse_cdf(tensor, std, lo=-2.0, hi=2.0):
    """Normal(0, std) truncated to [lo, hi] by the inverse-CDF method, the sampler the official
    code gets from timm. torch.nn.init.trunc_normal_ now samples differently, so using it would
    give a different (equally distributed) network for the same seed."""
    cdf = lambda v: (1.0 + math.erf(v / math.sqrt(2.0))) / 2.0  # noqa: E731
    tensor.uniform_(2 * cdf(lo / std) - 1, 2 * cdf(hi / std) - 1)
    tensor.erfinv_().mul_(std * math.sqrt(2.0)).clamp_(lo, hi)
    return tensor


# Channels per group of the grouped conv whose weight gradient stands in for the depthwise one,
# the first that divides the channel count. Measured with oneDNN on gUNet's widths (24-192):
# 12 is the fastest, 8 close behind; 1 (oneDNN's depthwise kernel) is 1.5-2.5x slower.
_WGRAD_GROUPS = (12, 8, 6, 4, 3, 2, 1)


def _fold_reflect_padding(grad, pad):
    """The gradient with respect to the input of ``F.pad(x, [pad] * 4, mode='reflect')`` from the
    gradient ``grad`` with respect to its output: each padded row and column is added onto the
    row or column it mirrors, then the border is cropped. ``grad`` is overwritten."""
    h, w = grad.shape[-2] - 2 * pad, grad.shape[-1] - 2 * pad
    for i in range(pad):
        # Padded row i copies input row pad - i (at padded row 2 * pad - i); padded row
        # h + 2 * pad - 1 - i copies input row h - 2 - (pad - 1 - i) (at padded row h - 1 + i).
        grad[..., 2 * pad - i, :] += grad[..., i, :]
        grad[..., h - 1 + i, :] += grad[..., h + 2 * pad - 1 - i, :]
    for i in range(pad):  # columns after rows: a corner travels along both
        grad[..., 2 * pad - i] += grad[..., i]
        grad[..., w - 1 + i] += grad[..., w + 2 * pad - 1 - i]
    return grad[..., pad:pad + h, pad:pad + w]


class _ReflectDepthwiseConv(torch.autograd.Function):
    """``conv2d(F.pad(x, reflect), weight, bias, groups=C)`` with a faster backward on the CPU.

    The forward is the module's own. In the backward, oneDNN's depthwise (one channel per
    group) weight gradient runs 10-20x slower than the convolution itself; that of a grouped
    conv with k = 12 channels per group, k times the multiplications, still runs 1.5-2.5x faster.
    The depthwise weight gradient is the diagonal of the grouped one (output channel c, input
    channel c % k of its group): the same sum over the same products. The padding's backward
    adds the mirrored borders in place instead of zero-filling and scattering a new tensor."""

    @staticmethod
    def forward(ctx, x, weight, bias, pad):
        padded = F.pad(x, (pad, pad, pad, pad), mode='reflect')
        out = F.conv2d(padded, weight, bias, groups=weight.shape[0])
        # Under autocast the conv computed in out.dtype: the backward must use the same operands.
        ctx.save_for_backward(padded.to(out.dtype), weight.to(out.dtype))
        ctx.pad, ctx.has_bias = pad, bias is not None
        ctx.dtypes = (x.dtype, weight.dtype, None if bias is None else bias.dtype)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        padded, weight = ctx.saved_tensors
        channels = weight.shape[0]
        memory_format = (torch.channels_last if padded.is_contiguous(memory_format=torch.channels_last)
                         else torch.contiguous_format)
        grad_out = grad_out.to(padded.dtype).contiguous(memory_format=memory_format)
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        grad_x = grad_w = grad_b = None
        conv_args = ([channels], [1, 1], [0, 0], [1, 1], False, [0, 0])
        if need_x:
            grad_padded = torch.ops.aten.convolution_backward(grad_out, padded, weight, *conv_args, channels,
                                                              [True, False, False])[0]
            grad_x = _fold_reflect_padding(grad_padded, ctx.pad)
            grad_x = grad_x.contiguous(memory_format=memory_format).to(ctx.dtypes[0])
        if need_w or (need_b and ctx.has_bias):
            k = next(k for k in _WGRAD_GROUPS if channels % k == 0)
            grouped = weight.new_zeros(channels, k, *weight.shape[2:]) if k > 1 else weight
            _, grad_grouped, grad_b = torch.ops.aten.convolution_backward(
                grad_out, padded, grouped, *conv_args, channels // k, [False, True, need_b and ctx.has_bias])
            if k > 1:
                index = torch.arange(channels, device=weight.device)
                grad_grouped = grad_grouped[index, index % k].unsqueeze(1)
            grad_w = grad_grouped.to(ctx.dtypes[1])
            grad_b = grad_b.to(ctx.dtypes[2]) if grad_b is not None else None
        return grad_x, grad_w, grad_b, None


class DepthwiseConv2d(nn.Conv2d):
    """Wv's k x k depthwise conv with reflect padding: an ``nn.Conv2d`` (same parameters, same
    initialisation, same forward) whose training backward on the CPU is ``_ReflectDepthwiseConv``.
    Without autograd (inference, deploy, export) it is the plain ``nn.Conv2d``."""

    def __init__(self, dim, kernel_size):
        super().__init__(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim, padding_mode='reflect')

    def forward(self, x):
        if (x.device.type == 'cpu' and torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad)
                and not torch.jit.is_tracing() and not torch.jit.is_scripting()):
            return _ReflectDepthwiseConv.apply(x, self.weight, self.bias, self.padding[0])
        return super().forward(x)


class ConvLayer(nn.Module):
    """The gated convolution: proj(Wv(x) * sigmoid(Wg(x)))."""

    def __init__(self, net_depth, dim, kernel_size):
        super().__init__()
        self.Wv = nn.Sequential(
            nn.Conv2d(dim, dim, 1),
            DepthwiseConv2d(dim, kernel_size))
        self.Wg = nn.Sequential(nn.Conv2d(dim, dim, 1), nn.Sigmoid())
        self.proj = nn.Conv2d(dim, dim, 1)
        # The official scaled init, applied in module order after PyTorch's default init so that
        # the random stream (and hence a seeded model) matches the official code.
        gain = (8 * net_depth)**(-1 / 4)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(m.weight)
                _trunc_normal_inverse_cdf(m.weight, std=gain * math.sqrt(2.0 / (fan_in + fan_out)))
                nn.init.zeros_(m.bias)

    def forward(self, x):
        return self.proj(self.Wv(x) * self.Wg(x))


class BasicBlock(nn.Module):
    """Residual gConv block: x + conv(BN(x)). ``deploy`` folds ``norm`` into the conv."""

    def __init__(self, net_depth, dim, kernel_size):
        super().__init__()
        self.norm = nn.BatchNorm2d(dim)
        self.conv = ConvLayer(net_depth, dim, kernel_size)

    def forward(self, x):
        return x + self.conv(self.norm(x))


class BasicLayer(nn.Module):

    def __init__(self, net_depth, dim, depth, kernel_size):
        super().__init__()
        self.blocks = nn.ModuleList([BasicBlock(net_depth, dim, kernel_size) for _ in range(depth)])

    def forward(self, x):
        for blk in self.blocks:
            x = blk(x)
        return x


class PatchEmbed(nn.Module):
    """Strided conv: the 3x3 input conv (stride 1) and the 2x2 stride-2 downsampling."""

    def __init__(self, patch_size, in_chans, embed_dim, kernel_size=None):
        super().__init__()
        kernel_size = patch_size if kernel_size is None else kernel_size
        self.proj = nn.Conv2d(
            in_chans,
            embed_dim,
            kernel_size,
            stride=patch_size,
            padding=(kernel_size - patch_size + 1) // 2,
            padding_mode='reflect')

    def forward(self, x):
        return self.proj(x)


class PatchUnEmbed(nn.Module):
    """Conv then PixelShuffle: the 1x1 upsampling (x2) and the 3x3 output conv (x1)."""

    def __init__(self, patch_size, out_chans, embed_dim, kernel_size=1):
        super().__init__()
        self.proj = nn.Sequential(
            nn.Conv2d(embed_dim, out_chans * patch_size**2, kernel_size, padding=kernel_size // 2,
                      padding_mode='reflect'), nn.PixelShuffle(patch_size))

    def forward(self, x):
        return self.proj(x)


class SKFusion(nn.Module):
    """Selective-kernel fusion of the decoder path and its skip connection."""

    def __init__(self, dim, reduction=8):
        super().__init__()
        hidden = max(int(dim / reduction), 4)
        self.mlp = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(dim, hidden, 1, bias=False), nn.ReLU(True),
            nn.Conv2d(hidden, dim * 2, 1, bias=False))

    def forward(self, up, skip):
        attn = self.mlp(up + skip)  # B x 2C x 1 x 1
        attn = torch.softmax(attn.unflatten(1, (2, -1)), dim=1)
        return torch.addcmul(up * attn[:, 0], skip, attn[:, 1])


@ARCH_REGISTRY.register()
class GUNet(nn.Module):
    """gUNet for images in [0, 1].

    Args:
        variant (str): a name from ``archs/variants.py`` ('t', 's', 'b', 'd'); it fills in
            whichever of ``base_dim``, ``depths`` and ``kernel_size`` are not given.
        base_dim (int): channels of the first stage (N, 24 in the paper).
        depths (list[int]): blocks per stage, an odd number of stages.
        kernel_size (int): depthwise kernel size (5 in the paper).
        channels_last (bool): run the convolutions in channels_last memory format (faster on
            CPU and on tensor-core GPUs). Parameters and outputs are the same either way.
    """

    def __init__(self, variant='t', base_dim=None, depths=None, kernel_size=None, channels_last=True):
        super().__init__()
        config = network_config(variant, base_dim, depths, kernel_size)
        base_dim, depths, kernel_size = config['base_dim'], config['depths'], config['kernel_size']
        if len(depths) % 2 != 1 or min(depths) < 1:
            raise ValueError(f'depths must be an odd number of positive stage depths, got {depths}')
        self.variant = variant_of(config)
        self.depths = list(depths)
        self.base_dim = base_dim
        self.kernel_size = kernel_size
        self.channels_last = bool(channels_last)
        self.deployed = False

        stage_num = len(depths)
        half = stage_num // 2
        net_depth = sum(depths)
        dims = [2**i * base_dim for i in range(half)]
        dims = dims + [2**half * base_dim] + dims[::-1]
        self.stage_num, self.half_num = stage_num, half
        # Inputs are padded to a multiple of the coarsest stage's stride: 8 for the paper's 7 stages.
        self.pad_multiple = 2**half
        # The smallest stage must be >= 3 pixels for the reflect padding of the 5x5 depthwise conv.
        self.min_size = self.pad_multiple * (kernel_size // 2 + 1)

        self.inconv = PatchEmbed(1, 3, dims[0], kernel_size=3)
        self.layers = nn.ModuleList()
        self.downs = nn.ModuleList()
        self.ups = nn.ModuleList()
        self.skips = nn.ModuleList()
        self.fusions = nn.ModuleList()
        for i in range(stage_num):
            self.layers.append(BasicLayer(net_depth, dims[i], depths[i], kernel_size))
        for i in range(half):
            self.downs.append(PatchEmbed(2, dims[i], dims[i + 1]))
            self.ups.append(PatchUnEmbed(2, dims[i], dims[i + 1]))
            self.skips.append(nn.Conv2d(dims[i], dims[i], 1))
            self.fusions.append(SKFusion(dims[i]))
        self.outconv = PatchUnEmbed(1, 3, dims[-1], kernel_size=3)
        if self.channels_last:
            self.to(memory_format=torch.channels_last)

    # -- the official network, on [-1, 1] images whose size suits it ---------------------------
    def forward_features(self, x):
        """The official ``gUNet.forward``: [-1, 1] in, [-1, 1] (unclamped) out."""
        feat = self.inconv(x)
        skips = []
        for i in range(self.half_num):
            feat = self.layers[i](feat)
            skips.append(self.skips[i](feat))
            feat = self.downs[i](feat)
        feat = self.layers[self.half_num](feat)
        for i in range(self.half_num - 1, -1, -1):
            feat = self.ups[i](feat)
            feat = self.fusions[i](feat, skips[i])
            feat = self.layers[self.stage_num - i - 1](feat)
        return self.outconv(feat) + x

    def pad(self, x):
        """Pad bottom/right to a multiple of ``pad_multiple`` (and to ``min_size``), as the official
        test does (8 there):
        reflect where the image is big enough, replicate where it is not."""
        h, w = x.shape[-2:]
        ph = max(-h % self.pad_multiple, self.min_size - h)
        pw = max(-w % self.pad_multiple, self.min_size - w)
        # No early return for a zero pad: an exported graph (ONNX, dynamic H/W) must pad every size.
        mode = 'reflect' if ph < h and pw < w else 'replicate'
        return F.pad(x, (0, pw, 0, ph), mode=mode)

    def forward(self, x):
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f'GUNet expects images of shape N x 3 x H x W in [0, 1], got {tuple(x.shape)}')
        h, w = x.shape[-2:]
        x = self.pad(x * 2 - 1)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        out = self.forward_features(x)[..., :h, :w]
        return (out * 0.5 + 0.5).contiguous()

    def deploy(self):
        """Turn this eval-mode model, in place, into the faster inference form (see deploy.py)."""
        from .deploy import deploy_gunet
        return deploy_gunet(self)

    def extra_repr(self):
        return (f'variant={self.variant}, base_dim={self.base_dim}, depths={self.depths}, '
                f'kernel_size={self.kernel_size}, channels_last={self.channels_last}, deployed={self.deployed}')
