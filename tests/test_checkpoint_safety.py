"""Checkpoints are data, never code: every weights path refuses a pickle that would run code
(the test file would create a marker file if it ran), training states load with weights_only,
and .safetensors works everywhere weights are read or written."""
import os

import cv2
import numpy as np
import pytest
import torch
from basicsr.models import build_model
from conftest import load_script, tiny_train_opt

from gunet_arch import compat
from gunet_arch.archs import GUNet
from gunet_arch.archs.checkpoints import read_checkpoint


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'touch {self.marker}', )


@pytest.fixture
def hostile(tmp_path):
    """A real gUNet state dict, plus an object that runs a shell command when unpickled."""
    marker = tmp_path / 'code-ran'
    path = tmp_path / 'hostile.pth'
    torch.save({'params': GUNet(variant='t').state_dict(), 'extra': _RunsCode(marker)}, path)
    return str(path), marker


def test_read_checkpoint_refuses_code_without_running_it(hostile):
    path, marker = hostile
    with pytest.raises(ValueError, match='refused: the file holds Python objects besides tensors'):
        read_checkpoint(path)
    assert not marker.exists()


def test_every_entry_point_refuses_it(hostile, tmp_path, tiny_its, capsys):
    path, marker = hostile
    photos = tmp_path / 'photos'
    photos.mkdir()
    cv2.imwrite(str(photos / 'a.png'), np.zeros((32, 32, 3), np.uint8))
    assert load_script('inference').main(['--input', str(photos), '--output', str(tmp_path / 'out'),
                                          '--weights', path]) == 2
    assert load_script('convert_official_weights').main(['--input', path, '--output', str(tmp_path / 'c.pth')]) == 1
    assert load_script('export_onnx').main(['--weights', path, '--output', str(tmp_path / 'x.onnx')]) == 1
    assert capsys.readouterr().err.count('refused: the file holds Python objects') == 3
    opt = tiny_train_opt(*tiny_its, str(tmp_path / 'exp'))
    opt['path']['pretrain_network_g'] = path
    opt['network_g'] = {'type': 'GUNet', 'variant': 't'}
    with pytest.raises(ValueError, match='refused'):
        build_model(opt)
    assert not marker.exists() and not (tmp_path / 'out').exists() and not (tmp_path / 'c.pth').exists()


def test_training_states_load_as_data_only(tiny_its, tmp_path):
    opt = tiny_train_opt(*tiny_its, str(tmp_path / 'exp'))
    for key in ('models', 'training_states'):
        os.makedirs(opt['path'][key])
    build_model(opt).save(0, 2)
    marker = tmp_path / 'code-ran'
    state_path = os.path.join(opt['path']['training_states'], '2.state')
    state = torch.load(state_path, weights_only=True)
    state['extra'] = _RunsCode(marker)
    torch.save(state, state_path)
    opt['path']['resume_state'] = state_path
    with pytest.raises(ValueError, match='cannot be resumed from'):
        compat.load_resume_state(opt)
    assert not marker.exists()


def test_safetensors_everywhere(tiny_its, tmp_path):
    torch.manual_seed(0)
    net = GUNet(variant='t')
    official = tmp_path / 'gunet-t.pth'
    torch.save({'state_dict': {'module.' + k: v for k, v in net.state_dict().items()}}, official)
    converted = tmp_path / 'gunet-t.safetensors'
    assert load_script('convert_official_weights').main(['--input', str(official), '--output', str(converted)]) == 0
    from safetensors import safe_open

    with safe_open(str(converted), framework='pt') as f:
        assert len(list(f.keys())) == len(net.state_dict())
    photos = tmp_path / 'photos'
    photos.mkdir()
    cv2.imwrite(str(photos / 'a.png'), np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8))
    outs = []
    for weights in (official, converted):
        out = tmp_path / f'out_{weights.suffix[1:]}'
        assert load_script('inference').main(['--input', str(photos), '--output', str(out), '--weights',
                                              str(weights)]) == 0
        outs.append(cv2.imread(str(out / 'a.png')))
    assert np.array_equal(outs[0], outs[1])

    # Training writes .safetensors with logger.save_format, and resumes from it.
    opt = tiny_train_opt(*tiny_its, str(tmp_path / 'exp'))
    opt['logger']['save_format'] = 'safetensors'
    for key in ('models', 'training_states'):
        os.makedirs(opt['path'][key])
    model = build_model(opt)
    model.save(0, 4)
    assert sorted(os.listdir(opt['path']['models'])) == ['net_g_4.safetensors']
    opt['auto_resume'] = True
    state = compat.load_resume_state(opt)
    assert state['iter'] == 4 and opt['path']['pretrain_network_g'].endswith('net_g_4.safetensors')
    resumed = build_model(opt)
    a, b = (m.get_bare_model(m.net_g).state_dict() for m in (model, resumed))
    assert all(torch.equal(a[k], b[k]) for k in a)
