"""Make a BasicSR clone's own entry points (basicsr/train.py, basicsr/test.py) see gUNet.

    python scripts/install_into_basicsr.py /path/to/BasicSR            # hook + copy option files
    python scripts/install_into_basicsr.py /path/to/BasicSR --link     # hook + symlink them
    python scripts/install_into_basicsr.py /path/to/BasicSR --uninstall

BasicSR imports every ``basicsr/models/*_model.py`` after its architectures and datasets, so the
hook is one small file there that imports this plugin (which registers GUNet, GUNetModel,
PairedDehazeDataset, the metrics and the scheduler). The option files go to the clone's
``options/``; their relative data paths (``datasets/...``) then resolve against the clone.

BasicSR 1.4.2 (the release tag, and PyPI's package) cannot be imported with torchvision >= 0.17:
``basicsr/data/degradations.py`` imports ``torchvision.transforms.functional_tensor``, which that
torchvision removed, and ``basicsr/data`` is imported before the hook in ``basicsr/models`` can
run. So the installer also rewrites that one import line the way BasicSR master did (commit
8d56e3a, "change functional_tensor to functional"), with a marker comment; ``--uninstall`` puts the
original line back byte for byte. A clone that already has master's line is left as it is.

The Python that runs BasicSR must have this package installed (``pip install -e .``).
The path may also be a ``basicsr`` package folder itself (e.g. in site-packages); then only the
hook and the import fix are installed.
"""
import argparse
import filecmp
import glob
import os
import re
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from gunet_arch.atomic import atomic_path, atomic_write_bytes  # noqa: E402

HOOK_NAME = 'gunet_plugin_model.py'
MARKER = '# gunet-basicsr plugin hook'
HOOK_TEXT = f'''{MARKER}: installed by scripts/install_into_basicsr.py of gUNet for BasicSR;
# remove it with that script's --uninstall. BasicSR imports every models/*_model.py, so this
# import registers gUNet's architecture, model, dataset, metrics and scheduler.
import gunet_arch  # noqa: F401
'''
# BasicSR 1.4.2's import of a module torchvision 0.17 removed, and the line that replaces it: the one
# BasicSR master has (rgb_to_grayscale has been in torchvision.transforms.functional since 0.8),
# plus the marker. Bytes, so that the rest of the file, line endings included, is never touched.
DEGRADATIONS = os.path.join('data', 'degradations.py')
OLD_IMPORT = b'from torchvision.transforms.functional_tensor import rgb_to_grayscale'
NEW_IMPORT = (b'from torchvision.transforms.functional import rgb_to_grayscale  ' + MARKER.encode() +
              b': was functional_tensor, removed in torchvision 0.17; --uninstall restores it')
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


def _rewrite(path, data):
    """Replace ``path``'s bytes safely (gunet_arch.atomic), keeping its permissions."""
    with atomic_path(path) as tmp:
        with open(tmp, 'wb') as f:
            f.write(data)
        shutil.copymode(path, tmp)


def _degradations(package):
    """(path, bytes) of the clone's ``basicsr/data/degradations.py``, or None (BasicSR without it)."""
    path = os.path.join(package, DEGRADATIONS)
    if not os.path.isfile(path):
        return None
    with open(path, 'rb') as f:
        return path, f.read()


def patch_degradations(package):
    """Make ``basicsr/data`` importable on current torchvision (BasicSR 1.4.2 only)."""
    found = _degradations(package)
    if found is None:
        return
    path, data = found
    if NEW_IMPORT in data:
        print(f'import fix: already in {path}')
        return
    old_line = re.compile(b'^' + re.escape(OLD_IMPORT) + b'(?=\r?$)', re.MULTILINE)
    if len(old_line.findall(data)) == 1:
        _rewrite(path, old_line.sub(lambda _: NEW_IMPORT, data))
        print(f'import fix: {path} (torchvision.transforms.functional_tensor -> functional, as BasicSR master)')
    elif b'functional_tensor' in data:
        print(f'warning: {path} imports torchvision.transforms.functional_tensor in a form this installer does not '
              'know; with torchvision >= 0.17 this BasicSR will not import. Change that import to '
              'torchvision.transforms.functional yourself.')


def unpatch_degradations(package):
    found = _degradations(package)
    if found is None:
        return
    path, data = found
    if NEW_IMPORT in data:
        _rewrite(path, data.replace(NEW_IMPORT, OLD_IMPORT))
        print(f'restored the original import line of {path}')
    elif MARKER.encode() in data:
        print(f'  kept (the import line was edited since it was installed): {path}')


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
    atomic_write_bytes(hook, HOOK_TEXT.encode())
    print(f'hook: {hook}')
    patch_degradations(package)
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
    unpatch_degradations(package)
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
    options_dir = os.path.join(clone, 'options')
    if os.path.isdir(options_dir) and not os.listdir(options_dir):
        os.rmdir(options_dir)  # the installer made it: a BasicSR clone ships options/ with files in it


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('basicsr', help='a BasicSR clone (the folder holding basicsr/), or a basicsr package folder')
    parser.add_argument('--link', action='store_true', help='symlink the option files instead of copying them')
    parser.add_argument('--force', action='store_true', help='replace option files that differ from ours')
    parser.add_argument('--uninstall', action='store_true',
                        help='remove the hook, the import fix and the unchanged option files')
    args = parser.parse_args(argv)
    package, clone = locate(args.basicsr)
    if args.uninstall:
        uninstall(package, clone)
    else:
        install(package, clone, args.link, args.force)
    return 0


if __name__ == '__main__':
    sys.exit(main())
