"""A rank of a distributed run leaves with its own exit status even when a gloo worker thread
asks for the GIL just before the interpreter would shut down: the moment that made a Slurm task
abort with "terminate called without an active exception" (SIGABRT, 134) instead of leaving with
75 after a stop signal.

The second rank below makes that moment certain rather than rare: it holds the GIL in a busy loop
(with a switch interval so long that no other thread is handed the GIL) while the first rank
joins its pending all_reduce, so the worker thread letting go of the tensor has to wait for the
GIL; an object released during interpreter shutdown then gives the GIL up. Without
``leave_without_interpreter_shutdown`` this rank aborts every time."""
import os
import subprocess
import sys

import pytest
from conftest import ROOT, run_env

RANK_SCRIPT = '''
import importlib.util, sys, time
import torch
import torch.distributed as dist

# The module alone, not the plugin: atexit handlers of the plugin's dependencies (torchvision
# pulls in torch._dynamo) can hand the GIL over before shutdown and hide the moment under test.
spec = importlib.util.spec_from_file_location('distributed_exit', {module!r})
distributed_exit = importlib.util.module_from_spec(spec)
spec.loader.exec_module(distributed_exit)

rank, store, how = int(sys.argv[1]), sys.argv[2], sys.argv[3]
dist.init_process_group('gloo', init_method='file://' + store, rank=rank, world_size=2)
if rank == 0:
    time.sleep(1)
    dist.all_reduce(torch.ones(3))
    time.sleep(4)  # the connection stays up while rank 1 leaves
    sys.exit(0)


class GivesTheGilUpAtShutdown:
    def __del__(self):
        time.sleep(0.3)


with distributed_exit.leave_without_interpreter_shutdown():
    sys.setswitchinterval(60)
    released_at_shutdown = GivesTheGilUpAtShutdown()
    tensor = torch.ones(3)
    dist.all_reduce(tensor, async_op=True)  # completes on a gloo thread once rank 0 joins
    end = time.monotonic() + 3  # rank 0 joins after 1 s
    while time.monotonic() < end:  # keeps the GIL: the gloo thread waits for it (no output here:
        pass  # writing would give the GIL up)
    if how == 'stop':
        raise SystemExit(75)
'''


@pytest.mark.parametrize('how, status', [('stop', 75), ('return', 0)])
def test_a_rank_leaves_with_its_own_status_while_gloo_waits_for_the_gil(tmp_path, how, status):
    script = tmp_path / 'rank.py'
    script.write_text(RANK_SCRIPT.format(module=os.path.join(ROOT, 'gunet_arch', 'distributed_exit.py')))
    store = str(tmp_path / 'store')
    ranks = [subprocess.Popen([sys.executable, str(script), str(r), store, how], env=run_env(), text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for r in (0, 1)]
    outs = [p.communicate(timeout=120)[0] for p in ranks]
    assert ranks[1].returncode == status, outs[1][-3000:]
    assert 'terminate called' not in outs[1]
    assert ranks[0].returncode == 0, outs[0][-3000:]


def test_without_a_process_group_system_exit_goes_on_as_usual():
    from gunet_arch.distributed_exit import leave_without_interpreter_shutdown

    with pytest.raises(SystemExit) as stop, leave_without_interpreter_shutdown():
        raise SystemExit(75)
    assert stop.value.code == 75
    with leave_without_interpreter_shutdown():
        pass  # and a pipeline that returns just returns
