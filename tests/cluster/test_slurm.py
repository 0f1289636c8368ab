"""Training under a real Slurm cluster (scripts/local_slurm.sh: one node, 2 CPUs, gloo):
`srun --ntasks=2` of gunet_arch/train.py --launcher slurm, the shipped sbatch template
scripts/slurm_train.sh (to completion, and through a requeue that resumes the training), and a
BasicSR clone's own basicsr/train.py after scripts/install_into_basicsr.py.

Both ranks must end with identical weights. Each rank seeds itself differently (BasicSR: seed +
rank) and draws other samples (DistributedSampler), so two processes that trained side by side
without averaging their gradients would end with different weights: equal weights, from two
processes that report a gloo process group of size 2 and a DistributedDataParallel network,
show that the Slurm launch made one distributed training."""
import glob
import os
import re
import shutil
import textwrap
import time

import basicsr
import pytest
import torch
from conftest import PYTHON, ROOT, tiny_train_opt, write_option_file, write_tiny_its

pytestmark = pytest.mark.cluster

TEMPLATE = os.path.join(ROOT, 'scripts', 'slurm_train.sh')
INSTALLER = os.path.join(ROOT, 'scripts', 'install_into_basicsr.py')

# Wraps the model class's save(): every rank (not only rank 0, which alone writes checkpoints)
# writes its own network and what it knows of the process group to GUNET_RANK_DUMP/rank<R>_<iter>.pt.
RANK_DUMP = textwrap.dedent('''
    def install_rank_dump(model_cls, dump_dir):
        import os

        import torch
        import torch.distributed as dist

        save = model_cls.save

        def save_and_dump(self, epoch, current_iter):
            save(self, epoch, current_iter)
            net = self.get_bare_model(self.net_g)
            torch.save({
                'state_dict': net.state_dict(),
                'norms': sorted({type(m).__name__ for m in net.modules() if 'Norm' in type(m).__name__}),
                'wrapper': type(self.net_g).__name__,
                'backend': dist.get_backend(), 'rank': dist.get_rank(), 'world_size': dist.get_world_size(),
                'slurm': {k: os.environ.get(k) for k in ('SLURM_JOB_ID', 'SLURM_PROCID', 'SLURM_NTASKS')},
            }, os.path.join(dump_dir, f"rank{dist.get_rank()}_{'latest' if current_iter == -1 else current_iter}.pt"))

        model_cls.save = save_and_dump
''')

# For gunet_arch/train.py, run unchanged: Python imports sitecustomize from PYTHONPATH at start-up.
SITECUSTOMIZE = RANK_DUMP + textwrap.dedent('''
    import os

    if os.environ.get('GUNET_RANK_DUMP') and os.environ.get('SLURM_PROCID') is not None:
        import gunet_arch  # noqa: F401
        from gunet_arch.models import GUNetModel

        install_rank_dump(GUNetModel, os.environ['GUNET_RANK_DUMP'])
''')


# For a BasicSR clone's own basicsr/train.py, run unchanged: nothing may be imported before the clone
# imports itself (that would hide what the installer has to make work), so the rank dump goes onto
# the clone's GUNetModel only once its basicsr.models has been imported (its scan of
# basicsr/models/*_model.py runs the installed hook), and the process says which basicsr that was.
CLONE_SITECUSTOMIZE = RANK_DUMP + textwrap.dedent('''
    import importlib.abc
    import importlib.util
    import os
    import sys


    class AfterBasicsrModels(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name != 'basicsr.models':
                return None
            sys.meta_path.remove(self)
            spec = importlib.util.find_spec(name)
            exec_module = spec.loader.exec_module

            def exec_then_dump(module):
                exec_module(module)
                from basicsr.utils.registry import MODEL_REGISTRY

                install_rank_dump(MODEL_REGISTRY.get('GUNetModel'), os.environ['GUNET_RANK_DUMP'])
                print('BASICSR_FROM', sys.modules['basicsr'].__file__, flush=True)

            spec.loader.exec_module = exec_then_dump
            return spec


    if os.environ.get('GUNET_RANK_DUMP') and os.environ.get('SLURM_PROCID') is not None:
        sys.meta_path.insert(0, AfterBasicsrModels())
''')


def tiny_option_file(tmp_path, name, total_iter=4, checkpoint_freq=4, data_root=None):
    """Two CPU processes, batch 2 each (so BatchNorm becomes SyncBN), on a tiny 32x32 set."""
    hazy, clear = write_tiny_its(str(data_root or tmp_path / 'data'))
    opt = tiny_train_opt(hazy, clear, str(tmp_path / 'exp'), name=name, total_iter=total_iter)
    opt['num_gpu'] = 'auto'  # 0 without CUDA
    opt['datasets']['train']['batch_size_per_gpu'] = 2
    opt['logger']['save_checkpoint_freq'] = checkpoint_freq
    return opt


def assert_ranks_identical(dump_dir, tag, job_id=None):
    ranks = [torch.load(os.path.join(dump_dir, f'rank{r}_{tag}.pt'), weights_only=False) for r in (0, 1)]
    for r, dump in enumerate(ranks):
        assert (dump['rank'], dump['world_size'], dump['backend']) == (r, 2, 'gloo'), dump
        assert dump['wrapper'] == 'DistributedDataParallel' and dump['norms'] == ['CPUSyncBatchNorm'], dump
        assert dump['slurm']['SLURM_PROCID'] == str(r) and dump['slurm']['SLURM_NTASKS'] == '2', dump['slurm']
    assert ranks[0]['slurm']['SLURM_JOB_ID'] == ranks[1]['slurm']['SLURM_JOB_ID']
    if job_id is not None:
        assert ranks[0]['slurm']['SLURM_JOB_ID'] == job_id
    a, b = ranks[0]['state_dict'], ranks[1]['state_dict']
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f'ranks disagree on {len(differ)} tensors, e.g. {differ[:5]}'
    return a


def read_logs(exp):
    return '\n'.join(open(p).read() for p in sorted(glob.glob(os.path.join(exp, 'train_*.log'))))


def test_srun_two_ranks_train_to_identical_weights(slurm, tmp_path):
    opt = tiny_option_file(tmp_path, 'tiny_srun')
    option_file = write_option_file(opt, str(tmp_path / 'train.yml'))
    hook_dir, dump_dir = tmp_path / 'hook', tmp_path / 'dump'
    hook_dir.mkdir()
    dump_dir.mkdir()
    (hook_dir / 'sitecustomize.py').write_text(SITECUSTOMIZE)
    env = slurm.env(GUNET_RANK_DUMP=str(dump_dir))
    env['PYTHONPATH'] = f'{hook_dir}{os.pathsep}{env["PYTHONPATH"]}'

    proc = slurm.srun('srun', 2, [PYTHON, '-u', 'gunet_arch/train.py', '-opt', option_file, '--launcher', 'slurm'],
                      env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]

    weights = assert_ranks_identical(dump_dir, 4)
    assert_ranks_identical(dump_dir, 'latest')
    exp = tmp_path / 'exp' / 'tiny_srun'
    log = read_logs(exp)
    assert 'World size (gpu number): 2' in log and 'SyncBN: on (batch_size_per_gpu 2 < 16)' in log
    assert 'iter:       4,' in log and 'End of training' in log
    saved = torch.load(exp / 'models' / 'net_g_latest.pth')['params']  # written by rank 0 alone
    assert saved.keys() == weights.keys() and all(torch.equal(saved[k], weights[k]) for k in saved)


def submit_template(slurm, tmp_path, option_file, label, extra=()):
    """The shipped template as a user submits it, from the project checkout, with command-line
    options that fit the local cluster (no GPUs: --gres=none; 2 CPUs: 2 tasks x 1 CPU)."""
    output = str(tmp_path / 'slurm-%j.out')
    options = ['--nodes=1', '--ntasks-per-node=2', '--gres=none', '--cpus-per-task=1', '--time=5',
               f'--output={output}'] + list(extra)
    job_id = slurm.sbatch(label, TEMPLATE, options, env=slurm.env(OPT=option_file), cwd=ROOT)
    return job_id, output.replace('%j', job_id)


def test_sbatch_template_completes(slurm, tmp_path):
    opt = tiny_option_file(tmp_path, 'tiny_sbatch', checkpoint_freq=2)
    option_file = write_option_file(opt, str(tmp_path / 'train.yml'))
    job_id, output = submit_template(slurm, tmp_path, option_file, 'sbatch')
    info = slurm.wait(job_id, timeout=240)
    out = open(output).read() if os.path.exists(output) else '(no output file)'
    assert (info['JobState'], info['ExitCode']) == ('COMPLETED', '0:0'), f'{info}\n{out[-5000:]}'
    assert info['NumTasks'] == '2' and info['Requeue'] == '1', info
    exp = tmp_path / 'exp' / 'tiny_sbatch'
    log = read_logs(exp)
    assert 'World size (gpu number): 2' in log and 'iter:       4,' in log and 'End of training' in log
    assert sorted(os.listdir(exp / 'models')) == ['net_g_2.pth', 'net_g_4.pth', 'net_g_latest.pth']
    assert 'End of training' in out  # rank 0 logs to the job's output file too


def wait_for_state(slurm, job_id, states, timeout=180):
    """Until the training has written its first state: it is then past start-up, in the loop."""
    end = time.monotonic() + timeout
    while not (states / '10.state').exists():
        info = slurm.job(job_id)
        assert info['JobState'] in ('PENDING', 'CONFIGURING', 'RUNNING'), info
        assert time.monotonic() < end, f'no training state after {timeout} s: {info}'
        time.sleep(0.2)


def test_sbatch_template_requeues_on_usr1_and_resumes(slurm, tmp_path):
    """The time-limit warning of --signal=USR1@120, sent now to the job's steps as Slurm does:
    the ranks save the state of the iteration they are in and exit with 75, the template requeues
    the job, and the restarted job resumes from exactly that iteration (--auto_resume)."""
    opt = tiny_option_file(tmp_path, 'tiny_requeue', total_iter=200, checkpoint_freq=10)
    option_file = write_option_file(opt, str(tmp_path / 'train.yml'))
    job_id, output = submit_template(slurm, tmp_path, option_file, 'requeue')
    exp = tmp_path / 'exp' / 'tiny_requeue'
    wait_for_state(slurm, job_id, exp / 'training_states')
    slurm.run(['scancel', '--signal=USR1', job_id])
    info = slurm.wait(job_id, timeout=240)
    out = open(output).read() if os.path.exists(output) else '(no output file)'
    assert (info['JobState'], info['ExitCode'], info['Restarts']) == ('COMPLETED', '0:0', '1'), f'{info}\n{out[-5000:]}'
    assert f'saved its state: requeueing job {job_id}' in out and '(restart 1)' in out, out[-5000:]
    log = read_logs(exp)
    stopped = [int(it) for it in re.findall(r'Training stopped after iteration (\d+)', log)]
    resumed = [int(it) for it in re.findall(r'Resuming training from epoch: \d+, iter: (\d+)', log)]
    assert len(stopped) == 1 and stopped == resumed and 10 <= stopped[0] < 200, log[-3000:]
    assert 'iter:     200,' in log and 'End of training' in log
    assert (exp / 'models' / 'net_g_200.pth').is_file() and (exp / 'models' / 'net_g_latest.pth').is_file()


def test_sbatch_template_is_not_requeued_when_cancelled(slurm, tmp_path):
    """scancel's SIGTERM also makes the ranks save and exit with 75; the template must not take
    that for the time-limit warning and requeue a job its user cancelled."""
    opt = tiny_option_file(tmp_path, 'tiny_cancel', total_iter=200, checkpoint_freq=10)
    option_file = write_option_file(opt, str(tmp_path / 'train.yml'))
    job_id, output = submit_template(slurm, tmp_path, option_file, 'cancel')
    wait_for_state(slurm, job_id, tmp_path / 'exp' / 'tiny_cancel' / 'training_states')
    slurm.run(['scancel', job_id])
    end = time.monotonic() + 60
    while slurm.run(['squeue', '-h', '-j', job_id], check=False).stdout.strip():  # pending again if requeued
        assert time.monotonic() < end, slurm.job(job_id)
        time.sleep(0.5)
    info = slurm.job(job_id)
    out = open(output).read() if os.path.exists(output) else '(no output file)'
    assert (info['JobState'], info['Restarts']) == ('CANCELLED', '0'), f'{info}\n{out[-5000:]}'
    assert 'requeueing' not in out


def test_basicsr_clone_train_py_under_srun(slurm, tmp_path):
    """A clone of BasicSR 1.4.2 (laid out from the installed package, as tests/test_install_into_basicsr.py
    does) with gUNet installed into it: its own basicsr/train.py --launcher slurm on two ranks, run
    directly (the installer's import fix makes 1.4.2 importable on current torchvision)."""
    clone = tmp_path / 'BasicSR'
    shutil.copytree(os.path.dirname(basicsr.__file__), clone / 'basicsr',
                    ignore=shutil.ignore_patterns('__pycache__', '*.pyc', 'gunet_plugin_model.py'))
    installed = slurm.run([PYTHON, INSTALLER, str(clone)], timeout=120)
    assert installed.returncode == 0
    opt = tiny_option_file(tmp_path, 'tiny_clone_slurm', data_root=clone / 'datasets' / 'tiny')
    for key, folder in (('dataroot_lq', 'hazy'), ('dataroot_gt', 'clear')):
        opt['datasets']['train'][key] = f'datasets/tiny/{folder}'  # relative to the clone
    del opt['path']['experiments_root']  # BasicSR's default: <clone>/experiments/<name>
    write_option_file(opt, str(clone / 'options' / 'train_tiny_clone_slurm.yml'))
    hook_dir, dump_dir = tmp_path / 'hook', tmp_path / 'dump'
    hook_dir.mkdir()
    dump_dir.mkdir()
    (hook_dir / 'sitecustomize.py').write_text(CLONE_SITECUSTOMIZE)
    env = slurm.env(GUNET_RANK_DUMP=str(dump_dir))
    env['PYTHONPATH'] = f'{hook_dir}{os.pathsep}{clone}{os.pathsep}{env["PYTHONPATH"]}'
    proc = slurm.srun('clone', 2, [PYTHON, '-u', 'basicsr/train.py', '-opt', 'options/train_tiny_clone_slurm.yml',
                                   '--launcher', 'slurm'], env=env, cwd=str(clone))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert proc.stdout.count(f'BASICSR_FROM {clone / "basicsr" / "__init__.py"}') == 2, proc.stdout[-3000:]

    assert_ranks_identical(dump_dir, 'latest')
    exp = clone / 'experiments' / 'tiny_clone_slurm'
    log = read_logs(exp)
    assert 'Model [GUNetModel] is created.' in log and 'World size (gpu number): 2' in log
    assert (exp / 'models' / 'net_g_latest.pth').is_file()
