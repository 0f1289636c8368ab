"""Official-format checkpoints: loading through BasicSR, conversion, variant detection, errors."""
import pytest
import torch
from conftest import load_script

import gunet_arch  # noqa: F401
from gunet_arch.archs import GUNet
from gunet_arch.archs.checkpoints import build_gunet_from_checkpoint, load_gunet_checkpoint


def convert(args, capsys):
    """scripts/convert_official_weights.py's main, in-process: (exit status, stdout, stderr)."""
    code = load_script('convert_official_weights').main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def save_official(net, path):
    """What the official training script saves: a DDP state dict under 'state_dict'."""
    sd = {'module.' + k: v for k, v in net.state_dict().items()}
    torch.save({'cur_epoch': 10, 'best_psnr': 30.5, 'state_dict': sd}, path)


@pytest.fixture(scope='module')
def official_t(tmp_path_factory):
    torch.manual_seed(3)
    net = GUNet(variant='t').eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 1.5)
    path = str(tmp_path_factory.mktemp('ckpt') / 'gunet-t.pth')
    save_official(net, path)
    return net, path


def basicsr_load(net, path, param_key):
    from basicsr.models.base_model import BaseModel

    loader = BaseModel({'num_gpu': 0, 'is_train': False, 'dist': False})
    loader.load_network(net, path, strict=True, param_key=param_key)
    return net.eval()


def test_official_checkpoint_loads_through_basicsr_and_after_conversion(official_t, tmp_path, capsys):
    ref, path = official_t
    x = torch.rand(1, 3, 40, 52)
    with torch.no_grad():
        expected = ref(x)
    direct = basicsr_load(GUNet(variant='t'), path, 'state_dict')
    out = str(tmp_path / 'net_g_gunet_t.pth')
    code, stdout, stderr = convert(['--input', path, '--output', out], capsys)
    assert code == 0, stderr
    assert f'parameters written to {out}' in stdout
    assert set(torch.load(out, weights_only=True)) == {'params'}
    converted = basicsr_load(GUNet(variant='t'), out, 'params')
    with torch.no_grad():
        assert torch.equal(direct(x), expected)
        assert torch.equal(converted(x), expected)


def test_variant_is_detected_and_both_formats_build(official_t, tmp_path):
    ref, path = official_t
    sd, config = load_gunet_checkpoint(path)
    assert config['variant'] == 't' and config['depths'] == [2, 2, 2, 4, 2, 2, 2]
    basicsr_path = str(tmp_path / 'b.pth')
    torch.save({'params': ref.state_dict(), 'params_ema': ref.state_dict()}, basicsr_path)
    for p in (path, basicsr_path):
        net = build_gunet_from_checkpoint(p)
        assert not net.training and net.variant == 't'


def test_wrong_variant_fails_with_key_and_writes_nothing(official_t, tmp_path, capsys):
    _, path = official_t
    out = tmp_path / 'out.pth'
    code, _, stderr = convert(['--input', path, '--output', out, '--variant', 's'], capsys)
    assert code != 0
    assert "layers.0.blocks.2" in stderr  # first block gUNet-S has and gUNet-T lacks
    assert not out.exists() and not any(tmp_path.iterdir())


def test_not_a_gunet_checkpoint(tmp_path, capsys):
    bad = tmp_path / 'other.pth'
    torch.save({'params': {'conv_first.weight': torch.zeros(64, 3, 3, 3)}}, bad)
    out = tmp_path / 'out.pth'
    code, _, stderr = convert(['--input', bad, '--output', out], capsys)
    assert code != 0 and 'not a gUNet checkpoint' in stderr and 'inconv.proj.weight' in stderr
    assert not out.exists()
    garbage = tmp_path / 'garbage.pth'
    garbage.write_bytes(b'not a checkpoint at all')
    with pytest.raises(ValueError, match='garbage.pth'):
        load_gunet_checkpoint(str(garbage))


def test_shape_mismatch_names_key_and_shapes(tmp_path):
    net = GUNet(variant='t')
    sd = net.state_dict()
    sd['skips.1.weight'] = torch.zeros(48, 48, 3, 3)
    path = tmp_path / 'broken.pth'
    torch.save({'params': sd}, path)
    with pytest.raises(ValueError, match=r"skips\.1\.weight.*\(48, 48, 3, 3\).*\(48, 48, 1, 1\)"):
        load_gunet_checkpoint(str(path))
