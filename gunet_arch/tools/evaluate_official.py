"""Test the official gUNet checkpoints on their test sets and put the results beside the paper's.

Each checkpoint is tested by ``gunet_arch/test.py`` (BasicSR's test pipeline, GUNetModel,
PairedDehazeDataset, the paper-protocol metrics), in a process of its own, on an option file made
from the shipped ``options/test_gunet_<variant>_<set>.yml``: only the experiment name, the data
paths, the checkpoint (``param_key_g: state_dict``, the official format) and the results folder
change. The means are read back from the per-image CSV that the test writes.

The official code saves ``saved_models/<exp>/<model>.pth`` (``gunet_t.pth`` ...), its README shows
``gunet-t.pth``; both are found, in ``DIR/<exp>/`` or in ``DIR`` itself when ``DIR`` is an
experiment folder (or ``--exp`` names it).
"""
import os
import os.path as osp
import subprocess
import sys
import tempfile
import time
from collections import namedtuple

import yaml

from gunet_arch.archs.checkpoints import load_gunet_checkpoint
from gunet_arch.archs.variants import VARIANTS
from gunet_arch.options import PROJECT_ROOT, output_root
from gunet_arch.tools.metrics_csv import read_metrics_csv

# The paper's table (PSNR dB / SSIM), per variant and training set; the shipped option files quote it.
PAPER = {
    't': {'its': (37.99, 0.993), 'ots': (34.52, 0.983), 'haze4k': (31.60, 0.984), 'rshaze': (38.80, 0.967)},
    's': {'its': (39.76, 0.995), 'ots': (35.17, 0.984), 'haze4k': (32.18, 0.985), 'rshaze': (39.22, 0.969)},
    'b': {'its': (40.65, 0.996), 'ots': (36.29, 0.986), 'haze4k': (33.12, 0.988), 'rshaze': (39.35, 0.970)},
    'd': {'its': (41.34, 0.996), 'ots': (36.64, 0.986), 'haze4k': (33.52, 0.988), 'rshaze': (39.70, 0.971)},
}
# Training set -> the official experiment folder its checkpoints are saved in (saved_models/<exp>/).
OFFICIAL_EXP = {'its': 'reside-in', 'ots': 'reside-out', 'haze4k': 'haze4k', 'rshaze': 'rshaze'}
# Training set -> the suffix of its shipped test option file, test_gunet_<variant>_<suffix>.yml.
TEST_SUFFIX = {'its': 'sots_indoor', 'ots': 'sots_outdoor', 'haze4k': 'haze4k', 'rshaze': 'rshaze'}
CHECKPOINT_NAMES = ('gunet_{v}.pth', 'gunet-{v}.pth')  # official train.py/test.py, official README
TEST_SCRIPT = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'test.py')

Data = namedtuple('Data', ['hazy', 'clear', 'backend'])
Job = namedtuple('Job', ['variant', 'key', 'checkpoint', 'shipped', 'set_name', 'data'])
Result = namedtuple('Result', ['job', 'psnr', 'ssim', 'images', 'csv', 'error'])


def paper_text(variant, key):
    psnr, ssim = PAPER[variant][key]
    return f'{psnr:.2f} / {ssim:.3f}'


def shipped_option_file(variant, key, options_dir=None):
    return osp.join(options_dir or osp.join(PROJECT_ROOT, 'options'), f'test_gunet_{variant}_{TEST_SUFFIX[key]}.yml')


def load_yaml(path):
    with open(path) as f:
        return yaml.safe_load(f)


def find_checkpoint(weights_dir, key, variant, loose_exp):
    """The official checkpoint of ``variant`` trained on ``key``, or None."""
    exp = OFFICIAL_EXP[key]
    folders = [osp.join(weights_dir, exp)] + ([weights_dir] if loose_exp == exp else [])
    for folder in folders:
        for name in CHECKPOINT_NAMES:
            path = osp.join(folder, name.format(v=variant))
            if osp.isfile(path):
                return path
    return None


def find_data(data_root, test):
    """Where the test set of a shipped option file (its ``datasets.test``) lies under
    ``data_root``: its two LMDBs (``<SET>/hazy.lmdb``, ``<SET>/clear.lmdb``, as
    scripts/prepare_lmdb.py writes them), or the official rearrangement's ``<SET>/IN`` and
    ``<SET>/GT`` folders. (folder, Data or None)."""
    rel = osp.relpath(osp.dirname(test['dataroot_lq']), 'datasets')
    folder = osp.join(data_root, rel)
    hazy = osp.join(folder, osp.basename(test['dataroot_lq']))
    clear = osp.join(folder, osp.basename(test['dataroot_gt']))
    if osp.isdir(hazy) and osp.isdir(clear):
        return folder, Data(hazy, clear, 'lmdb')
    if osp.isdir(osp.join(folder, 'IN')) and osp.isdir(osp.join(folder, 'GT')):
        return folder, Data(osp.join(folder, 'IN'), osp.join(folder, 'GT'), 'disk')
    return folder, None


def plan(weights_dir, data_root, variants, keys, loose_exp=None, options_dir=None):
    """(jobs to run, lines naming what is missing)."""
    jobs, missing = [], []
    for key in keys:
        found = {v: find_checkpoint(weights_dir, key, v, loose_exp) for v in variants}
        absent = [CHECKPOINT_NAMES[0].format(v=v) for v, path in found.items() if path is None]
        if absent:
            folder = weights_dir if loose_exp == OFFICIAL_EXP[key] else osp.join(weights_dir, OFFICIAL_EXP[key])
            missing.append(f'missing checkpoint{"s" * (len(absent) > 1)} in {folder}: {" ".join(absent)}')
        present = [v for v, path in found.items() if path is not None]
        if not present:
            continue
        test = load_yaml(shipped_option_file(present[0], key, options_dir))['datasets']['test']
        folder, data = find_data(data_root, test)
        if data is None:
            skipped = ', '.join(f'gUNet-{v.upper()}' for v in present)
            missing.append(f'missing dataset {test["name"]}: no {folder}/{{hazy,clear}}.lmdb '
                           f'(scripts/prepare_lmdb.py) nor {folder}/{{IN,GT}}; skipped {skipped}')
            continue
        jobs += [Job(v, key, found[v], shipped_option_file(v, key, options_dir), test['name'], data) for v in present]
    return jobs, missing


def loose_checkpoints(weights_dir, loose_exp):
    """Checkpoint files lying directly in ``weights_dir`` that no experiment claims."""
    if loose_exp is not None or not osp.isdir(weights_dir):
        return []
    names = {n.format(v=v) for n in CHECKPOINT_NAMES for v in VARIANTS}
    return sorted(osp.join(weights_dir, n) for n in os.listdir(weights_dir) if n in names)


def option_for(job, name, results_root, save_images):
    """The shipped test option file of ``job``, pointed at the official checkpoint and the data."""
    opt = load_yaml(job.shipped)
    opt['name'] = name
    test = opt['datasets']['test']
    test.update(dataroot_lq=osp.abspath(job.data.hazy), dataroot_gt=osp.abspath(job.data.clear),
                io_backend={'type': job.data.backend})
    opt['path'].update(pretrain_network_g=osp.abspath(job.checkpoint), param_key_g='state_dict',
                       results_root=osp.abspath(results_root))
    opt['val']['save_img'] = save_images
    return opt


def read_means(csv_path):
    """(PSNR, SSIM, number of images) from a test's per-image CSV."""
    per_image, mean = read_metrics_csv(csv_path)
    return mean['psnr'], mean['ssim'], len(per_image)


def run_job(job, results_root, save_images):
    """Test one checkpoint with gunet_arch/test.py; a Result with the means or the error."""
    try:
        load_gunet_checkpoint(job.checkpoint, variant=job.variant)  # a wrong file fails here, named
    except (ValueError, FileNotFoundError) as err:
        return Result(job, None, None, 0, None, str(err))
    name = f'test_official_gunet_{job.variant}_{TEST_SUFFIX[job.key]}'
    opt = option_for(job, name, results_root, save_images)
    with tempfile.TemporaryDirectory(prefix='gunet_official_') as tmp:
        option_file = osp.join(tmp, f'{name}.yml')
        with open(option_file, 'w') as f:
            yaml.safe_dump(opt, f, sort_keys=False)
        proc = subprocess.run([sys.executable, TEST_SCRIPT, '-opt', option_file], capture_output=True, text=True)
    csv_path = osp.join(results_root, name, f'{job.set_name}_metrics.csv')
    if proc.returncode != 0 or not osp.isfile(csv_path):
        tail = '\n'.join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        return Result(job, None, None, 0, None, f'gunet_arch/test.py exited with status {proc.returncode}:\n{tail}')
    psnr, ssim, images = read_means(csv_path)
    return Result(job, psnr, ssim, images, csv_path, None)


def format_table(results, weights_dir):
    lines = ['| model | test set | images | checkpoint | PSNR / SSIM | paper | difference |',
             '|---|---|---|---|---|---|---|']
    for r in results:
        job = r.job
        paper_psnr, paper_ssim = PAPER[job.variant][job.key]
        lines.append(f'| gUNet-{job.variant.upper()} | {job.set_name} | {r.images} | '
                     f'{osp.relpath(job.checkpoint, weights_dir)} | {r.psnr:.2f} / {r.ssim:.4f} | '
                     f'{paper_text(job.variant, job.key)} | {r.psnr - paper_psnr:+.2f} / {r.ssim - paper_ssim:+.4f} |')
    return '\n'.join(lines)


def evaluate(weights_dir, data_root, variants=tuple(VARIANTS), keys=tuple(OFFICIAL_EXP), loose_exp=None,
             results_root=None, save_images=False, options_dir=None):
    """Test every official checkpoint found; print the table. Exit status: 0 all found ones
    tested, 1 some failed, 2 nothing to test."""
    results_root = results_root or osp.join(output_root(), 'results')
    if loose_exp is None and osp.basename(osp.normpath(weights_dir)) in OFFICIAL_EXP.values():
        # An experiment folder itself (saved_models/reside-in): only its own test set.
        loose_exp = osp.basename(osp.normpath(weights_dir))
        keys = [key for key in keys if OFFICIAL_EXP[key] == loose_exp]
    jobs, missing = plan(weights_dir, data_root, variants, keys, loose_exp, options_dir)
    for path in loose_checkpoints(weights_dir, loose_exp):
        missing.append(f'{path}: which experiment? move it into {weights_dir}/<exp>/ '
                       f'({" ".join(OFFICIAL_EXP.values())}) or pass --exp')
    if not jobs:
        print('\n'.join(['not found:'] + [f'  {line}' for line in missing]))
        print(f'error: nothing to evaluate: no official gUNet checkpoint under {weights_dir} (<exp>/gunet_<v>.pth, '
              f'exp one of {", ".join(OFFICIAL_EXP.values())}) has its test set under {data_root}', file=sys.stderr)
        return 2
    results = []
    for i, job in enumerate(jobs, 1):
        print(f'[{i}/{len(jobs)}] gUNet-{job.variant.upper()} on {job.set_name}: {job.checkpoint}', flush=True)
        start = time.monotonic()
        result = run_job(job, results_root, save_images)
        if result.error is None:
            seconds = time.monotonic() - start
            print(f'    {result.psnr:.2f} / {result.ssim:.4f} ({result.images} images, {seconds:.0f} s)',
                  flush=True)
        results.append(result)
    done = [r for r in results if r.error is None]
    failed = [r for r in results if r.error is not None]
    print('')
    if done:
        print('Official gUNet checkpoints tested by gunet_arch/test.py (PSNR dB / SSIM, the paper\'s protocol)\n')
        print(format_table(done, weights_dir))
        print('\nper-image results: ' + ' '.join(r.csv for r in done))
    if missing:
        print('\n'.join(['\nnot run:'] + [f'  {line}' for line in missing]))
    for r in failed:
        print(f'\nfailed: gUNet-{r.job.variant.upper()} ({r.job.checkpoint}): {r.error}')
    return 1 if failed else 0
