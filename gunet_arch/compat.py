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


def init_dist(launcher, backend=None, **kwargs):
    """BasicSR's ``init_dist`` hard-codes the NCCL backend and calls ``torch.cuda.set_device``,
    so ``--launcher pytorch|slurm`` cannot run without GPUs. This version picks NCCL with CUDA
    and gloo without, and binds a GPU only when there is one."""
    import subprocess

    import torch
    import torch.distributed as dist
    import torch.multiprocessing as mp

    if mp.get_start_method(allow_none=True) is None:
        mp.set_start_method('spawn')
    has_cuda = torch.cuda.is_available()
    if backend is None:
        backend = 'nccl' if has_cuda else 'gloo'
    if launcher == 'pytorch':
        rank = int(os.environ['RANK'])
        local_rank = int(os.environ.get('LOCAL_RANK', rank))
    elif launcher == 'slurm':
        rank = int(os.environ['SLURM_PROCID'])
        ntasks = int(os.environ['SLURM_NTASKS'])
        per_node = int(os.environ.get('SLURM_NTASKS_PER_NODE', '0').split('(')[0] or 0)
        local_rank = int(os.environ.get('SLURM_LOCALID', rank % per_node if per_node else rank))
        port = kwargs.pop('port', None)
        if port is not None:
            os.environ['MASTER_PORT'] = str(port)
        os.environ.setdefault('MASTER_PORT', '29500')
        if 'MASTER_ADDR' not in os.environ:
            node_list = os.environ['SLURM_NODELIST']
            os.environ['MASTER_ADDR'] = subprocess.getoutput(f'scontrol show hostname {node_list} | head -n1')
        os.environ['WORLD_SIZE'] = str(ntasks)
        os.environ['LOCAL_RANK'] = str(local_rank)
        os.environ['RANK'] = str(rank)
    else:
        raise ValueError(f'Invalid launcher type: {launcher!r} (expected pytorch or slurm)')
    if has_cuda:
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, **kwargs)


def find_latest_state(experiments_root):
    """Path of the newest ``<iter>.state`` under ``experiments_root/training_states``, or None."""
    state_dir = os.path.join(experiments_root, 'training_states')
    if not os.path.isdir(state_dir):
        return None
    iters = []
    for name in os.listdir(state_dir):
        stem, ext = os.path.splitext(name)
        if ext == '.state' and stem.isdigit():
            iters.append(int(stem))
    if not iters:
        return None
    return os.path.join(state_dir, f'{max(iters)}.state')


def load_resume_state(opt):
    """BasicSR's ``train.load_resume_state`` looks for ``--auto_resume`` states in
    ``experiments/<name>`` relative to the working directory (not the experiment root it just
    configured), and maps the state onto ``torch.cuda.current_device()``, which fails without
    CUDA. This version searches ``opt['path']['experiments_root']`` and maps onto the GPU when
    there is one, else the CPU."""
    import torch
    from basicsr.utils import check_resume

    path = None
    if opt.get('auto_resume'):
        path = find_latest_state(opt['path']['experiments_root'])
        if path is not None:
            opt['path']['resume_state'] = path
    elif opt['path'].get('resume_state'):
        path = opt['path']['resume_state']
    if path is None:
        return None
    if not os.path.isfile(path):
        raise FileNotFoundError(f'path.resume_state: no such training state: {path}')
    if torch.cuda.is_available() and opt.get('num_gpu', 0) != 0:
        device = torch.device('cuda', torch.cuda.current_device())
    else:
        device = torch.device('cpu')
    state = torch.load(path, map_location=device, weights_only=False)
    check_resume(opt, state['iter'])
    return state


def _patch_script_resume(main_module):
    """A BasicSR clone runs ``basicsr/train.py`` as ``__main__``, whose own ``load_resume_state``
    the patch of ``basicsr.train`` does not reach."""
    fn = getattr(main_module, 'load_resume_state', None)
    if fn is not None and fn is not load_resume_state and getattr(fn, '__module__', '') == '__main__' \
            and hasattr(main_module, 'train_pipeline'):
        main_module.load_resume_state = load_resume_state


def _wrap_parse_options(original, after_parse):
    @functools.wraps(original)
    def parse_options(root_path, is_train=True):
        sys.argv = _normalise_local_rank_flag(sys.argv)
        # BasicSR binds load_resume_state inside basicsr.train; by the time a pipeline parses
        # its options that module is loaded, whichever order the imports happened in.
        train_mod = sys.modules.get('basicsr.train')
        if train_mod is not None and getattr(train_mod, 'load_resume_state', None) is not load_resume_state:
            train_mod.load_resume_state = load_resume_state
        if '__main__' in sys.modules:
            _patch_script_resume(sys.modules['__main__'])
        opt, args = original(root_path, is_train=is_train)
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
            if name == 'basicsr.train':
                mod.load_resume_state = load_resume_state
    _APPLIED = True
