"""CPU training keeps freed memory: re-allocating a freed activation takes no page faults.
(That GUNetModel sets it on the CPU is checked in test_train_pipeline.py, from the log.)"""
import platform
import subprocess
import sys

import pytest

# In a fresh process, since the setting is process-wide: allocate and free a 64 MiB tensor twice
# (the heap grows to what an aligned block of that size needs), then nine times more, counting
# the minor page faults of those nine.
PROBE = r'''
import resource, sys, torch
if sys.argv[1] == 'keep':
    from gunet_arch.models.cpu_allocator import keep_freed_memory
    print(keep_freed_memory(), file=sys.stderr)
for _ in range(2):
    torch.empty(16 << 20).fill_(1)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(9):
    torch.empty(16 << 20).fill_(1)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
'''

pytestmark = pytest.mark.skipif(platform.system() != 'Linux' or platform.libc_ver()[0] != 'glibc',
                                reason='the setting is glibc malloc\'s; other C libraries are left alone')


def page_faults(mode):
    out = subprocess.run([sys.executable, '-c', PROBE, mode], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1]), out.stderr


def test_freed_blocks_are_reused_instead_of_faulted_in_again():
    default_faults, _ = page_faults('default')
    kept_faults, message = page_faults('keep')
    assert 'freed memory kept for reuse' in message
    # 64 MiB is 16384 pages: glibc's default maps and unmaps it each time.
    assert default_faults > 9 * 16384 * 0.9
    # Kept: nothing, or at most one block's pages while the heap settles (seen 1 run in 4).
    assert kept_faults <= 16384 * 1.1

