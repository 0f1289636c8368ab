"""Fixes to BasicSR's module-level functions: the one place where the plugin patches BasicSR.

Every fix below names the BasicSR behaviour it works around. They apply to PyPI's basicsr 1.4.2
and to BasicSR's git master alike, and each one is a no-op where BasicSR already behaves.

Where BasicSR lets a model class fix something by overriding a method, the fix is a
``GUNetModel`` override instead (``gunet_arch/models/gunet_model.py``): ``get_optimizer`` adds
the AdamW that 1.4.2 lacks, ``model_to_device`` wraps DDP without CUDA device ids on the CPU.
The plugin's own option handling (output roots, relative paths, option checks) is not a fix and
lives in ``gunet_arch/options.py``; ``apply`` only gives it a place to run after parsing.

This module is the lowest layer: it imports none of the plugin's other modules. Importing it
changes nothing; ``apply()`` (called once by ``import gunet_arch``) does.
"""
import functools
import importlib
import math
import os
import sys
import types

_APPLIED = False


def _provide_functional_tensor():
    """basicsr 1.4.2 (``basicsr/data/degradations.py``) imports
    ``torchvision.transforms.functional_tensor``, which torchvision removed in 0.17; importing
    basicsr then fails. Provide the one name it needs under the old module path."""
    try:
        importlib.import_module('torchvision.transforms.functional_tensor')
        return
    except ImportError:
        pass
    from torchvision.transforms import functional as tvf
    shim = types.ModuleType('torchvision.transforms.functional_tensor')
    shim.rgb_to_grayscale = tvf.rgb_to_grayscale
    sys.modules['torchvision.transforms.functional_tensor'] = shim


def _normalise_local_rank_flag(argv):
    """``torch.distributed.launch`` (torch >= 2.0) passes ``--local-rank=N``, but BasicSR's
    ``parse_options`` only declares ``--local_rank`` and argparse rejects the dashed spelling."""
    out = []
    for arg in argv:
        if arg == '--local-rank' or arg.startswith('--local-rank='):
            arg = '--local_rank' + arg[len('--local-rank'):]
        out.append(arg)
    return out


# How long a collective waits for a rank that stopped answering (dist_params.timeout, seconds).
# torch's own default is 30 minutes: a job with a dead rank would sit idle that long.
DEFAULT_TIMEOUT_S = 300


def _slurm_env(name, *alternatives):
    for key in (name, ) + alternatives:
        if os.environ.get(key):
            return os.environ[key]
    raise RuntimeError(f'--launcher slurm: the environment variable {name} is not set; run the command inside a '
                       'Slurm allocation (srun, or sbatch with srun), or use --launcher pytorch with torchrun')


def slurm_master_port(job_id):
    """A port that differs between jobs, so two jobs sharing a node do not collide: 15000-29999
    (below the kernel's ephemeral range)."""
    return 15000 + int(job_id) % 15000


def _first_host(node_list):
    import subprocess

    try:
        out = subprocess.run(['scontrol', 'show', 'hostnames', node_list], capture_output=True, text=True,
                             timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise RuntimeError(f'--launcher slurm: cannot expand the node list {node_list!r}: {err}') from None
    hosts = out.stdout.split()
    if out.returncode != 0 or not hosts:
        raise RuntimeError(f'--launcher slurm: scontrol show hostnames {node_list} failed: {out.stderr.strip()}')
    return hosts[0]


def init_dist(launcher, backend=None, **kwargs):
    """BasicSR's ``init_dist`` hard-codes the NCCL backend and calls ``torch.cuda.set_device``,
    so ``--launcher pytorch|slurm`` cannot run without GPUs; under SLURM it fails with a KeyError
    outside an allocation, uses one fixed port for every job on a node, and trusts an inherited
    MASTER_ADDR; and it keeps torch's 30-minute collective timeout, so a job with a dead rank
    hangs that long. This version picks NCCL with CUDA and gloo without, binds a GPU only when
    there is one, takes MASTER_ADDR from the allocation's node list and MASTER_PORT from the job
    id (``dist_params.port`` overrides it), names a missing SLURM variable, and waits
    ``dist_params.timeout`` seconds (default 300) for a silent rank."""
    import datetime

    import torch
    import torch.distributed as dist
    import torch.multiprocessing as mp

    has_cuda = torch.cuda.is_available()
    if backend is None:
        backend = 'nccl' if has_cuda else 'gloo'
    timeout = datetime.timedelta(seconds=float(kwargs.pop('timeout', DEFAULT_TIMEOUT_S)))
    port = kwargs.pop('port', None)
    if launcher == 'pytorch':
        rank = int(os.environ['RANK'])
        local_rank = int(os.environ.get('LOCAL_RANK', rank))
    elif launcher == 'slurm':
        rank = int(_slurm_env('SLURM_PROCID'))
        ntasks = int(_slurm_env('SLURM_NTASKS'))
        local_rank = int(_slurm_env('SLURM_LOCALID'))
        node_list = _slurm_env('SLURM_STEP_NODELIST', 'SLURM_NODELIST', 'SLURM_JOB_NODELIST')
        job_id = _slurm_env('SLURM_JOB_ID', 'SLURM_JOBID')
        os.environ['MASTER_PORT'] = str(port if port is not None else slurm_master_port(job_id))
        os.environ['MASTER_ADDR'] = _first_host(node_list)
        os.environ['WORLD_SIZE'] = str(ntasks)
        os.environ['LOCAL_RANK'] = str(local_rank)
        os.environ['RANK'] = str(rank)
    else:
        raise ValueError(f'Invalid launcher type: {launcher!r} (expected pytorch or slurm)')
    if mp.get_start_method(allow_none=True) is None:
        mp.set_start_method('spawn')
    if has_cuda:
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
    if not dist.is_initialized():
        store = _per_attempt_store(timeout)
        if store is not None:
            kwargs.update(store=store, rank=int(os.environ['RANK']), world_size=int(os.environ['WORLD_SIZE']))
        dist.init_process_group(backend=backend, timeout=timeout, **kwargs)


def _per_attempt_store(timeout):
    """torchrun restarts its workers (``--max-restarts``) on the one TCPStore its static
    rendezvous keeps, and torch's env:// handler adds no per-attempt prefix: a restarted gloo
    group could read a dead worker's address and fail with 'Gloo connectFullMesh failed ...
    Connect timeout'. Give each attempt its own key space in the agent's store."""
    if os.environ.get('TORCHELASTIC_USE_AGENT_STORE') != 'True' or 'TORCHELASTIC_RESTART_COUNT' not in os.environ:
        return None
    from torch.distributed import PrefixStore, TCPStore

    store = TCPStore(os.environ['MASTER_ADDR'], int(os.environ['MASTER_PORT']), int(os.environ['WORLD_SIZE']),
                     is_master=False, timeout=timeout)
    return PrefixStore(f'gunet/attempt_{os.environ["TORCHELASTIC_RESTART_COUNT"]}', store)


def _dist_params_of(argv):
    """``dist_params`` of the option file named by ``-opt`` in ``argv``. BasicSR passes them to
    ``init_dist`` only for ``--launcher slurm``; torchrun runs need their timeout as well."""
    import yaml

    try:
        path = argv[argv.index('-opt') + 1]
        with open(path) as f:
            params = (yaml.safe_load(f) or {}).get('dist_params') or {}
    except (ValueError, IndexError, OSError, yaml.YAMLError, AttributeError):
        return {}  # BasicSR's own parser reports a missing or broken option file
    return dict(params) if isinstance(params, dict) else {}


def training_states(experiments_root):
    """``[(iteration, path)]`` of the ``<iter>.state`` files under ``experiments_root``, newest
    first. Temporary files of a save in progress (``.<iter>.*.partial.state``) are not states."""
    state_dir = os.path.join(experiments_root, 'training_states')
    if not os.path.isdir(state_dir):
        return []
    found = []
    for name in os.listdir(state_dir):
        stem, ext = os.path.splitext(name)
        if ext == '.state' and stem.isdigit():
            found.append((int(stem), os.path.join(state_dir, name)))
    return sorted(found, reverse=True)


def _resume_weights(models_dir, iteration):
    """The ``net_g_<iter>`` file a resume loads: ``.pth``, or ``.safetensors`` when the run saved
    that format (BasicSR's ``check_resume`` only knows ``.pth``)."""
    path = os.path.join(models_dir, f'net_g_{iteration}.pth')
    alternative = path[:-len('.pth')] + '.safetensors'
    return alternative if not os.path.isfile(path) and os.path.isfile(alternative) else path


def _read_state(path, device, models_dir):
    """The training state at ``path``, loaded as data (``weights_only`` with the one non-builtin
    type training states hold: the Counter of BasicSR's MultiStepRestartLR); ValueError when it,
    or the weights a resume loads with it, is unreadable."""
    from collections import Counter

    import torch

    try:
        with torch.serialization.safe_globals([Counter]):
            state = torch.load(path, map_location=device, weights_only=True)
        net_path = _resume_weights(models_dir, state['iter'])
        if net_path.endswith('.safetensors'):
            from safetensors import safe_open

            with safe_open(net_path, framework='pt'):
                pass
        else:
            torch.load(net_path, map_location='cpu', weights_only=True)
    except Exception as err:  # truncated, corrupt, missing or holding code: not a state to resume from
        raise ValueError(f'{err.__class__.__name__}: {err}') from None
    return state


def load_resume_state(opt):
    """BasicSR's ``train.load_resume_state`` looks for ``--auto_resume`` states in
    ``experiments/<name>`` relative to the working directory (not the experiment root it just
    configured), takes the newest file even when it is truncated, and maps the state onto
    ``torch.cuda.current_device()``, which fails without CUDA. This version searches
    ``opt['path']['experiments_root']``, skips (and reports) states that cannot be read or whose
    weights cannot, and maps onto the GPU when there is one, else the CPU."""
    import torch
    from basicsr.utils import check_resume

    if torch.cuda.is_available() and opt.get('num_gpu', 0) != 0:
        device = torch.device('cuda', torch.cuda.current_device())
    else:
        device = torch.device('cpu')
    models_dir = opt['path'].get('models') or os.path.join(opt['path']['experiments_root'], 'models')
    if opt.get('auto_resume'):
        candidates = training_states(opt['path']['experiments_root'])
        explicit = False
    elif opt['path'].get('resume_state'):
        path = opt['path']['resume_state']
        if not os.path.isfile(path):
            raise FileNotFoundError(f'path.resume_state: no such training state: {path}')
        candidates, explicit = [(None, path)], True
    else:
        return None
    skipped = []
    for _, path in candidates:
        try:
            state = _read_state(path, device, models_dir)
        except ValueError as err:
            if explicit:
                raise ValueError(f'path.resume_state: {path} cannot be resumed from ({err})') from None
            skipped.append(path)
            if opt.get('rank', 0) == 0:  # BasicSR's logger is not set up yet at this point
                print(f'--auto_resume: skipping {path}: {err}', file=sys.stderr, flush=True)
            continue
        opt['path']['resume_state'] = path
        check_resume(opt, state['iter'])
        if 'network_g' not in (opt['path'].get('ignore_resume_networks') or ()):
            opt['path']['pretrain_network_g'] = _resume_weights(models_dir, state['iter'])
        return state
    if skipped:
        raise ValueError(f'--auto_resume: none of the {len(skipped)} training states in '
                         f'{os.path.dirname(skipped[0])} can be read; starting over would archive the experiment. '
                         'Remove them to start a new run.')
    return None


# BasicSR keeps the epoch in a local variable of its training loop; a model that must save a
# resumable state between the loop's own save points reads it from the train sampler here.
_TRAIN_SAMPLER = []


def current_epoch():
    """The epoch BasicSR's training loop is in (its train sampler's), or None outside one."""
    return getattr(_TRAIN_SAMPLER[-1], 'epoch', 0) if _TRAIN_SAMPLER else None


def _exact_epochs(original):
    """BasicSR counts ceil(samples / (batch x ranks)) iterations per epoch, but each rank's
    loader drops its last partial batch, so its epoch loop ran out before ``total_iter`` (12
    images on 2 ranks x 4 stopped at 22 of 40 iterations). Count the iterations the loader
    really yields, so training always performs exactly ``total_iter`` of them."""

    @functools.wraps(original)
    def create_train_val_dataloader(opt, logger):
        train_loader, train_sampler, val_loaders, total_epochs, total_iters = original(opt, logger)
        per_epoch = len(train_loader)
        if per_epoch == 0:
            ds = opt['datasets']['train']
            raise ValueError(f'datasets.train: {len(train_sampler)} samples per rank are fewer than '
                             f'batch_size_per_gpu {ds["batch_size_per_gpu"]}: no full batch to train on')
        total_epochs = math.ceil(total_iters / per_epoch)
        logger.info(f'Iterations per epoch on each rank: {per_epoch} (full batches); total epochs: {total_epochs}.')
        _TRAIN_SAMPLER[:] = [train_sampler]
        return train_loader, train_sampler, val_loaders, total_epochs, total_iters

    create_train_val_dataloader._gunet_wrapped = True
    return create_train_val_dataloader


def _patch_train_module(module):
    """Point a training script's own bindings at the fixes: ``basicsr.train``, or a BasicSR
    clone's ``basicsr/train.py`` running as ``__main__``, which patching ``basicsr.train`` does
    not reach."""
    if module is None or not hasattr(module, 'train_pipeline') or not hasattr(module, 'load_resume_state'):
        return
    module.load_resume_state = load_resume_state
    loader_fn = getattr(module, 'create_train_val_dataloader', None)
    if loader_fn is not None and not getattr(loader_fn, '_gunet_wrapped', False):
        module.create_train_val_dataloader = _exact_epochs(loader_fn)


def _wrap_parse_options(original, after_parse):
    from basicsr.utils import options

    @functools.wraps(original)
    def parse_options(root_path, is_train=True):
        sys.argv = _normalise_local_rank_flag(sys.argv)
        # By the time a pipeline parses its options its module is loaded, whichever order the
        # imports happened in.
        _patch_train_module(sys.modules.get('basicsr.train'))
        _patch_train_module(sys.modules.get('__main__'))
        launcher_kwargs = _dist_params_of(sys.argv)
        options.init_dist = lambda launcher, **kwargs: init_dist(launcher, **{**launcher_kwargs, **kwargs})
        opt, args = original(root_path, is_train=is_train)
        # parse_options seeds the random generators before it applies --force_yml, so
        # `--force_yml manual_seed=N` changed only the logged seed: seed again from the final value,
        # by BasicSR's own rule (seed + rank).
        if any(entry.split('=')[0].strip() == 'manual_seed' for entry in getattr(args, 'force_yml', None) or ()):
            options.set_random_seed(opt['manual_seed'] + opt['rank'])
        if after_parse is not None:
            after_parse(opt, args, root_path, is_train)
        return opt, args

    parse_options._gunet_wrapped = True
    return parse_options


def apply(after_parse=None):
    """Apply every fix; safe to call more than once. ``after_parse(opt, args, root_path,
    is_train)`` runs on each parsed option file, where ``parse_options`` is wrapped anyway for
    the ``--local-rank`` fix."""
    global _APPLIED
    if _APPLIED:
        return
    _provide_functional_tensor()
    from basicsr.utils import dist_util, options

    # Rebind where BasicSR looks the names up: options.py imported init_dist by name.
    dist_util.init_dist = init_dist
    options.init_dist = init_dist
    if not getattr(options.parse_options, '_gunet_wrapped', False):
        options.parse_options = _wrap_parse_options(options.parse_options, after_parse)
    # basicsr.train / basicsr.test bind parse_options by name at import time; when they are
    # already imported (``import basicsr`` imports them), point them at the wrapper too.
    for name in ('basicsr.train', 'basicsr.test'):
        mod = sys.modules.get(name)
        if mod is not None:
            mod.parse_options = options.parse_options
    _patch_train_module(sys.modules.get('basicsr.train'))
    _APPLIED = True
