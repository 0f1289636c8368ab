"""An independent, plain-PyTorch description of the OFFICIAL gUNet, used only as a test oracle.

Written from the project design notes ("The network" section), not from gunet_arch: NCHW
only, the official concatenating SK fusion, and the official initialisation order, with module
names chosen so that ``state_dict`` keys are those of the official checkpoints. It works on
[-1, 1] images whose sides are multiples of 8 and returns ``net(x) + x`` unclamped, as the
official ``gUNet.forward`` does.

Initialisation, as the official code does it: every conv gets PyTorch's default init when it is
constructed; then each gConv block's ConvLayer, once its four convs exist, re-draws their weights
in module order (Wv.0, Wv.1, Wg.0, proj) from N(0, std) "truncated" at +-2 (absolute bounds)
with the inverse-CDF sampler timm uses, and zeroes their biases. No other conv is touched.
"""
import math

import torch
from torch import nn

DEPTH_MULTIPLIER = {'t': 2, 's': 4, 'b': 8, 'd': 16}


def timm_trunc_normal_(tensor, mean=0.0, std=1.0, a=-2.0, b=2.0):
    """The inverse-CDF truncated normal of timm (and of torch.nn.init before it switched to
    rejection sampling): u ~ U[2 cdf(a') - 1, 2 cdf(b') - 1], x = mean + std sqrt(2) erfinv(u),
    clamped to [a, b]; a and b are absolute bounds, a' and b' the standardised ones."""

    def cdf(v):
        return 0.5 * (1.0 + math.erf(v / math.sqrt(2.0)))

    with torch.no_grad():
        lower, upper = cdf((a - mean) / std), cdf((b - mean) / std)
        tensor.uniform_(2.0 * lower - 1.0, 2.0 * upper - 1.0)
        tensor.erfinv_()
        tensor.mul_(std * math.sqrt(2.0))
        tensor.add_(mean)
        tensor.clamp_(min=a, max=b)
    return tensor


class RefGatedConv(nn.Module):
    """proj(Wv(x) * sigmoid(Wg(x))); Wv = 1x1 then depthwise kxk (reflect), Wg = 1x1 then sigmoid."""

    def __init__(self, net_depth, dim, kernel_size, sampler):
        super().__init__()
        self.Wv = nn.Sequential()
        self.Wv.add_module('0', nn.Conv2d(dim, dim, 1))
        self.Wv.add_module('1', nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim,
                                          padding_mode='reflect'))
        self.Wg = nn.Sequential()
        self.Wg.add_module('0', nn.Conv2d(dim, dim, 1))
        self.Wg.add_module('1', nn.Sigmoid())
        self.proj = nn.Conv2d(dim, dim, 1)
        # After all four convs got their default init: the scaled re-draw, in module order.
        gain = (8.0 * net_depth)**-0.25
        for conv in (self.Wv[0], self.Wv[1], self.Wg[0], self.proj):
            out_ch, in_per_group, kh, kw = conv.weight.shape
            fan_in, fan_out = in_per_group * kh * kw, out_ch * kh * kw
            sampler(conv.weight, std=gain * math.sqrt(2.0 / (fan_in + fan_out)))
            with torch.no_grad():
                conv.bias.zero_()

    def forward(self, x):
        value = self.Wv[1](self.Wv[0](x))
        gate = torch.sigmoid(self.Wg[0](x))
        return self.proj(value * gate)


class RefBlock(nn.Module):

    def __init__(self, net_depth, dim, kernel_size, sampler):
        super().__init__()
        self.norm = nn.BatchNorm2d(dim)
        self.conv = RefGatedConv(net_depth, dim, kernel_size, sampler)

    def forward(self, x):
        return x + self.conv(self.norm(x))


class RefStage(nn.Module):

    def __init__(self, net_depth, dim, depth, kernel_size, sampler):
        super().__init__()
        self.blocks = nn.ModuleList(RefBlock(net_depth, dim, kernel_size, sampler) for _ in range(depth))

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x


class RefConv(nn.Module):
    """Holds one conv under the name ``proj`` (inconv, downs)."""

    def __init__(self, conv):
        super().__init__()
        self.proj = conv

    def forward(self, x):
        return self.proj(x)


class RefShuffle(nn.Module):
    """``proj`` = conv then PixelShuffle (ups, outconv)."""

    def __init__(self, conv, factor):
        super().__init__()
        self.proj = nn.Sequential(conv, nn.PixelShuffle(factor))

    def forward(self, x):
        return self.proj(x)


class RefSKFusion(nn.Module):
    """The official selective-kernel fusion: the two inputs stacked as B x 2 x C x H x W."""

    def __init__(self, dim, reduction=8):
        super().__init__()
        hidden = max(int(dim / reduction), 4)
        self.mlp = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(dim, hidden, 1, bias=False), nn.ReLU(),
                                 nn.Conv2d(hidden, 2 * dim, 1, bias=False))

    def forward(self, up, skip):
        b, c, h, w = up.shape
        stack = torch.cat([up, skip], dim=1).view(b, 2, c, h, w)
        summed = stack.sum(dim=1)
        weights = self.mlp(summed).view(b, 2, c, 1, 1).softmax(dim=1)
        return (stack * weights).sum(dim=1)


class ReferenceGUNet(nn.Module):
    """The official gUNet. Modules are created in the official order (inconv; every stage;
    then per level i: down, up, skip, fusion; outconv) so that one seed gives one network."""

    def __init__(self, depths, base_dim=24, kernel_size=5, sampler=timm_trunc_normal_):
        super().__init__()
        assert len(depths) % 2 == 1
        self.half = len(depths) // 2
        net_depth = sum(depths)
        widths = [base_dim * 2**i for i in range(self.half)]
        widths = widths + [base_dim * 2**self.half] + widths[::-1]

        self.inconv = RefConv(nn.Conv2d(3, widths[0], 3, padding=1, padding_mode='reflect'))
        self.layers = nn.ModuleList(
            RefStage(net_depth, widths[i], depth, kernel_size, sampler) for i, depth in enumerate(depths))
        self.downs, self.ups, self.skips, self.fusions = (nn.ModuleList() for _ in range(4))
        for i in range(self.half):
            self.downs.append(RefConv(nn.Conv2d(widths[i], widths[i + 1], 2, stride=2)))
            self.ups.append(RefShuffle(nn.Conv2d(widths[i + 1], widths[i] * 4, 1), 2))
            self.skips.append(nn.Conv2d(widths[i], widths[i], 1))
            self.fusions.append(RefSKFusion(widths[i]))
        self.outconv = RefShuffle(nn.Conv2d(widths[-1], 3, 3, padding=1, padding_mode='reflect'), 1)

    def forward(self, x):
        feat = self.inconv(x)
        skips = []
        for i in range(self.half):
            feat = self.layers[i](feat)
            skips.append(self.skips[i](feat))
            feat = self.downs[i](feat)
        feat = self.layers[self.half](feat)
        for i in reversed(range(self.half)):
            feat = self.fusions[i](self.ups[i](feat), skips[i])
            feat = self.layers[len(self.layers) - 1 - i](feat)
        return self.outconv(feat) + x


def reference_gunet(variant, sampler=timm_trunc_normal_):
    m = DEPTH_MULTIPLIER[variant]
    return ReferenceGUNet([m, m, m, 2 * m, m, m, m], sampler=sampler)
