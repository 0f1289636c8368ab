"""SyncBatchNorm for distributed training, on GPUs and on CPUs.

gUNet normalises over the whole batch when the per-GPU batch is small (< 16). PyTorch's
``nn.SyncBatchNorm`` runs on accelerators only (DDP refuses it on CPU), so for CPU (gloo)
training the BatchNorms become ``CPUSyncBatchNorm``, which sums the batch statistics across
processes with a differentiable all-reduce. Parameters and buffers keep their names, so
checkpoints are the same either way.
"""
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


class _AllReduceSum(torch.autograd.Function):
    """Sum over processes; the gradient of each process's input is the summed gradient, since
    every process's loss depends on the total."""

    @staticmethod
    def forward(ctx, tensor, group):
        ctx.group = group
        tensor = tensor.clone()
        dist.all_reduce(tensor, group=group)
        return tensor

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        dist.all_reduce(grad, group=ctx.group)
        return grad, None


class CPUSyncBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training-mode statistics cover the batches of all processes."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True,
                 process_group=None):
        super().__init__(num_features, eps, momentum, affine, track_running_stats)
        self.process_group = process_group

    def forward(self, input):
        if not (self.training and dist.is_available() and dist.is_initialized()):
            return super().forward(input)
        self._check_input_dim(input)
        channels = input.shape[1]
        dims = [0, 2, 3]
        count = torch.full((1, ), input.numel() / channels, dtype=input.dtype, device=input.device)
        local = torch.cat([input.sum(dims), (input * input).sum(dims), count])
        total = _AllReduceSum.apply(local, self.process_group or dist.group.WORLD)
        n = total[-1]
        mean = total[:channels] / n
        var = (total[channels:2 * channels] / n - mean * mean).clamp_min(0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.mul_(1 - factor).add_(mean, alpha=factor)
                self.running_var.mul_(1 - factor).add_(var * n / torch.clamp(n - 1, min=1), alpha=factor)
        shape = (1, channels, 1, 1)
        out = (input - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out


def _to_cpu_sync(module, process_group=None):
    """Like ``nn.SyncBatchNorm.convert_sync_batchnorm``, to CPUSyncBatchNorm (sharing tensors)."""
    out = module
    if isinstance(module, _BatchNorm) and not isinstance(module, (nn.SyncBatchNorm, CPUSyncBatchNorm)):
        out = CPUSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                               module.track_running_stats, process_group)
        if module.affine:
            out.weight, out.bias = module.weight, module.bias
        if module.track_running_stats:
            out.running_mean, out.running_var = module.running_mean, module.running_var
            out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, _to_cpu_sync(child, process_group))
    return out


def convert_sync_batchnorm(net, device):
    """Every BatchNorm of ``net`` synchronised across processes: PyTorch's SyncBatchNorm on
    accelerators, CPUSyncBatchNorm on the CPU."""
    if torch.device(device).type == 'cpu':
        return _to_cpu_sync(net)
    return nn.SyncBatchNorm.convert_sync_batchnorm(net)


def is_sync_bn(module):
    return isinstance(module, (nn.SyncBatchNorm, CPUSyncBatchNorm))
