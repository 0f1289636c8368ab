"""Faults a multi-rank run meets, with 2 gloo ranks under torchrun standing in for GPUs: a stop
signal to one rank or to the launcher, a rank killed with SIGKILL (relaunch, and torchrun's own
--max-restarts), and two torchrun launchers acting as two nodes. Each run ends with exactly
total_iter optimizer steps, none lost or repeated."""
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import torch
from conftest import ROOT, run_env, tiny_train_opt, write_option_file, write_tiny_its

from gunet_arch.models.stop_signals import PREEMPTED_EXIT_CODE

pytestmark = pytest.mark.cluster

TRAIN = os.path.join(ROOT, 'gunet_arch', 'train.py')
TORCHRUN = [sys.executable, '-m', 'torch.distributed.run']
TOTAL = 400


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def option_file(tmp_path, total_iter=TOTAL, save_freq=TOTAL, timeout=20):
    """12 pairs on 2 ranks x batch 4: one full batch per rank and epoch (BasicSR counts two)."""
    data = write_tiny_its(str(tmp_path / 'data'), n_clear=12, hazes=(0.5, ), size=(32, 32))
    opt = tiny_train_opt(*data, str(tmp_path / 'experiments'), name='ranks', total_iter=total_iter)
    opt['logger']['save_checkpoint_freq'] = save_freq
    opt['dist_params'] = {'timeout': timeout}
    return write_option_file(opt, str(tmp_path / 'ranks.yml')), tmp_path / 'experiments' / 'ranks'


def launch(opt, *extra, torchrun_args=(), log=None):
    cmd = TORCHRUN + ['--nproc_per_node=2', f'--master_port={free_port()}', *torchrun_args, TRAIN, '-opt', opt,
                      '--launcher', 'pytorch', *extra]
    return subprocess.Popen(cmd, cwd=ROOT, env=run_env(), stdout=log or subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


def rank_pids(launcher):
    out = subprocess.run(['pgrep', '-P', str(launcher.pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def run_until(proc, pattern, act, timeout=240):
    """Read ``proc``'s output; when a line matches ``pattern`` call ``act`` once. Returns the
    whole output and the exit status; a run still going after ``timeout`` s is killed."""
    watchdog = threading.Timer(timeout, lambda: os.killpg(proc.pid, signal.SIGKILL))
    watchdog.start()
    lines, acted = [], False
    try:
        for line in proc.stdout:
            lines.append(line)
            if not acted and re.search(pattern, line):
                acted = True
                act()
        return ''.join(lines), proc.wait(timeout=60)
    finally:
        watchdog.cancel()


def final_steps(exp):
    """(iteration, AdamW step counts) of the newest training state."""
    states = sorted((int(n.split('.')[0]), n) for n in os.listdir(exp / 'training_states') if n.endswith('.state'))
    state = torch.load(exp / 'training_states' / states[-1][1], map_location='cpu', weights_only=False)
    return state['iter'], {int(v['step']) for v in state['optimizers'][0]['state'].values()}


def resume_and_finish(opt, exp, stopped):
    start = time.time()
    proc = launch(opt, '--auto_resume')
    out, code = run_until(proc, r'$^', lambda: None)
    assert code == 0, out[-4000:]
    first_new = re.search(rf'iter:\s+{stopped + 1},', out)
    assert first_new, out[-4000:]
    assert not re.search(rf'iter:\s+{stopped},', out)  # nothing repeated
    assert final_steps(exp) == (TOTAL, {TOTAL})  # nothing lost either
    return time.time() - start


def stopped_iteration(out):
    match = re.search(r'Training stopped after iteration (\d+) of', out)
    assert match, out[-4000:]
    return int(match.group(1))


@pytest.mark.parametrize('target, sig', [('rank1', signal.SIGUSR1), ('rank0', signal.SIGTERM),
                                         ('launcher', signal.SIGTERM)])
def test_a_stop_signal_saves_one_state_and_resume_finishes_exactly(tmp_path, target, sig):
    opt, exp = option_file(tmp_path)
    proc = launch(opt)

    def send():
        pids = sorted(rank_pids(proc))
        pid = proc.pid if target == 'launcher' else pids[int(target[-1])] if len(pids) == 2 else pids[0]
        os.kill(pid, sig)

    out, code = run_until(proc, r'iter:\s+20,', send)
    assert code != 0 and f'exit status {PREEMPTED_EXIT_CODE}' in out, out[-4000:]
    stopped = stopped_iteration(out)
    assert 20 <= stopped < TOTAL
    assert sorted(os.listdir(exp / 'training_states')) == [f'{stopped}.state']
    assert final_steps(exp) == (stopped, {stopped})
    assert (exp / 'models' / 'net_g_latest.pth').is_file()
    resume_and_finish(opt, exp, stopped)


def test_a_killed_rank_ends_the_job_quickly_and_a_relaunch_resumes(tmp_path):
    opt, exp = option_file(tmp_path, save_freq=50)
    proc = launch(opt)
    killed_at = []

    def kill():
        killed_at.append(time.time())
        os.kill(sorted(rank_pids(proc))[-1], signal.SIGKILL)

    out, code = run_until(proc, r'iter:\s+120,', kill)
    assert code != 0
    assert time.time() - killed_at[0] < 60  # dist_params.timeout is 20 s; gloo notices the dead peer sooner
    newest, _ = final_steps(exp)
    assert newest in (100, 150)
    resume_and_finish(opt, exp, newest)


def test_torchrun_max_restarts_resumes_after_a_killed_rank(tmp_path):
    opt, exp = option_file(tmp_path, save_freq=50)
    proc = launch(opt, '--auto_resume', torchrun_args=['--max-restarts=1'])
    out, code = run_until(proc, r'iter:\s+120,', lambda: os.kill(sorted(rank_pids(proc))[-1], signal.SIGKILL))
    assert code == 0, out[-4000:]
    resumed = re.findall(r'Resuming training from epoch: \d+, iter: (\d+)\.', out)
    assert resumed and int(resumed[-1]) in (100, 150)
    assert final_steps(exp) == (TOTAL, {TOTAL}) or re.search(rf'iter:\s+{TOTAL},', out)


def test_two_torchrun_launchers_act_as_two_nodes(tmp_path):
    opt, exp = option_file(tmp_path, total_iter=12, save_freq=12)
    port = free_port()
    # Each "node" checks its own copy of the final weights: rank 0 saves them as usual, and the
    # script below makes every rank write its bare weights when training ends.
    node_script = tmp_path / 'node_train.py'
    node_script.write_text(
        'import os, sys, torch\n'
        f'sys.path.insert(0, {ROOT!r})\n'
        'import gunet_arch\n'
        'from gunet_arch.models import GUNetModel\n'
        'save = GUNetModel.save\n'
        'def save_and_dump(self, epoch, current_iter):\n'
        '    save(self, epoch, current_iter)\n'
        '    if current_iter == -1:\n'
        '        sd = self.get_bare_model(self.net_g).state_dict()\n'
        f'        torch.save(sd, os.path.join({str(tmp_path)!r}, "rank%s.pth" % os.environ["RANK"]))\n'
        'GUNetModel.save = save_and_dump\n'
        'from gunet_arch.train import main\n'
        'main()\n')
    nodes = []
    for _ in range(2):
        cmd = TORCHRUN + ['--nnodes=2', '--nproc_per_node=1', '--rdzv_backend=c10d',
                          f'--rdzv_endpoint=127.0.0.1:{port}', '--rdzv_id=gunet-two-nodes', str(node_script), '-opt',
                          opt, '--launcher', 'pytorch']
        nodes.append(subprocess.Popen(cmd, cwd=ROOT, env=run_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True, start_new_session=True))
    try:
        outs = [n.communicate(timeout=300)[0] for n in nodes]
    finally:
        for n in nodes:
            if n.poll() is None:
                os.killpg(n.pid, signal.SIGKILL)
    assert [n.returncode for n in nodes] == [0, 0], outs[0][-3000:] + outs[1][-3000:]
    a, b = (torch.load(tmp_path / f'rank{r}.pth', weights_only=True) for r in range(2))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert final_steps(exp) == (12, {12})
