"""What the plugin does with an option file once BasicSR has parsed it: where outputs go, what
relative paths are relative to, and the gUNet option checks.

``prepare_options`` runs on every ``parse_options`` call (``compat.apply`` installs it), for our
entry points and for a BasicSR clone's own ``basicsr/train.py`` / ``test.py`` alike.
"""
import os.path as osp
import sys

PROJECT_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def output_root():
    """Where experiments/, results/ and relative data paths live: the project checkout, or the
    working directory when the package is installed without one."""
    if osp.isfile(osp.join(PROJECT_ROOT, 'setup.py')) or osp.isdir(osp.join(PROJECT_ROOT, 'options')):
        return PROJECT_ROOT
    return osp.abspath('.')


def _resolve(path, root_path):
    path = osp.expanduser(path)
    return path if osp.isabs(path) else osp.normpath(osp.join(root_path, path))


def resolve_relative_paths(opt, root_path):
    """BasicSR opens relative data and checkpoint paths against the working directory, so the
    same option file would only work when launched from the repository root. Resolve them against
    ``root_path`` (the project, or the BasicSR clone) instead."""
    for ds_opt in (opt.get('datasets') or {}).values():
        for key, val in ds_opt.items():
            if isinstance(val, str) and (key.startswith('dataroot') or key == 'meta_info_file'):
                ds_opt[key] = _resolve(val, root_path)
    for key, val in (opt.get('path') or {}).items():
        if isinstance(val, str) and ('resume_state' in key or 'pretrain_network' in key):
            opt['path'][key] = _resolve(val, root_path)


def honour_output_roots(opt, option_file, root_path, is_train):
    """basicsr 1.4.2 always writes to ``<root>/experiments/<name>`` and ``<root>/results/<name>``;
    BasicSR master honours ``path.experiments_root`` / ``path.results_root`` from the option
    file. Honour them on both (relative ones against ``root_path``). 1.4.2 has already
    overwritten them in ``opt``, so they are read from the file itself."""
    import yaml
    from basicsr.utils.options import ordered_yaml

    with open(option_file, mode='r') as f:
        raw = yaml.load(f, Loader=ordered_yaml()[0]) or {}
    key = 'experiments_root' if is_train else 'results_root'
    base = (raw.get('path') or {}).get(key)
    if not base:
        return
    root = osp.join(_resolve(base, root_path), opt['name'])
    paths = opt['path']
    paths[key] = root
    paths['log'] = root
    paths['visualization'] = osp.join(root, 'visualization')
    if is_train:
        paths['models'] = osp.join(root, 'models')
        paths['training_states'] = osp.join(root, 'training_states')


def prepare_options(opt, args, root_path, is_train):
    """Output roots, relative paths, then (for GUNetModel) the option checks: a bad gUNet option
    fails here, before datasets, loggers and models are built. A training run then takes the
    experiment's lock (``run_lock``), before BasicSR would archive a running experiment's folder."""
    honour_output_roots(opt, args.opt, root_path, is_train)
    resolve_relative_paths(opt, root_path)
    if opt.get('model_type') == 'GUNetModel':
        from gunet_arch.models.option_checks import check_dataset_paths, check_options

        check_options(opt)
        check_dataset_paths(opt)
    if is_train and opt.get('rank', 0) == 0:
        from gunet_arch import run_lock

        stale = run_lock.acquire(opt['path']['experiments_root'])
        if stale:
            print(f'Taking over the lock of a run that ended without releasing it ({stale}).', file=sys.stderr)

