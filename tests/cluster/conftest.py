"""Fixtures of the cluster tests: a real Slurm cluster, started by `scripts/local_slurm.sh start`
(`make test-cluster` starts and stops it), and a helper that submits jobs to it and cancels
whatever is left of them when a test ends.

These tests run only with `-m cluster` and a running cluster; `make test` leaves them out."""
import os
import re
import subprocess
import time

import pytest
from conftest import PYTHON, ROOT, run_env

LOCAL_SLURM = os.path.join(ROOT, 'scripts', 'local_slurm.sh')
FINAL_STATES = {'COMPLETED', 'FAILED', 'CANCELLED', 'TIMEOUT', 'NODE_FAIL', 'PREEMPTED', 'OUT_OF_MEMORY',
                'BOOT_FAIL', 'DEADLINE'}


def pytest_configure(config):
    config.addinivalue_line('markers', 'cluster: needs the local Slurm cluster (make test-cluster)')


def slurm_conf():
    """SLURM_CONF of the running local cluster: from the environment, else from the env file
    that scripts/local_slurm.sh writes into its state folder."""
    if os.environ.get('SLURM_CONF'):
        return os.environ['SLURM_CONF']
    env_file = os.path.join(os.environ.get('GUNET_SLURM_DIR', '/tmp/gunet-slurm'), 'env')
    if os.path.isfile(env_file):
        match = re.search(r'SLURM_CONF=(\S+)', open(env_file).read())
        if match:
            return match.group(1)
    return None


class Slurm:
    """Submits to the local cluster with the project's environment: the project importable, one
    thread per rank, no GPU (gloo), this interpreter's bin/ first on PATH (so `python` in a batch
    script is this virtual environment's). Remembers every job it may have started."""

    def __init__(self, conf):
        self.conf = conf
        self.job_names = []
        self.job_ids = []

    def env(self, **extra):
        env = run_env()
        env['SLURM_CONF'] = self.conf
        env['PATH'] = os.path.dirname(PYTHON) + os.pathsep + env.get('PATH', '')
        env['CUDA_VISIBLE_DEVICES'] = ''
        # A test run inside a Slurm job must not hand its own job's settings to the jobs it submits.
        for key in [k for k in env if k.startswith(('SLURM_', 'SBATCH_', 'SRUN_', 'SALLOC_')) and k != 'SLURM_CONF']:
            del env[key]
        env.update(extra)
        return env

    def job_name(self, label):
        name = f'gunet-test-{label}-{os.getpid()}-{len(self.job_names)}'
        self.job_names.append(name)
        return name

    def run(self, args, env=None, timeout=60, check=True, **kwargs):
        proc = subprocess.run(args, env=env or self.env(), capture_output=True, text=True, timeout=timeout, **kwargs)
        if check and proc.returncode != 0:
            raise AssertionError(f'{args} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}')
        return proc

    def srun(self, label, ntasks, command, time_min=3, timeout=300, **kwargs):
        """`srun --ntasks=N` of ``command`` as a job of its own; returns the CompletedProcess."""
        args = ['srun', f'--job-name={self.job_name(label)}', f'--ntasks={ntasks}', '--cpus-per-task=1',
                f'--time={time_min}', '--kill-on-bad-exit=1'] + list(command)
        return self.run(args, timeout=timeout, check=False, **kwargs)

    def sbatch(self, label, script, options=(), **kwargs):
        """Submits ``script`` with sbatch ``options`` (which override its #SBATCH lines); job id."""
        args = ['sbatch', '--parsable', f'--job-name={self.job_name(label)}'] + list(options) + [script]
        job_id = self.run(args, **kwargs).stdout.strip().split(';')[0]
        self.job_ids.append(job_id)
        return job_id

    def job(self, job_id):
        """`scontrol show job` as a dict (JobState, ExitCode, Restarts, ...)."""
        out = self.run(['scontrol', 'show', 'job', '-o', job_id], timeout=20).stdout
        return dict(re.findall(r'(\w+)=(\S*)', out))

    def wait(self, job_id, timeout=240, until=None):
        """Polls until the job has ended (or ``until(info)`` holds); its last `scontrol` record."""
        end = time.monotonic() + timeout
        while True:
            info = self.job(job_id)
            if info.get('JobState') in FINAL_STATES or (until is not None and until(info)):
                return info
            if time.monotonic() > end:
                raise AssertionError(f'job {job_id} still {info.get("JobState")} after {timeout} s: {info}')
            time.sleep(0.5)

    def cancel_all(self):
        for job_id in self.job_ids:
            subprocess.run(['scancel', job_id], env=self.env(), capture_output=True, timeout=20)
        for name in self.job_names:
            subprocess.run(['scancel', f'--name={name}'], env=self.env(), capture_output=True, timeout=20)


@pytest.fixture
def slurm():
    """The running local cluster; fails (not skips) when there is none. Cancels the test's jobs
    at the end, whatever happened."""
    conf = slurm_conf()
    env = dict(os.environ, SLURM_CONF=conf or '')
    up = conf is not None and subprocess.run([LOCAL_SLURM, 'status'], env=env, capture_output=True,
                                             timeout=60).returncode == 0
    if not up:
        pytest.fail('no local Slurm cluster is running: `make test-cluster` starts one '
                    '(or scripts/local_slurm.sh start, then source /tmp/gunet-slurm/env)')
    helper = Slurm(conf)
    try:
        yield helper
    finally:
        helper.cancel_all()
