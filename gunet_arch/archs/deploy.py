"""The inference form of gUNet.

In eval mode each BatchNorm is a per-channel affine map, and in every gConv block it is read only
by two 1x1 convs (Wv's and Wg's first conv), so it folds into their weights and biases exactly.
The folded block then runs without autograd and in place: on CPU a fresh multi-megabyte
activation costs page faults on every allocation, so reusing the conv outputs for the gate, the
product and the residual sum saves most of the elementwise time.
What was measured and left out: merging Wv/Wg's 1x1 convs into one does not pay in
channels_last; fusing the sigmoid, gate product and residual sum into oneDNN convolution post-ops
(torch.ops.mkldnn._convolution_pointwise) was 10-50% slower than these in-place passes;
torch.jit's optimize_for_inference was slower; torch.compile gained little on top and takes
minutes to compile on a small CPU.
"""
import torch
from torch import nn


@torch.no_grad()
def fold_bn_into_convs(bn, convs):
    """Fold eval-mode ``bn`` (applied before ``convs``) into each 1x1 conv of ``convs``."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.bias - bn.running_mean * scale
    for conv in convs:
        if conv.kernel_size != (1, 1) or conv.groups != 1:
            raise ValueError('BatchNorm can only be folded into a following 1x1 dense conv')
        w = conv.weight  # out x in x 1 x 1
        bias = conv.bias if conv.bias is not None else torch.zeros(w.shape[0], dtype=w.dtype, device=w.device)
        new_bias = bias + (w[:, :, 0, 0] * shift[None, :]).sum(1)
        w.mul_(scale.view(1, -1, 1, 1))
        if conv.bias is None:
            conv.bias = nn.Parameter(new_bias)
        else:
            conv.bias.copy_(new_bias)


class DeployedBlock(nn.Module):
    """A gConv block with its BatchNorm folded away: x + proj(Wv(x) * sigmoid(Wg(x))).

    Keeps the official submodule names (``conv.Wv``, ``conv.Wg``, ``conv.proj``) so the folded
    weights can still be inspected and saved in the familiar layout."""

    def __init__(self, block):
        super().__init__()
        self.conv = block.conv

    def forward(self, x):
        conv = self.conv
        if torch.is_grad_enabled() and x.requires_grad:
            return x + conv.proj(conv.Wv(x) * conv.Wg(x))
        value = conv.Wv(x)
        value.mul_(conv.Wg[0](x).sigmoid_())
        return conv.proj(value).add_(x)


def deploy_gunet(net):
    """Fold every block's BatchNorm into its convs, in place. Eval mode only: a model in training
    mode still normalises with batch statistics, which no fixed conv can reproduce."""
    from .gunet_arch import BasicBlock

    if net.training:
        raise RuntimeError('GUNet.deploy() needs an eval-mode model (call net.eval() first): '
                           'in training mode BatchNorm uses batch statistics, which cannot be folded')
    if net.deployed:
        return net
    for layer in net.layers:
        for i, block in enumerate(layer.blocks):
            if isinstance(block, BasicBlock):
                fold_bn_into_convs(block.norm, [block.conv.Wv[0], block.conv.Wg[0]])
                layer.blocks[i] = DeployedBlock(block)
    # Measured (scripts/benchmark.py, and an H100 in fp32): channels_last is what makes the CPU
    # fast, while cuDNN runs this inference graph faster in NCHW. Pick by where the weights are.
    on_cpu = next(net.parameters()).device.type == 'cpu'
    net.channels_last = on_cpu
    net.to(memory_format=torch.channels_last if on_cpu else torch.contiguous_format)
    net.deployed = True
    for p in net.parameters():
        p.requires_grad_(False)
    return net
