"""Make a BasicSR clone's own entry points (basicsr/train.py, basicsr/test.py) see gUNet.

    python scripts/install_into_basicsr.py /path/to/BasicSR            # hook + copy option files
    python scripts/install_into_basicsr.py /path/to/BasicSR --link     # hook + symlink them
    python scripts/install_into_basicsr.py /path/to/BasicSR --uninstall

BasicSR imports every ``basicsr/models/*_model.py`` after its architectures and datasets, so the
hook is one small file there that imports this plugin (which registers GUNet, GUNetModel,
PairedDehazeDataset, the metrics and the scheduler). The option files go to the clone's
``options/``; their relative data paths (``datasets/...``) then resolve against the clone.
The Python that runs BasicSR must have this package installed (``pip install -e .``).
The path may also be a ``basicsr`` package folder itself (e.g. in site-packages); then only the
hook is installed.
"""
import argparse
import filecmp
import glob
import os
import shutil
import sys

HOOK_NAME = 'gunet_plugin_model.py'
MARKER = '# gunet-basicsr plugin hook'
HOOK_TEXT = f'''{MARKER}: installed by scripts/install_into_basicsr.py of gUNet for BasicSR;
# remove it with that script's --uninstall. BasicSR imports every models/*_model.py, so this
# import registers gUNet's architecture, model, dataset, metrics and scheduler.
import gunet_arch  # noqa: F401
'''
PROJECT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))
OPTION_PATTERNS = ('train_gunet_*.yml', 'test_gunet_*.yml')


def locate(target):
    """(package folder, clone root or None) of a BasicSR clone or a basicsr package folder."""
    target = os.path.abspath(target)
    if os.path.isfile(os.path.join(target, 'basicsr', 'models', '__init__.py')):
        return os.path.join(target, 'basicsr'), target
    if os.path.isfile(os.path.join(target, 'models', '__init__.py')) and os.path.basename(target) == 'basicsr':
        return target, None
    raise SystemExit(f'error: {target} is neither a BasicSR clone (no basicsr/models/__init__.py) '
                     'nor a basicsr package folder')


def check_scans_model_files(package):
    with open(os.path.join(package, 'models', '__init__.py')) as f:
        if "_model.py" not in f.read():
            raise SystemExit('error: this BasicSR does not import basicsr/models/*_model.py by itself; '
                             'add "import gunet_arch" to its train.py/test.py instead')


def our_option_files():
    files = []
    for pattern in OPTION_PATTERNS:
        files += glob.glob(os.path.join(PROJECT, 'options', pattern))
    return sorted(files)


def is_ours(dst, src):
    if os.path.islink(dst):
        return os.path.realpath(dst) == os.path.realpath(src)
    return os.path.isfile(dst) and filecmp.cmp(dst, src, shallow=False)


def install(package, clone, link, force):
    check_scans_model_files(package)
    hook = os.path.join(package, 'models', HOOK_NAME)
    if os.path.exists(hook) and MARKER not in open(hook).read():
        raise SystemExit(f'error: {hook} exists and is not this plugin\'s hook; not touching it')
    with open(hook, 'w') as f:
        f.write(HOOK_TEXT)
    print(f'hook: {hook}')
    if clone is None:
        print('no clone root: option files not copied')
        return
    options_dir = os.path.join(clone, 'options')
    os.makedirs(options_dir, exist_ok=True)
    written, kept = 0, []
    for src in our_option_files():
        dst = os.path.join(options_dir, os.path.basename(src))
        if os.path.lexists(dst) and not is_ours(dst, src) and not force:
            kept.append(dst)
            continue
        if os.path.lexists(dst):
            os.remove(dst)
        if link:
            os.symlink(src, dst)
        else:
            shutil.copyfile(src, dst)
        written += 1
    print(f'options: {written} files {"linked" if link else "copied"} into {options_dir}')
    for dst in kept:
        print(f'  kept (differs from ours; --force replaces it): {dst}')


def uninstall(package, clone):
    hook = os.path.join(package, 'models', HOOK_NAME)
    if os.path.exists(hook):
        if MARKER not in open(hook).read():
            raise SystemExit(f'error: {hook} is not this plugin\'s hook; not removing it')
        os.remove(hook)
        print(f'removed hook: {hook}')
    if clone is None:
        return
    removed = 0
    for src in our_option_files():
        dst = os.path.join(clone, 'options', os.path.basename(src))
        if os.path.lexists(dst):
            if is_ours(dst, src):
                os.remove(dst)
                removed += 1
            else:
                print(f'  kept (edited since it was installed): {dst}')
    print(f'removed {removed} option files')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('basicsr', help='a BasicSR clone (the folder holding basicsr/), or a basicsr package folder')
    parser.add_argument('--link', action='store_true', help='symlink the option files instead of copying them')
    parser.add_argument('--force', action='store_true', help='replace option files that differ from ours')
    parser.add_argument('--uninstall', action='store_true', help='remove the hook and the unchanged option files')
    args = parser.parse_args(argv)
    package, clone = locate(args.basicsr)
    if args.uninstall:
        uninstall(package, clone)
    else:
        install(package, clone, args.link, args.force)
    return 0


if __name__ == '__main__':
    sys.exit(main())
