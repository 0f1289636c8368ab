"""Checks of the options the plugin owns, so that a typo fails before any training starts and
the error names the key (and the valid key it is closest to), instead of being ignored or
surfacing later as a KeyError deep in BasicSR.

The plugin owns ``network_g`` of type GUNet, every ``datasets.*`` entry of type
PairedDehazeDataset, ``train.amp``, ``train.scheduler`` of type WarmupCosineLR, ``train.optim_g``
of type Adam/AdamW, ``val`` (GUNetModel validates) and the ``train`` keys GUNetModel reads: an
unknown key there is an error, and so is a value of the wrong type (or, for ``dataset``,
``split``, ``pairing`` and ``val.tile``, a value outside what they take). They run once per run,
right after BasicSR parses the option file (``gunet_arch/options.py``), before any dataset,
logger or network is built.
"""
import difflib
import inspect
import os

import torch

from gunet_arch.archs.variants import get_variant

from .amp import check_amp_options
from .lr_scheduler import LR_SCHEDULER_REGISTRY

SYNC_BN_VALUES = ('auto', True, False)
OPTIMIZERS = {'Adam': torch.optim.Adam, 'AdamW': torch.optim.AdamW}
DATA_PATH_KEYS = ('dataroot_lq', 'dataroot_gt', 'meta_info_file')

# What a key's value may be (None, YAML's ~, is always allowed: it means "the default").
INT, NUMBER, BOOL, TEXT, LIST, MAPPING = 'an integer', 'a number', 'true or false', 'text', 'a list', 'a mapping'
SWITCH = 'a mapping or true/false'
TRUE_FALSE_AUTO = 'true, false or auto'
NETWORK_KEYS = {'type': TEXT, 'variant': TEXT, 'base_dim': INT, 'depths': LIST, 'kernel_size': INT,
                'channels_last': BOOL}
DATASET_KEYS = {  # PairedDehazeDataset's own, then those BasicSR's parser and dataloader add or read
    'dataroot_lq': TEXT, 'dataroot_gt': TEXT, 'io_backend': MAPPING, 'dataset': TEXT, 'split': TEXT,
    'pairing': TEXT, 'skip_unpaired': BOOL,
    'gt_size': INT, 'use_hflip': BOOL, 'use_rot': BOOL, 'edge_decay': NUMBER, 'val_crop_size': INT,
    'max_pixels': INT, 'meta_info_file': TEXT,
    'name': TEXT, 'type': TEXT, 'phase': TEXT, 'scale': NUMBER, 'batch_size_per_gpu': INT, 'num_worker_per_gpu': INT,
    'dataset_enlarge_ratio': NUMBER, 'use_shuffle': BOOL, 'prefetch_mode': TEXT, 'pin_memory': BOOL,
    'persistent_workers': BOOL}
TRAIN_KEYS = {'total_iter': INT, 'warmup_iter': INT, 'optim_g': MAPPING, 'scheduler': MAPPING, 'pixel_opt': MAPPING,
              'perceptual_opt': MAPPING, 'ema_decay': NUMBER, 'amp': SWITCH, 'frozen_bn_iter': INT,
              'max_bad_steps': INT}
# BasicSR's own val keys, then the plugin's: the results gallery and tiled testing.
VAL_KEYS = {'val_freq': INT, 'save_img': BOOL, 'suffix': TEXT, 'pbar': BOOL, 'metrics': MAPPING, 'gallery': BOOL,
            'tile': INT, 'tile_overlap': INT}
SCHEDULER_KEYS = {'type': TEXT, 'total_iter': INT, 'warmup_iter': INT, 'eta_min': NUMBER, 'weight_decay_min': NUMBER}
_TYPES = {INT: int, NUMBER: (int, float), BOOL: bool, TEXT: str, LIST: (list, tuple), MAPPING: dict,
          SWITCH: (dict, bool), TRUE_FALSE_AUTO: (bool, str)}


def _check_value(where, value, kind):
    if value is None:
        return
    ok = isinstance(value, _TYPES[kind]) and (kind in (BOOL, SWITCH, TRUE_FALSE_AUTO) or not isinstance(value, bool))
    if not ok:
        hint = ''
        if kind == NUMBER and isinstance(value, str):
            hint = ' (YAML reads 1e-3 as text: write 1.0e-3 or !!float 1e-3)'
        raise ValueError(f'{where}: expected {kind}, got {type(value).__name__} {value!r}{hint}')


def check_keys(where, mapping, schema):
    """Every key of ``mapping`` is in ``schema`` and has a value of its kind; the error names
    the key and the closest valid one."""
    _check_value(where, mapping, MAPPING)
    for key, value in (mapping or {}).items():
        if key not in schema:
            close = difflib.get_close_matches(str(key), list(schema), n=1)
            hint = f'; did you mean {close[0]!r}?' if close else ''
            raise ValueError(f'{where}: unknown key {key!r}{hint} (valid keys: {", ".join(schema)})')
        _check_value(f'{where}.{key}', value, schema[key])


def _optimizer_keys(cls):
    keys = {'type': TEXT}
    for name, param in inspect.signature(cls).parameters.items():
        if name != 'params':
            default = param.default
            keys[name] = (BOOL if isinstance(default, bool) else NUMBER if isinstance(default, (int, float))
                          else LIST if isinstance(default, tuple) else NUMBER)
    return keys


def check_owned_keys(opt):
    """The unknown-key and type checks of every part of ``opt`` the plugin owns."""
    net_opt = opt.get('network_g') or {}
    if net_opt.get('type') == 'GUNet':
        check_keys('network_g', net_opt, NETWORK_KEYS)
    for phase, ds_opt in (opt.get('datasets') or {}).items():
        if (ds_opt or {}).get('type') == 'PairedDehazeDataset':
            check_keys(f'datasets.{phase}', ds_opt, DATASET_KEYS)
            check_dataset_values(f'datasets.{phase}', ds_opt)
    if opt.get('model_type') == 'GUNetModel' and opt.get('val') is not None:
        check_keys('val', opt['val'], VAL_KEYS)
        check_tile_options(opt['val'])
    train_opt = opt.get('train') if opt.get('is_train') else None
    if train_opt is not None:
        check_keys('train', train_opt, TRAIN_KEYS)
        optim = train_opt.get('optim_g') or {}
        if optim.get('type') in OPTIMIZERS:
            check_keys('train.optim_g', optim, _optimizer_keys(OPTIMIZERS[optim['type']]))
        sched = train_opt.get('scheduler') or {}
        if sched.get('type') in LR_SCHEDULER_REGISTRY:
            check_keys('train.scheduler', sched, SCHEDULER_KEYS)


def check_dataset_values(where, ds_opt):
    """``dataset`` names a known set and ``split`` a part of its published split."""
    from gunet_arch.data.pairing import DATASET_PRESETS, PAIRING_RULES, published_split

    dataset, split, pairing = ds_opt.get('dataset'), ds_opt.get('split'), ds_opt.get('pairing')
    if dataset is not None and dataset not in DATASET_PRESETS:
        close = difflib.get_close_matches(dataset, list(DATASET_PRESETS), n=1)
        hint = f'; did you mean {close[0]!r}?' if close else ''
        raise ValueError(f'{where}.dataset: unknown set {dataset!r}{hint} (one of {", ".join(DATASET_PRESETS)})')
    if pairing is not None and pairing not in PAIRING_RULES:
        raise ValueError(f'{where}.pairing: unknown rule {pairing!r} (one of {", ".join(PAIRING_RULES)})')
    if split is not None:
        try:
            published_split(dataset, split)
        except ValueError as err:
            raise ValueError(f'{where}.split: {err}') from None


def check_tile_options(val_opt):
    """``val.tile``: 0 or ~ tests whole images; otherwise tiles of at least 16 px, sharing
    ``val.tile_overlap`` pixels, less than half a tile."""
    tile, overlap = val_opt.get('tile'), val_opt.get('tile_overlap')
    if tile is not None and tile != 0 and tile < 16:
        raise ValueError(f'val.tile must be 0 or ~ (whole images) or at least 16 pixels, got {tile}')
    if overlap is not None and (overlap < 0 or (tile and overlap > tile // 2)):
        raise ValueError(f'val.tile_overlap must be between 0 and half of val.tile ({tile}), got {overlap}')


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
    save_format = (opt.get('logger') or {}).get('save_format')
    if save_format not in (None, 'pth', 'safetensors'):
        raise ValueError(f'logger.save_format must be pth (default) or safetensors, got {save_format!r}')
    keep = (opt.get('logger') or {}).get('keep_checkpoints')
    if keep is not None and (not isinstance(keep, int) or isinstance(keep, bool) or keep < 1):
        raise ValueError(f'logger.keep_checkpoints must be a positive integer or ~ (keep all), got {keep!r}')
    if opt.get('sync_bn', 'auto') not in SYNC_BN_VALUES:
        raise ValueError(f'sync_bn must be auto, true or false, got {opt.get("sync_bn")!r}')


def check_options(opt):
    """Everything the plugin can check from the options alone."""
    check_owned_keys(opt)
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
