"""scripts/install_into_basicsr.py on BasicSR clones, run the way a user runs them: the clone's own
``basicsr/train.py``, as one process and under ``torch.distributed.launch``, with no runner or
shim in front of it. ``--uninstall`` then leaves the clone as it was, byte for byte.

Two clones, both built here without a network:

* **v1.4.2**: the installed PyPI basicsr laid out as a clone (``<clone>/basicsr/``). PyPI's 1.4.2 is
  the ``basicsr/`` folder of the git tag v1.4.2 plus the ``version.py`` that setup.py writes (it
  leaves out only data files: ``data/meta_info/``, ``metrics/README*.md``, ``metrics/test_metrics/``).
  Its ``data/degradations.py`` imports ``torchvision.transforms.functional_tensor``, gone since
  torchvision 0.17, so without the installer its train.py dies before any plugin code can run.
* **master**: BasicSR's git master (8d56e3a, 2024-05-17, the newest commit) differs from v1.4.2, in
  the files on the path from ``basicsr/train.py`` to a trained model, only in:

  1. ``data/degradations.py`` line 8 imports ``rgb_to_grayscale`` from
     ``torchvision.transforms.functional`` (commit 8d56e3a, #650); the rest of its diff is docstrings;
  2. ``utils/options.py`` honours ``path.experiments_root`` / ``path.results_root`` from the option
     file (62cff6e, #595), and gains a ``yaml_load`` helper that parse_options now reads with
     (dd50135; same result);
  3. ``models/base_model.py``'s ``get_optimizer`` knows AdamW and five more optimizers (18a2987,
     b156d25).

  ``basicsr/__init__.py``, ``train.py``, ``test.py``, ``data/__init__.py`` and
  ``models/__init__.py`` (the scan that imports every ``*_model.py``, which the hook relies on) are
  identical; ``archs/__init__.py`` differs in a comment. The other changes (new archs, datasets and
  docstrings) are off that path. The master clone below is the v1.4.2 one with 1 applied exactly
  and 2 and 3 in equivalent form (``yaml_load`` left out: parse_options reads the file the same way).
"""
import hashlib
import importlib.util
import os
import shutil
import socket
import subprocess

import basicsr
import pytest
from conftest import PYTHON, ROOT, run_env, tiny_train_opt, write_option_file

SCRIPT = os.path.join(ROOT, 'scripts', 'install_into_basicsr.py')
RELEASE_IMPORT = 'from torchvision.transforms.functional_tensor import rgb_to_grayscale\n'
MASTER_CHANGES = [  # (file under basicsr/, v1.4.2 text, master text): the list in the docstring
    ('data/degradations.py', RELEASE_IMPORT, 'from torchvision.transforms.functional import rgb_to_grayscale\n'),
    ('utils/options.py', "experiments_root = osp.join(root_path, 'experiments', opt['name'])",
     "experiments_root = osp.join(opt['path'].get('experiments_root') or osp.join(root_path, 'experiments'), "
     "opt['name'])"),
    ('utils/options.py', "results_root = osp.join(root_path, 'results', opt['name'])",
     "results_root = osp.join(opt['path'].get('results_root') or osp.join(root_path, 'results'), opt['name'])"),
    ('models/base_model.py', "            optimizer = torch.optim.Adam(params, lr, **kwargs)\n",
     "            optimizer = torch.optim.Adam(params, lr, **kwargs)\n"
     "        elif optim_type == 'AdamW':\n"
     "            optimizer = torch.optim.AdamW(params, lr, **kwargs)\n"),
]


def load_script():
    spec = importlib.util.spec_from_file_location('install_into_basicsr', SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def release_clone(root):
    """basicsr 1.4.2 as PyPI installed it, laid out as a clone at ``root``."""
    shutil.copytree(os.path.dirname(basicsr.__file__), root / 'basicsr',
                    ignore=shutil.ignore_patterns('__pycache__', '*.pyc', 'gunet_plugin_model.py'))
    return root


def master_clone(root):
    release_clone(root)
    for name, old, new in MASTER_CHANGES:
        path = root / 'basicsr' / name
        text = path.read_text()
        assert text.count(old) == 1, f'{name}: the v1.4.2 text to change is not there once'
        path.write_text(text.replace(old, new))
    return root


@pytest.fixture
def clone(tmp_path):
    return release_clone(tmp_path / 'BasicSR')


def tree_hashes(root, skip=('experiments', )):
    """{relative path: sha256} of every file under ``root``; bytecode caches and the top-level
    folders in ``skip`` (what running the clone writes) left out."""
    hashes = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != '__pycache__' and not (folder == str(root) and d in skip)]
        for name in files:
            path = os.path.join(folder, name)
            with open(path, 'rb') as f:
                hashes[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return hashes


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def run_in_clone(clone, args):
    """``python ARGS`` from the clone's root, as its README has it: the clone's own ``basicsr``
    first on the path (PYTHONPATH=., as ``python setup.py develop`` would), nothing run before it."""
    env = run_env()
    env['PYTHONPATH'] = str(clone)
    env.pop('PYTHONDONTWRITEBYTECODE', None)  # its bytecode shows which basicsr ran
    return subprocess.run([PYTHON] + args, cwd=str(clone), env=env, capture_output=True, text=True, timeout=300)


def newest_log(exp):
    return max(exp.glob('train_*.log'), key=os.path.getmtime).read_text()


@pytest.mark.system
@pytest.mark.parametrize('kind', ['v1.4.2', 'master'])
def test_clone_trains_gunet_with_its_own_train_py_and_uninstall_restores_it(kind, tmp_path, tiny_its):
    clone = (release_clone if kind == 'v1.4.2' else master_clone)(tmp_path / 'BasicSR')
    # The user's data and option file, relative to the clone, in place before the install.
    shutil.copytree(os.path.dirname(tiny_its[0]), clone / 'datasets' / 'tiny')
    os.makedirs(clone / 'options')
    opt = tiny_train_opt('datasets/tiny/hazy', 'datasets/tiny/clear', 'unused', name='tiny_clone', total_iter=3)
    del opt['path']['experiments_root']  # BasicSR's default: <clone>/experiments/<name>
    opt['logger']['save_checkpoint_freq'] = 2
    write_option_file(opt, str(clone / 'options' / 'train_tiny_clone.yml'))
    train = ['basicsr/train.py', '-opt', 'options/train_tiny_clone.yml']
    # Resuming on a CPU needs the plugin's load_resume_state (1.4.2's maps the state onto CUDA):
    # it shows that the fixes reach the clone's own script.
    launch = ['-m', 'torch.distributed.launch', '--nproc_per_node=1', f'--master_port={free_port()}'] + train + [
        '--launcher', 'pytorch', '--auto_resume']
    degradations = clone / 'basicsr' / 'data' / 'degradations.py'
    line_count = len(degradations.read_text().splitlines())
    before = tree_hashes(clone)

    if kind == 'v1.4.2':  # what the installer is for: this BasicSR cannot even be imported
        proc = run_in_clone(clone, train)
        assert proc.returncode != 0
        assert "No module named 'torchvision.transforms.functional_tensor'" in proc.stderr, proc.stderr[-3000:]
        assert str(degradations) in proc.stderr

    tool = load_script()
    assert tool.main([str(clone)]) == 0
    installed = tree_hashes(clone)
    assert tool.main([str(clone)]) == 0  # installing again changes nothing
    assert tree_hashes(clone) == installed
    shipped = sorted(os.path.basename(p) for p in tool.our_option_files())
    assert len(shipped) >= 32 and sorted(os.listdir(clone / 'options')) == sorted(shipped + ['train_tiny_clone.yml'])
    changed = {p for p in installed if before.get(p) != installed[p]}
    assert changed - {os.path.join('options', n) for n in shipped} == (
        {'basicsr/models/gunet_plugin_model.py', 'basicsr/data/degradations.py'} if kind == 'v1.4.2' else
        {'basicsr/models/gunet_plugin_model.py'})
    if kind == 'v1.4.2':
        lines = degradations.read_text().splitlines(keepends=True)
        assert lines[7].startswith('from torchvision.transforms.functional import rgb_to_grayscale  # ')
        assert tool.MARKER in lines[7] and RELEASE_IMPORT not in lines
        assert len(lines) == line_count

    exp = clone / 'experiments' / 'tiny_clone'
    resumed = 'Resuming training from epoch: 0, iter: 2.'
    for args, expected in ((train, ['Network: GUNet', 'iter:       2,']),
                           (launch, ['Network: DistributedDataParallel - GUNet', resumed])):
        proc = run_in_clone(clone, args)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        log = newest_log(exp)
        assert 'Model [GUNetModel] is created.' in log and all(e in log for e in expected), log[-3000:]
        assert 'World size (gpu number): 1' in log and 'iter:       3,' in log and 'End of training' in log
        assert (exp / 'models' / 'net_g_latest.pth').is_file()
        # The clone's basicsr ran (its bytecode was written), hook included.
        assert list((clone / 'basicsr' / 'models' / '__pycache__').glob('gunet_plugin_model.*.pyc'))

    assert tool.main([str(clone), '--uninstall']) == 0
    assert tree_hashes(clone) == before


def test_import_fix_keeps_the_rest_of_the_file_and_uninstall_restores_its_bytes(clone, capsys):
    """A CRLF checkout (git on Windows): only the import line changes, its line ending stays."""
    tool = load_script()
    degradations = clone / 'basicsr' / 'data' / 'degradations.py'
    original = degradations.read_bytes().replace(b'\n', b'\r\n')
    degradations.write_bytes(original)
    os.chmod(degradations, 0o640)
    tool.main([str(clone)])
    patched = degradations.read_bytes()
    assert patched == original.replace(RELEASE_IMPORT.rstrip('\n').encode(), tool.NEW_IMPORT)
    assert os.stat(degradations).st_mode & 0o777 == 0o640
    tool.main([str(clone), '--uninstall'])
    assert degradations.read_bytes() == original

    # An import line edited after the install is the user's: --uninstall leaves it.
    tool.main([str(clone)])
    degradations.write_bytes(degradations.read_bytes().replace(b'rgb_to_grayscale  #', b'rgb_to_grayscale as g  #'))
    edited = degradations.read_bytes()
    capsys.readouterr()
    tool.main([str(clone), '--uninstall'])
    assert degradations.read_bytes() == edited
    assert f'kept (the import line was edited since it was installed): {degradations}' in capsys.readouterr().out


def test_uninstall_removes_the_hook_and_unchanged_option_files(clone):
    tool = load_script()
    tool.main([str(clone), '--link'])
    first = sorted(os.listdir(clone / 'options'))[0]
    assert os.path.islink(clone / 'options' / first)
    edited = clone / 'options' / sorted(os.listdir(clone / 'options'))[1]
    text = edited.read_text()
    edited.unlink()
    edited.write_text(text + '\n# my change\n')
    tool.main([str(clone), '--uninstall'])
    assert not (clone / 'basicsr' / 'models' / tool.HOOK_NAME).exists()
    assert os.listdir(clone / 'options') == [edited.name]
    edited.unlink()
    tool.main([str(clone), '--uninstall'])
    assert not (clone / 'options').exists()  # the installer made it; a clone without one gets none back


def test_refuses_a_folder_that_is_not_basicsr(tmp_path):
    with pytest.raises(SystemExit, match='neither a BasicSR clone'):
        load_script().main([str(tmp_path)])
