"""CPU training keeps freed memory: once warm, a training step faults its activations in no more.
(That GUNetModel sets it on the CPU is checked in test_train_pipeline.py, from the log.)"""
import platform
import subprocess
import sys

import pytest

# In a fresh process, since the setting is process-wide: a small network trains on 40 MiB
# activations (over glibc's largest mmap threshold, 32 MiB), and the minor page faults of five
# steps after six warm-up steps are counted.
PROBE = r'''
import resource, sys, torch
if sys.argv[1] == 'keep':
    from gunet_arch.models.cpu_allocator import keep_freed_memory
    print(keep_freed_memory(), file=sys.stderr)
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3, padding=1))
x = torch.rand(5, 8, 512, 512)
def step():
    net.zero_grad(set_to_none=True)
    net(x).square().mean().backward()
for _ in range(6):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
'''

pytestmark = pytest.mark.skipif(platform.system() != 'Linux' or platform.libc_ver()[0] != 'glibc',
                                reason='the setting is glibc malloc\'s; other C libraries are left alone')


def page_faults(mode):
    out = subprocess.run([sys.executable, '-c', PROBE, mode], capture_output=True, text=True, check=True,
                         timeout=300)
    return int(out.stdout.split()[-1]), out.stderr


def test_freed_blocks_are_reused_instead_of_faulted_in_again():
    default_faults, _ = page_faults('default')
    kept_faults, message = page_faults('keep')
    assert 'freed memory kept for reuse' in message
    # glibc's default maps and unmaps every activation: each step faults at least one 40 MiB
    # activation (10,240 pages) in again (measured: about 22 of them).
    assert default_faults > 5 * 10240
    # Kept: none, or a step's first two activations while the heap settles (seen 1 run in 10,
    # 20,480 pages); that probe with one lone block was the heap's worst case, not training's.
    assert kept_faults * 20 < default_faults
