"""Checks of the options GUNetModel reads, so that a typo fails before any training starts and
the error names the key, instead of surfacing later as a KeyError deep in BasicSR.

They run once per run, right after BasicSR parses the option file (``gunet_arch/options.py``),
before any dataset, logger or network is built.
"""
import os

from gunet_arch.archs.variants import get_variant

from .amp import check_amp_options
from .lr_scheduler import LR_SCHEDULER_REGISTRY

SYNC_BN_VALUES = ('auto', True, False)
OPTIMIZERS = ('Adam', 'AdamW')
DATA_PATH_KEYS = ('dataroot_lq', 'dataroot_gt', 'meta_info_file')


def check_network_options(opt):
    net_opt = opt.get('network_g')
    if not net_opt or 'type' not in net_opt:
        raise ValueError('network_g.type is missing (use GUNet)')
    # The variant's name is read only for what base_dim, depths and kernel_size leave to it.
    if net_opt['type'] == 'GUNet' and any(net_opt.get(k) is None for k in ('base_dim', 'depths', 'kernel_size')):
        try:
            get_variant(net_opt.get('variant', 't'))
        except ValueError as err:
            raise ValueError(f'network_g.variant: {err}') from None


def check_train_options(opt):
    train_opt = opt.get('train')
    if not train_opt:
        raise ValueError('train: missing (a training option file needs train.optim_g and train.scheduler)')
    check_amp_options(train_opt.get('amp'))
    optim_type = (train_opt.get('optim_g') or {}).get('type')
    if optim_type is None:
        raise ValueError('train.optim_g.type is missing (AdamW or Adam)')
    sched = train_opt.get('scheduler') or {}
    sched_type = sched.get('type')
    if sched_type is None:
        raise ValueError('train.scheduler.type is missing (e.g. WarmupCosineLR)')
    if sched_type in LR_SCHEDULER_REGISTRY:
        if sched.get('total_iter') is None:
            raise ValueError(f'train.scheduler.total_iter is required for {sched_type} '
                             '(the iteration at which the cosine reaches eta_min; usually train.total_iter)')
        warmup, total = sched.get('warmup_iter', 0) or 0, sched['total_iter']
        if not 0 <= warmup < total:
            raise ValueError(f'train.scheduler.warmup_iter must be in [0, total_iter={total}), got {warmup}')
        if (train_opt.get('warmup_iter') or -1) > 0:
            raise ValueError(f'train.warmup_iter adds BasicSR\'s own warm-up on top of {sched_type}\'s; '
                             'set train.scheduler.warmup_iter instead and train.warmup_iter to -1')
    for key in ('frozen_bn_iter', 'max_bad_steps'):
        value = train_opt.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ValueError(f'train.{key} must be a positive integer or ~, got {value!r}')
    keep = (opt.get('logger') or {}).get('keep_checkpoints')
    if keep is not None and (not isinstance(keep, int) or isinstance(keep, bool) or keep < 1):
        raise ValueError(f'logger.keep_checkpoints must be a positive integer or ~ (keep all), got {keep!r}')
    if opt.get('sync_bn', 'auto') not in SYNC_BN_VALUES:
        raise ValueError(f'sync_bn must be auto, true or false, got {opt.get("sync_bn")!r}')


def check_options(opt):
    """Everything GUNetModel can check from the options alone."""
    check_network_options(opt)
    if opt.get('is_train'):
        check_train_options(opt)


def check_dataset_paths(opt):
    """Every data path of every dataset exists (after relative paths were resolved)."""
    for phase, ds_opt in (opt.get('datasets') or {}).items():
        for key in DATA_PATH_KEYS:
            path = ds_opt.get(key)
            if path is not None and not os.path.exists(path):
                raise FileNotFoundError(f'datasets.{phase}.{key}: no such file or folder: {path} '
                                        '(prepare the data with scripts/prepare_lmdb.py, see datasets/README.md)')
