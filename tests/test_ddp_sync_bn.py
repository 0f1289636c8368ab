"""CPUSyncBatchNorm in two gloo processes equals one BatchNorm over the joint batch: outputs,
running statistics, and the gradients DDP would average."""
import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from gunet_arch.models.sync_bn import CPUSyncBatchNorm, convert_sync_batchnorm


def joint_batch():
    torch.manual_seed(0)
    return torch.randn(4, 3, 5, 6) * 2 + 1, torch.randn(4, 3, 5, 6)


def worker(rank, store_path, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group('gloo', init_method=f'file://{store_path}', rank=rank, world_size=2)
    x, target = joint_batch()
    bn = convert_sync_batchnorm(nn.Sequential(nn.BatchNorm2d(3)), 'cpu')[0]
    assert isinstance(bn, CPUSyncBatchNorm)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
    xi = x[2 * rank:2 * rank + 2].clone().requires_grad_(True)
    out = bn(xi)
    ((out - target[2 * rank:2 * rank + 2])**2).sum().backward()
    grads = torch.stack([bn.weight.grad, bn.bias.grad])
    dist.all_reduce(grads)  # what DDP does (then divides by the world size)
    torch.save({'out': out.detach(), 'x_grad': xi.grad, 'param_grads': grads, 'mean': bn.running_mean,
                'var': bn.running_var}, os.path.join(out_dir, f'{rank}.pt'))
    dist.destroy_process_group()


def test_cpu_sync_batchnorm_matches_batchnorm_on_the_joint_batch(tmp_path):
    mp.spawn(worker, args=(str(tmp_path / 'store'), str(tmp_path)), nprocs=2, join=True)
    res = [torch.load(tmp_path / f'{r}.pt') for r in (0, 1)]
    x, target = joint_batch()
    bn = nn.BatchNorm2d(3)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
    x = x.clone().requires_grad_(True)
    out = bn(x)
    ((out - target)**2).sum().backward()
    assert torch.allclose(torch.cat([res[0]['out'], res[1]['out']]), out.detach(), atol=1e-5)
    assert torch.allclose(torch.cat([res[0]['x_grad'], res[1]['x_grad']]), x.grad, atol=1e-5)
    assert torch.allclose(res[0]['param_grads'], torch.stack([bn.weight.grad, bn.bias.grad]), atol=1e-4)
    for r in res:
        assert torch.allclose(r['mean'], bn.running_mean, atol=1e-6)
        assert torch.allclose(r['var'], bn.running_var, atol=1e-5)
