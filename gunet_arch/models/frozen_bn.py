"""FrozenBN: BatchNorm that normalises with its running statistics and stops updating them.

gUNet trains its last 200 epochs this way. Only the BatchNorm layers switch to eval mode; their
affine weights keep training, and every other module stays in training mode (the official code
puts the whole network in eval mode, which would also affect any dropout-like layer).
"""
from torch.nn.modules.batchnorm import _BatchNorm


def batch_norms(net):
    return [m for m in net.modules() if isinstance(m, _BatchNorm)]


def set_frozen_bn(net, frozen):
    """Put every BatchNorm of ``net`` in eval mode (``frozen``) or in ``net``'s own mode."""
    for bn in batch_norms(net):
        bn.train(net.training and not frozen)
    return net


def bn_buffers(net):
    """Copies of every BatchNorm buffer, to undo the update of a step that is thrown away."""
    return [(buf, buf.detach().clone()) for bn in batch_norms(net) for buf in bn.buffers()]


def restore_bn_buffers(saved):
    for buf, copy in saved:
        buf.copy_(copy)
