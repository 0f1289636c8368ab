"""scripts/install_into_basicsr.py against a copy of the installed basicsr package laid out as a
clone: the clone's own basicsr/train.py then trains GUNetModel; --uninstall undoes it."""
import importlib.util
import os
import shutil
import subprocess
import textwrap

import basicsr
import pytest

from conftest import PYTHON, ROOT, run_env, tiny_train_opt, write_option_file

SCRIPT = os.path.join(ROOT, 'scripts', 'install_into_basicsr.py')


def load_script():
    spec = importlib.util.spec_from_file_location('install_into_basicsr', SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def clone(tmp_path):
    root = tmp_path / 'BasicSR'
    shutil.copytree(os.path.dirname(basicsr.__file__), root / 'basicsr',
                    ignore=shutil.ignore_patterns('__pycache__', '*.pyc', 'gunet_plugin_model.py'))
    return root


def test_install_then_the_clones_own_train_py_trains_gunet(clone, tiny_its, tmp_path):
    tool = load_script()
    assert tool.main([str(clone)]) == 0
    hook = clone / 'basicsr' / 'models' / tool.HOOK_NAME
    assert tool.MARKER in hook.read_text()
    shipped = sorted(os.path.basename(p) for p in tool.our_option_files())
    assert len(shipped) >= 32 and sorted(os.listdir(clone / 'options')) == shipped

    # Data under the clone, referenced relative to it, launched from elsewhere.
    os.makedirs(clone / 'datasets')
    os.symlink(os.path.dirname(tiny_its[0]), clone / 'datasets' / 'tiny')
    opt = tiny_train_opt('datasets/tiny/hazy', 'datasets/tiny/clear', 'unused', name='tiny_clone', total_iter=3)
    del opt['path']['experiments_root']  # BasicSR's default: <clone>/experiments/<name>
    option_file = write_option_file(opt, str(clone / 'options' / 'train_tiny_clone.yml'))
    runner = textwrap.dedent(f'''
        import runpy, sys, types
        # basicsr 1.4.2 imports torchvision.transforms.functional_tensor, which current torchvision
        # lacks (BasicSR master no longer does); give this copy of 1.4.2 the one name it needs.
        import torchvision.transforms.functional as F
        shim = types.ModuleType('torchvision.transforms.functional_tensor')
        shim.rgb_to_grayscale = F.rgb_to_grayscale
        sys.modules['torchvision.transforms.functional_tensor'] = shim
        sys.argv = ['basicsr/train.py', '-opt', {option_file!r}]
        script = runpy.run_path({str(clone / 'basicsr' / 'train.py')!r}, run_name='__main__')
        import basicsr
        print('BASICSR_FROM', basicsr.__file__)
        print('RESUME_FROM', script['load_resume_state'].__module__)
    ''')
    env = run_env()
    env['PYTHONPATH'] = f'{clone}{os.pathsep}{env["PYTHONPATH"]}'
    elsewhere = tmp_path / 'elsewhere'
    elsewhere.mkdir()
    proc = subprocess.run([PYTHON, '-c', runner], cwd=str(elsewhere), env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f'BASICSR_FROM {clone / "basicsr" / "__init__.py"}' in proc.stdout
    assert 'RESUME_FROM gunet_arch.compat' in proc.stdout  # --auto_resume fixed in the script too
    exp = clone / 'experiments' / 'tiny_clone'
    log = open(next(exp.glob('train_*.log'))).read()
    assert 'Model [GUNetModel] is created.' in log
    assert (exp / 'models' / 'net_g_latest.pth').is_file()


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


def test_refuses_a_folder_that_is_not_basicsr(tmp_path):
    with pytest.raises(SystemExit, match='neither a BasicSR clone'):
        load_script().main([str(tmp_path)])
