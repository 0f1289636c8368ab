"""Two-process distributed training on the CPU (gloo), launched the two ways users launch it.
Both ranks must end with identical weights, and BatchNorm must have become SyncBN (per-process
batch 2 < 16)."""
import os
import socket
import subprocess
import textwrap

import pytest
import torch
from conftest import PYTHON, ROOT, run_env, tiny_train_opt, write_option_file

TRAIN = os.path.join(ROOT, 'gunet_arch', 'train.py')

# Imported by every Python process that has it on its path; in the workers (RANK is set) it
# makes every model.save() also write that rank's weights, so the test can compare ranks.
RANK_DUMP = textwrap.dedent('''
    import os
    if os.environ.get('RANK') is not None and os.environ.get('GUNET_RANK_DUMP'):
        import torch
        import gunet_arch
        from gunet_arch.models import GUNetModel

        _save = GUNetModel.save

        def save(self, epoch, current_iter):
            _save(self, epoch, current_iter)
            net = self.get_bare_model(self.net_g)
            torch.save({'state_dict': net.state_dict(),
                        'norms': sorted({type(m).__name__ for m in net.modules() if 'Norm' in type(m).__name__})},
                       os.path.join(os.environ['GUNET_RANK_DUMP'], f"rank{os.environ['RANK']}_{current_iter}.pt"))

        GUNetModel.save = save
''')


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.mark.parametrize('launcher', ['torchrun', 'torch.distributed.launch'])
def test_two_process_gloo_training_keeps_ranks_identical(launcher, tiny_its, tmp_path):
    opt = tiny_train_opt(*tiny_its, str(tmp_path / 'exp'), name='tiny_ddp', total_iter=4)
    opt['num_gpu'] = 'auto'  # 0 without CUDA
    opt['datasets']['train']['batch_size_per_gpu'] = 2
    opt['logger']['save_checkpoint_freq'] = 4
    option_file = write_option_file(opt, str(tmp_path / 'train.yml'))
    hook_dir, dump_dir = tmp_path / 'hook', tmp_path / 'dump'
    hook_dir.mkdir()
    dump_dir.mkdir()
    (hook_dir / 'sitecustomize.py').write_text(RANK_DUMP)
    env = run_env()
    env['PYTHONPATH'] = f'{hook_dir}{os.pathsep}{env["PYTHONPATH"]}'
    env['GUNET_RANK_DUMP'] = str(dump_dir)
    env['CUDA_VISIBLE_DEVICES'] = ''  # the CPU/gloo path, even on a GPU machine
    port = str(free_port())
    if launcher == 'torchrun':
        cmd = [PYTHON, '-m', 'torch.distributed.run', '--nproc_per_node=2', '--master_addr=127.0.0.1',
               f'--master_port={port}']
    else:  # the legacy launcher passes --local-rank=N to the script
        cmd = [PYTHON, '-m', 'torch.distributed.launch', '--nproc_per_node=2', '--master_addr=127.0.0.1',
               f'--master_port={port}']
    cmd += [TRAIN, '-opt', option_file, '--launcher', 'pytorch']
    proc = subprocess.run(cmd, cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]

    ranks = [torch.load(dump_dir / f'rank{r}_4.pt', weights_only=False) for r in (0, 1)]
    assert ranks[0]['norms'] == ranks[1]['norms'] == ['CPUSyncBatchNorm']
    a, b = ranks[0]['state_dict'], ranks[1]['state_dict']
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    log = open(next((tmp_path / 'exp' / 'tiny_ddp').glob('train_*.log'))).read()
    assert 'SyncBN: on (batch_size_per_gpu 2 < 16)' in log and 'World size (gpu number): 2' in log
    # The checkpoint rank 0 wrote is the network both ranks hold.
    saved = torch.load(tmp_path / 'exp' / 'tiny_ddp' / 'models' / 'net_g_4.pth')['params']
    assert all(torch.equal(saved[k], a[k]) for k in a)
