"""CUDA paths: the deployed form on a GPU, float16 AMP with loss scaling, half-precision
inference. Marked ``cuda``: `make test` deselects them, `make test-gpu` runs them."""
import cv2
import numpy as np
import pytest
import torch
from basicsr.models import build_model
from conftest import load_script, randomise_batch_norms, tiny_train_opt

from gunet_arch.archs import GUNet

pytestmark = pytest.mark.cuda


def test_deployed_on_cuda_is_nchw_and_matches_the_cpu():
    torch.manual_seed(0)
    net = randomise_batch_norms(GUNet(variant='t').eval())
    x = torch.rand(1, 3, 96, 80)
    with torch.no_grad():
        ref = net(x)
        gpu = net.cuda().deploy()
        out = gpu(x.cuda()).cpu()
    assert not gpu.channels_last
    assert (out - ref).abs().max().item() < 1e-4


def test_float16_amp_trains_with_a_loss_scaler(tiny_its, tmp_path):
    opt = tiny_train_opt(*tiny_its, str(tmp_path / 'exp'), amp={'enabled': True, 'dtype': 'float16'})
    opt['num_gpu'] = 1
    model = build_model(opt)
    assert model.amp.dtype == torch.float16 and model.scaler is not None
    batch = {'lq': torch.rand(4, 3, 32, 32), 'gt': torch.rand(4, 3, 32, 32)}
    for it in (1, 2):
        model.feed_data(batch)
        model.optimize_parameters(it)
        assert torch.isfinite(torch.tensor(model.get_current_log()['l_pix']))
    assert model.scaler.get_scale() > 0


def test_half_precision_inference_writes_the_image(tmp_path):
    net = GUNet(variant='t')
    weights = tmp_path / 't.pth'
    torch.save({'params': net.state_dict()}, weights)
    photos = tmp_path / 'in'
    photos.mkdir()
    cv2.imwrite(str(photos / 'a.png'), np.random.default_rng(0).integers(0, 255, (64, 48, 3), dtype=np.uint8))
    code = load_script('inference').main(['--input', str(photos), '--output', str(tmp_path / 'out'),
                                          '--weights', str(weights), '--device', 'cuda', '--fp16'])
    assert code == 0 and cv2.imread(str(tmp_path / 'out' / 'a.png')).shape == (64, 48, 3)
