"""The variant table is the one place a variant is defined: the paper's four match their
published parameter counts, and a variant added to the table inside a test builds, is detected
from its own weights, passes the option checks and is accepted by every script's --variant."""
import importlib.util
import os

import cv2
import numpy as np
import pytest
import torch
from conftest import ROOT

from gunet_arch.archs import VARIANTS, GUNet, Variant, get_variant
from gunet_arch.archs.checkpoints import load_gunet_checkpoint
from gunet_arch.models.gunet_model import _network_signature
from gunet_arch.models.option_checks import check_network_options


def load_script(name):
    spec = importlib.util.spec_from_file_location(f'script_{name}', os.path.join(ROOT, 'scripts', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def n_params(net):
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize('name, params', [('t', 844_899), ('s', 1_477_059), ('b', 2_741_379), ('d', 5_270_019)])
def test_paper_variants_have_the_official_parameter_counts(name, params):
    spec = get_variant(name)
    assert spec.params == params
    net = GUNet(variant=name, channels_last=False)
    assert n_params(net) == params and net.variant == name
    assert (net.base_dim, net.depths, net.kernel_size) == (spec.base_dim, list(spec.depths), spec.kernel_size)


def test_variant_names_are_read_leniently_and_unknown_ones_name_the_choices():
    assert get_variant('gunet-S') is get_variant('gUNet_s') is VARIANTS['s']
    with pytest.raises(ValueError, match="unknown gUNet variant 'q'; valid variants: t, s, b, d"):
        get_variant('q')


@pytest.fixture
def variant_x(monkeypatch):
    """A new variant, added the way a developer would: one entry in the table."""
    depths, base_dim, kernel = (1, 1, 1, 2, 1, 1, 1), 8, 3
    params = n_params(GUNet(base_dim=base_dim, depths=depths, kernel_size=kernel))
    monkeypatch.setitem(VARIANTS, 'x', Variant('x', depths, base_dim, kernel, params))
    return VARIANTS['x']


def test_an_added_variant_builds_and_is_detected_from_its_weights(variant_x, tmp_path):
    net = GUNet(variant='x')
    assert net.variant == 'x' and n_params(net) == variant_x.params
    assert net(torch.rand(1, 3, 30, 26)).shape == (1, 3, 30, 26)
    path = str(tmp_path / 'x.pth')
    torch.save({'params': net.state_dict()}, path)
    _, config = load_gunet_checkpoint(path, variant='x')
    assert config['variant'] == 'x'
    with pytest.raises(ValueError, match='gUNet-T'):
        load_gunet_checkpoint(path, variant='t')
    check_network_options({'network_g': {'type': 'GUNet', 'variant': 'x'}})
    assert _network_signature({'type': 'GUNet', 'variant': 'x'})['depths'] == list(variant_x.depths)


def test_every_script_accepts_an_added_variant(variant_x, tmp_path):
    weights, converted = str(tmp_path / 'x.pth'), str(tmp_path / 'x_params.pth')
    torch.save({'state_dict': {'module.' + k: v for k, v in GUNet(variant='x').state_dict().items()}}, weights)
    assert load_script('convert_official_weights').main(
        ['--input', weights, '--output', converted, '--variant', 'x']) == 0
    photos = tmp_path / 'photos'
    photos.mkdir()
    cv2.imwrite(str(photos / 'a.png'), np.full((20, 28, 3), 128, np.uint8))
    assert load_script('inference').main(
        ['--input', str(photos), '--output', str(tmp_path / 'out'), '--weights', converted, '--variant', 'x']) == 0
    assert (tmp_path / 'out' / 'a.png').is_file()
    # Export: the parser accepts the name; the missing file is then the (clear) error.
    assert load_script('export_onnx').main(
        ['--weights', str(tmp_path / 'none.pth'), '--output', str(tmp_path / 'x.onnx'), '--variant', 'x']) == 1
    args = load_script('benchmark').build_parser().parse_args(['--variants', 'x', '--train-variants', 'x'])
    assert args.variants == args.train_variants == ['x']
    with pytest.raises(SystemExit):
        load_script('benchmark').build_parser().parse_args(['--variants', 'q'])
