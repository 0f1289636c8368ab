"""A training run that a cluster interrupts: exact total_iter whatever the dataset size, Ctrl-C
and resume without a step lost or repeated, keep_checkpoints, a disk that fills up, one run per
experiment, truncated training states, and SLURM variables that are missing. Single-process
runs here; the 2-rank and SLURM versions are in tests/cluster."""
import os
import resource
import signal
import subprocess
import time

import pytest
import torch
from basicsr.models import build_model
from conftest import PYTHON, ROOT, run_env, tiny_train_opt, write_option_file, write_tiny_its

from gunet_arch import compat, run_lock
from gunet_arch.models.stop_signals import PREEMPTED_EXIT_CODE

TRAIN = os.path.join(ROOT, 'gunet_arch', 'train.py')


def option_file(tmp_path, n_pairs, total_iter, name='faults', batch=4, enlarge=1, save_freq=None, **net):
    data = write_tiny_its(str(tmp_path / 'data'), n_clear=n_pairs, hazes=(0.5, ), size=(32, 32))
    opt = tiny_train_opt(*data, str(tmp_path / 'experiments'), name=name, total_iter=total_iter)
    opt['datasets']['train'].update(batch_size_per_gpu=batch, dataset_enlarge_ratio=enlarge)
    opt['logger']['save_checkpoint_freq'] = save_freq or total_iter
    opt['network_g'].update(net)
    return write_option_file(opt, str(tmp_path / f'{name}.yml')), tmp_path / 'experiments' / name


def train(args, **kwargs):
    return subprocess.run([PYTHON, TRAIN, '-opt'] + args, cwd=ROOT, env=run_env(), capture_output=True, text=True,
                          timeout=300, **kwargs)


def optimizer_steps(state_path):
    state = torch.load(state_path, map_location='cpu', weights_only=False)
    return state['iter'], {int(v['step']) for v in state['optimizers'][0]['state'].values()}


@pytest.mark.system
@pytest.mark.parametrize('n_pairs, batch, enlarge, total', [(10, 4, 1, 7), (5, 4, 3, 9)])
def test_exactly_total_iter_iterations_whatever_the_dataset_size(tmp_path, n_pairs, batch, enlarge, total):
    """10 pairs at batch 4 give 2 full batches per epoch, not BasicSR's 3; 5 pairs enlarged x3
    give 3, not 4. BasicSR's count would stop short of total_iter."""
    opt, exp = option_file(tmp_path, n_pairs, total, batch=batch, enlarge=enlarge)
    proc = train([opt])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert optimizer_steps(exp / 'training_states' / f'{total}.state') == (total, {total})
    assert f'iter:{total:>8},' in proc.stderr


def wait_for(predicate, timeout=120):
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return True
        time.sleep(0.1)
    return False


@pytest.mark.system
def test_ctrl_c_saves_the_iteration_and_resume_finishes_without_a_step_lost_or_repeated(tmp_path):
    opt, exp = option_file(tmp_path, 8, 60, save_freq=60)
    proc = subprocess.Popen([PYTHON, TRAIN, '-opt', opt], cwd=ROOT, env=run_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    log = []
    for line in proc.stdout:
        log.append(line)
        if 'iter:       5,' in line:
            proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) == PREEMPTED_EXIT_CODE, ''.join(log)[-3000:]
    text = ''.join(log)
    states = sorted(os.listdir(exp / 'training_states'))
    assert len(states) == 1, states
    stopped = int(states[0].split('.')[0])
    assert 5 <= stopped < 60 and (exp / 'models' / 'net_g_latest.pth').is_file()
    assert f'Training stopped after iteration {stopped} of 60' in text and '--auto_resume' in text
    assert optimizer_steps(exp / 'training_states' / states[0]) == (stopped, {stopped})

    resumed = train([opt, '--auto_resume'])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f'iter: {stopped}\n' in resumed.stderr.split('Start training from epoch: ')[1]
    assert f'iter:{stopped + 1:>8},' in resumed.stderr and f'iter:{stopped:>8},' not in resumed.stderr
    assert optimizer_steps(exp / 'training_states' / '60.state') == (60, {60})


def test_keep_checkpoints_keeps_the_newest(tiny_its, tmp_path):
    opt = tiny_train_opt(*tiny_its, str(tmp_path / 'exp'))
    opt['logger']['keep_checkpoints'] = 2
    for key in ('models', 'training_states'):
        os.makedirs(opt['path'][key])
    model = build_model(opt)
    for it in (2, 4, 6, 8):
        model.save(0, it)
    model.save(0, -1)
    assert sorted(os.listdir(opt['path']['models'])) == ['net_g_6.pth', 'net_g_8.pth', 'net_g_latest.pth']
    assert sorted(os.listdir(opt['path']['training_states'])) == ['6.state', '8.state']


def _small_files(limit):
    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of death by signal
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return limit_file_size


@pytest.mark.system
def test_a_full_disk_stops_the_run_and_keeps_the_previous_checkpoint(tmp_path):
    opt, exp = option_file(tmp_path, 8, 4, save_freq=2, variant='t', base_dim=None, depths=None)
    assert train([opt]).returncode == 0
    before = {p: p.read_bytes() for p in [exp / 'models' / 'net_g_4.pth', exp / 'models' / 'net_g_latest.pth',
                                          exp / 'training_states' / '4.state']}
    with open(opt) as f:
        longer = f.read().replace('total_iter: 4', 'total_iter: 8')
    with open(opt, 'w') as f:
        f.write(longer)
    # The network's weights are ~3.4 MB: a 1 MB file-size limit makes the save at iteration 6
    # fail as a full disk does, with ENOSPC's sibling EFBIG.
    proc = train([opt, '--auto_resume'], preexec_fn=_small_files(1 << 20))
    assert proc.returncode != 0
    assert f'cannot write {exp / "models" / "net_g_6.pth"}' in proc.stderr
    assert 'previous checkpoints and training states are intact' in proc.stderr
    for path, data in before.items():
        assert path.read_bytes() == data
    assert sorted(os.listdir(exp / 'models')) == ['net_g_2.pth', 'net_g_4.pth', 'net_g_latest.pth']
    assert sorted(os.listdir(exp / 'training_states')) == ['2.state', '4.state']


@pytest.mark.system
def test_one_run_per_experiment_and_a_stale_lock_is_taken_over(tmp_path):
    opt, exp = option_file(tmp_path, 8, 100000)
    first = subprocess.Popen([PYTHON, TRAIN, '-opt', opt], cwd=ROOT, env=run_env(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        lock = run_lock.lock_path(str(exp))
        assert wait_for(lambda: os.path.isfile(lock) and open(lock).read().startswith(f'pid {first.pid} '))
        second = train([opt])
        assert second.returncode != 0
        assert f'is being trained by pid {first.pid} on ' in second.stderr and lock in second.stderr
        assert first.poll() is None  # untouched, and its folder was not archived
        assert not [n for n in os.listdir(exp.parent) if 'archived' in n]
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=120)
    with open(lock, 'w') as f:
        f.write('pid 999999 on some-node, started 2026-01-01T00:00:00')  # a crashed run's lock
    opt_short, _ = option_file(tmp_path, 8, 3)
    again = train([opt_short])
    assert again.returncode == 0, again.stderr[-3000:]
    assert 'Taking over the lock of a run that ended without releasing it (pid 999999' in again.stderr
    assert open(lock).read() == ''  # released at a clean exit


def test_auto_resume_skips_a_truncated_state(tiny_its, tmp_path, capsys):
    opt = tiny_train_opt(*tiny_its, str(tmp_path / 'exp'))
    for key in ('models', 'training_states'):
        os.makedirs(opt['path'][key])
    model = build_model(opt)
    model.save(0, 2)
    model.save(0, 4)
    newest = os.path.join(opt['path']['training_states'], '4.state')
    with open(newest, 'r+b') as f:
        f.truncate(100)
    opt['auto_resume'] = True
    state = compat.load_resume_state(opt)
    assert state['iter'] == 2 and opt['path']['resume_state'].endswith('2.state')
    assert f'--auto_resume: skipping {newest}' in capsys.readouterr().err
    opt['auto_resume'], opt['path']['resume_state'] = False, newest
    with pytest.raises(ValueError, match='path.resume_state: .*4.state cannot be resumed from'):
        compat.load_resume_state(opt)


@pytest.mark.parametrize('missing', ['SLURM_PROCID', 'SLURM_NTASKS', 'SLURM_JOB_ID'])
def test_launcher_slurm_names_a_missing_variable(monkeypatch, missing):
    env = {'SLURM_PROCID': '0', 'SLURM_NTASKS': '1', 'SLURM_LOCALID': '0', 'SLURM_NODELIST': 'node1',
           'SLURM_JOB_ID': '77'}
    for key in list(os.environ):
        if key.startswith('SLURM_'):
            monkeypatch.delenv(key)
    for key, value in env.items():
        if key != missing:
            monkeypatch.setenv(key, value)
    with pytest.raises(RuntimeError, match=f'environment variable {missing} is not set'):
        compat.init_dist('slurm')


def test_slurm_ports_differ_between_jobs():
    ports = {compat.slurm_master_port(job) for job in range(1000, 1100)}
    assert len(ports) == 100 and all(15000 <= p < 30000 for p in ports)
