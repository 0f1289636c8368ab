"""scripts/inference.py: formats, bit depths, channel layouts, orientation, sizes, tiling,
failures, atomic writes and checkpoint checks."""
import os
import subprocess
import sys
import textwrap

import cv2
import numpy as np
import pytest
import torch
from conftest import randomise_batch_norms

import gunet_arch  # noqa: F401
from gunet_arch.archs import GUNet
from gunet_arch.tools import image_io
from gunet_arch.tools.inference import blend_window, dehaze_rgb, run_net, run_tiled, tile_starts

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, 'scripts', 'inference.py')
sys.path.insert(0, os.path.join(ROOT, 'scripts'))
import inference as inference_cli  # noqa: E402


def _identity_gunet():
    """A gUNet whose output convolution is zero: output = input, so I/O can be checked exactly."""
    torch.manual_seed(0)
    net = GUNet('t')
    with torch.no_grad():
        net.outconv.proj[0].weight.zero_()
        net.outconv.proj[0].bias.zero_()
    return net


@pytest.fixture(scope='module')
def identity_ckpt(tmp_path_factory):
    path = str(tmp_path_factory.mktemp('ckpt') / 'identity.pth')
    torch.save({'params': _identity_gunet().state_dict()}, path)
    return path


@pytest.fixture(scope='module')
def random_ckpt(tmp_path_factory):
    """gUNet-T as initialised (a real residual) with trained-looking, random BatchNorm statistics,
    in the official checkpoint format."""
    torch.manual_seed(1)
    net = randomise_batch_norms(GUNet('t'), seed=1)
    path = str(tmp_path_factory.mktemp('ckpt') / 'gunet_t_official.pth')
    torch.save({'state_dict': {f'module.{k}': v for k, v in net.state_dict().items()}}, path)
    return path


def _photo(h, w, channels=3, dtype=np.uint8, seed=0):
    rng = np.random.default_rng(seed)
    small = rng.uniform(0.1, 0.9, (max(2, h // 8), max(2, w // 8), channels)).astype(np.float32)
    img = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR).reshape(h, w, channels)
    img = np.clip(img + rng.normal(0, 0.02, img.shape), 0, 1)
    img = image_io.from_float(img, dtype)
    return img[..., 0] if channels == 1 else img


def _run(args):
    return inference_cli.main([str(a) for a in args])


@pytest.mark.parametrize('ext', ['.png', '.jpg', '.bmp', '.tif', '.webp'])
def test_each_format_roundtrips(tmp_path, identity_ckpt, ext):
    img = _photo(40, 56)
    src = tmp_path / 'in' / f'photo{ext}'
    src.parent.mkdir()
    assert cv2.imwrite(str(src), img)
    assert _run(['--input', src, '--output', tmp_path / 'out', '--weights', identity_ckpt, '--device', 'cpu']) == 0
    out = cv2.imread(str(tmp_path / 'out' / f'photo{ext}'), cv2.IMREAD_UNCHANGED)
    assert out.shape == img.shape and out.dtype == np.uint8
    diff = np.abs(out.astype(int) - cv2.imread(str(src), cv2.IMREAD_UNCHANGED).astype(int))
    if ext == '.jpg':  # re-encoded at quality 95
        assert diff.mean() < 1.5
    else:  # lossless here
        assert diff.max() <= 1


@pytest.mark.parametrize('ext', ['.png', '.tif'])
@pytest.mark.parametrize('channels', [1, 3, 4])
def test_16_bit_stays_16_bit_gray_stays_gray_alpha_untouched(tmp_path, identity_ckpt, ext, channels):
    img = _photo(33, 47, channels, np.uint16, seed=channels)
    if channels == 4:
        img[..., 3] = np.random.default_rng(0).integers(0, 65536, img.shape[:2], dtype=np.uint16)
    src = tmp_path / f'deep{ext}'
    assert cv2.imwrite(str(src), img)
    assert _run(['--input', src, '--output', tmp_path / 'out', '--weights', identity_ckpt, '--device', 'cpu']) == 0
    out = cv2.imread(str(tmp_path / 'out' / f'deep{ext}'), cv2.IMREAD_UNCHANGED)
    assert out.dtype == np.uint16 and out.shape == img.shape
    # Identity network: 16-bit precision survives (an 8-bit detour would be off by up to 128).
    assert np.abs(out.astype(int) - img.astype(int)).max() <= 2
    if channels == 4:
        assert np.array_equal(out[..., 3], img[..., 3])


def test_8_bit_gray_and_rgba_with_a_real_network(tmp_path, random_ckpt):
    gray, rgba = _photo(30, 40, 1), _photo(30, 40, 4, seed=3)
    rgba[..., 3] = np.arange(30 * 40).reshape(30, 40) % 256
    cv2.imwrite(str(tmp_path / 'gray.png'), gray)
    cv2.imwrite(str(tmp_path / 'rgba.png'), rgba)
    assert _run(['--input', tmp_path, '--output', tmp_path / 'out', '--weights', random_ckpt, '--device', 'cpu']) == 0
    out_gray = cv2.imread(str(tmp_path / 'out' / 'gray.png'), cv2.IMREAD_UNCHANGED)
    out_rgba = cv2.imread(str(tmp_path / 'out' / 'rgba.png'), cv2.IMREAD_UNCHANGED)
    assert out_gray.shape == gray.shape and not np.array_equal(out_gray, gray)  # the net did something
    assert out_rgba.shape == rgba.shape and np.array_equal(out_rgba[..., 3], rgba[..., 3])


@pytest.mark.parametrize('ext', ['.png', '.tif'])
def test_gray_with_alpha_stays_gray_with_alpha(tmp_path, identity_ckpt, ext):
    from PIL import Image
    la = np.dstack([_photo(20, 24, 1), np.arange(20 * 24).reshape(20, 24).astype(np.uint8)])
    Image.fromarray(la, 'LA').save(tmp_path / f'la{ext}')
    assert _run(['--input', tmp_path / f'la{ext}', '--output', tmp_path / 'out', '--weights', identity_ckpt]) == 0
    with Image.open(tmp_path / 'out' / f'la{ext}') as out:
        assert out.mode == 'LA'
        assert np.abs(np.asarray(out).astype(int) - la).max() <= 1


@pytest.mark.parametrize('orientation', range(1, 9))
def test_exif_orientation_as_pillow_applies_it(tmp_path, orientation):
    from PIL import Image, ImageOps
    img = _photo(12, 20)[..., ::-1].copy()  # RGB for Pillow
    exif = Image.Exif()
    exif[image_io.EXIF_ORIENTATION_TAG] = orientation
    path = tmp_path / 'o.png'
    Image.fromarray(img).save(path, exif=exif)
    with Image.open(path) as im:
        expected = np.asarray(ImageOps.exif_transpose(im).convert('RGB'))
    assert np.array_equal(image_io.read_image(str(path))[..., ::-1], expected)


def test_exif_rotated_jpeg_is_written_upright(tmp_path, identity_ckpt):
    from PIL import Image
    exif = Image.Exif()
    exif[image_io.EXIF_ORIENTATION_TAG] = 6  # stored landscape, shown portrait
    Image.fromarray(_photo(24, 40)[..., ::-1].copy()).save(tmp_path / 'r.jpg', exif=exif, quality=95)
    assert _run(['--input', tmp_path / 'r.jpg', '--output', tmp_path / 'out', '--weights', identity_ckpt]) == 0
    assert cv2.imread(str(tmp_path / 'out' / 'r.jpg')).shape[:2] == (40, 24)


@pytest.mark.parametrize('size', [(1, 1), (3, 5), (7, 2), (37, 53), (65, 9)])
def test_tiny_and_odd_sizes(tmp_path, random_ckpt, size):
    img = _photo(*size)
    cv2.imwrite(str(tmp_path / 'x.png'), img)
    assert _run(['--input', tmp_path / 'x.png', '--output', tmp_path / 'out', '--weights', random_ckpt]) == 0
    assert cv2.imread(str(tmp_path / 'out' / 'x.png')).shape == img.shape


def test_tile_layout_covers_and_overlaps():
    assert tile_starts(100, 128, 16) == [0]
    starts = tile_starts(1024, 256, 32)
    assert starts[0] == 0 and starts[-1] == 1024 - 256
    assert all(b - a <= 256 - 32 for a, b in zip(starts, starts[1:]))
    assert blend_window(64, 16).min() > 0 and blend_window(64, 16).max() == 1


def _local_pooling(self, x):
    """What a tile sees without WholeImagePool: the mean of its own features only."""
    return x.mean((2, 3), keepdim=True)


def _psnr(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return 10 * np.log10(1 / np.mean((a - b)**2))


def test_tiled_matches_untiled_at_90_db_when_the_overlap_covers_the_context(monkeypatch):
    """Tiled inference (dehaze_rgb with --tile) reproduces the untiled network to >= 90 dB PSNR.

    What makes this a real check:
    * the network's statistics matter: trained-looking (random) BatchNorm statistics, SK
      fusions made 900x more sensitive to their pooled input, and a residual of ~0.1 on
      average (not a near-identity network); the hazy image has a dark and a bright region, so
      tiles differ in content. The same tiling with each tile pooling only itself scores ~34 dB
      (asserted below: < 45 dB), so a per-tile implementation cannot pass.
    * the tile overlap (96 px) covers most of the context this small gUNet's convolutions read,
      and the blend weights fall off towards each tile edge; then the statistics are the only
      way tiles could disagree with the whole image, and the measured agreement is ~98 dB.
    Nothing here shows that tiling is exact for a full-size gUNet, whose convolutions see much
    further than any overlap: there the context at tile borders costs some decibels."""
    from gunet_arch.tools import inference as tool
    from gunet_arch.tools.haze_synthesis import add_haze, depth_prior
    torch.manual_seed(0)
    net = randomise_batch_norms(GUNet(base_dim=16, depths=[1, 1, 1, 2, 1, 1, 1], channels_last=False).eval(),
                                seed=0, var_range=(0.05, 1.0))
    with torch.no_grad():
        for fusion in net.fusions:
            fusion.mlp[1].weight.mul_(30)
            fusion.mlp[3].weight.mul_(30)
        net.outconv.proj[0].weight.mul_(3)
        net.outconv.proj[0].bias.zero_()
    net.deploy()
    clear = _photo(384, 384, seed=5).astype(np.float32) / 255
    clear[:, 172:] *= 0.35  # a shadowed region, not aligned with the tiles
    hazy = add_haze(clear, depth_prior(clear), 0.9, 1.2).astype(np.float32)
    cpu = torch.device('cpu')
    with torch.no_grad():
        x = torch.from_numpy(hazy.transpose(2, 0, 1))[None]
        assert (net(x) - x).abs().mean() > 0.05
    whole = dehaze_rgb(net, hazy, cpu)
    tiled = dehaze_rgb(net, hazy, cpu, tile=192, overlap=96)
    assert tile_starts(384, 192, 96) == [0, 96, 192]  # 3 x 3 tiles
    assert _psnr(tiled, whole) >= 90
    assert abs(_psnr(tiled, clear) - _psnr(whole, clear)) <= 0.5
    monkeypatch.setattr(tool.WholeImagePool, 'forward', _local_pooling)
    assert _psnr(dehaze_rgb(net, hazy, cpu, tile=192, overlap=96), whole) < 45


def test_tiles_use_whole_image_statistics_in_the_sk_fusions(monkeypatch):
    """A full-size gUNet-T whose SK fusions react strongly to global content, with random
    BatchNorm statistics, on an image whose halves differ: a tile pooling only itself would
    weigh its inputs very differently.

    Proves, on a network whose receptive field is far larger than the overlap:
    * every SK fusion answers every tile with the untiled network's whole-image average pool
      (relative difference < 1e-3; measured <= 4e-5, what the features of the pixels near
      tile borders lose to the missing context), while each tile's own mean differs from it by
      more than 30% (measured >= 54%);
    * the blended result stays > 45 dB from the untiled one (measured ~70 dB), which local
      pooling does not reach (measured ~37 dB; asserted < 45 dB)."""
    from gunet_arch.tools import inference as tool
    torch.manual_seed(2)
    net = randomise_batch_norms(GUNet('t', channels_last=False).eval(), seed=4, var_range=(0.05, 1.0))
    with torch.no_grad():
        for fusion in net.fusions:
            fusion.mlp[1].weight.mul_(30)
            fusion.mlp[3].weight.mul_(30)
    x = torch.rand(1, 3, 256, 192) * 0.2
    x[..., :, 96:] += 0.7
    psnr = lambda a, b: float(10 * torch.log10(1 / ((a - b)**2).mean()))  # noqa: E731

    pooled = {}
    hooks = [f.mlp[0].register_forward_hook(lambda m, i, out, k=k: pooled.__setitem__(2**k, out.clone()))
             for k, f in enumerate(net.fusions)]
    untiled = run_net(net, x)
    for hook in hooks:
        hook.remove()
    answers = []
    real_forward = tool.WholeImagePool.forward

    def spy(self, feat):
        out = real_forward(self, feat)
        answers.append((self.scale, self.mode, out.clone()))
        return out

    monkeypatch.setattr(tool.WholeImagePool, 'forward', spy)
    tiled = run_tiled(net, x, 96, 16)
    rel = lambda a, b: float((a - b).norm() / b.norm())  # noqa: E731
    for scale, whole_mean in pooled.items():
        applied = [out for s, mode, out in answers if s == scale and mode == 'apply']
        own = [out for s, mode, out in answers if s == scale and mode == 'collect']
        assert applied and own
        assert max(rel(a, whole_mean) for a in applied) < 1e-3
        assert min(rel(o, whole_mean) for o in own) > 0.3
    assert psnr(tiled, untiled) > 45

    monkeypatch.setattr(tool.WholeImagePool, 'forward', _local_pooling)
    assert psnr(run_tiled(net, x, 96, 16), untiled) < 45


def test_tiles_blend_without_seams():
    """With a network that is exact per tile (identity), any blend error would show as seams."""
    net = _identity_gunet().eval()
    x = torch.rand(1, 3, 100, 130)
    assert torch.allclose(run_tiled(net, x, 48, 12), run_net(net, x), atol=1e-5)


def test_corrupt_file_is_reported_and_the_rest_written(tmp_path, identity_ckpt, capsys):
    src = tmp_path / 'in'
    (src / 'sub').mkdir(parents=True)
    cv2.imwrite(str(src / 'a.png'), _photo(16, 16))
    (src / 'broken.png').write_bytes(b'\x89PNG\r\n\x1a\nnot really')
    cv2.imwrite(str(src / 'sub' / 'c.jpg'), _photo(16, 16))
    assert _run(['--input', src, '--output', tmp_path / 'out', '--weights', identity_ckpt]) == 1
    assert (tmp_path / 'out' / 'a.png').is_file() and (tmp_path / 'out' / 'sub' / 'c.jpg').is_file()
    assert not (tmp_path / 'out' / 'broken.png').exists()
    assert 'broken.png' in capsys.readouterr().err


def test_never_writes_over_an_input(tmp_path, identity_ckpt):
    img = _photo(16, 16, seed=9)
    cv2.imwrite(str(tmp_path / 'a.png'), img)
    before = (tmp_path / 'a.png').read_bytes()
    assert _run(['--input', tmp_path, '--output', tmp_path, '--weights', identity_ckpt]) == 1
    assert (tmp_path / 'a.png').read_bytes() == before


def test_output_inside_input_is_not_read_back(tmp_path, identity_ckpt):
    cv2.imwrite(str(tmp_path / 'a.png'), _photo(16, 16))
    for _ in range(2):  # the second run must not dehaze out/a.png into out/out/a.png
        assert _run(['--input', tmp_path, '--output', tmp_path / 'out', '--weights', identity_ckpt]) == 0
    assert not (tmp_path / 'out' / 'out').exists()


@pytest.mark.system
def test_killed_run_leaves_no_partial_image(tmp_path, identity_ckpt):
    """The process is killed (SIGKILL) after the image bytes are written but before the rename."""
    cv2.imwrite(str(tmp_path / 'a.png'), _photo(64, 64))
    code = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {os.path.join(ROOT, 'scripts')!r})
        def die(fd):
            os.kill(os.getpid(), signal.SIGKILL)
        os.fsync = die
        import inference
        inference.main(['--input', {str(tmp_path / 'a.png')!r}, '--output', {str(tmp_path / 'out')!r},
                        '--weights', {identity_ckpt!r}, '--device', 'cpu'])
    """)
    proc = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    leftovers = os.listdir(tmp_path / 'out')
    assert 'a.png' not in leftovers
    assert all(name.startswith('.') and '.partial' in name for name in leftovers)


def test_not_a_gunet_checkpoint_fails_before_reading_images(tmp_path, monkeypatch, capsys):
    from gunet_arch.tools import inference as tool
    bad = tmp_path / 'resnet.pth'
    torch.save({'params': {'conv1.weight': torch.zeros(8, 3, 3, 3)}}, bad)
    cv2.imwrite(str(tmp_path / 'a.png'), _photo(8, 8))

    def no_reading(path):
        raise AssertionError(f'an image was read before the checkpoint was checked: {path}')

    monkeypatch.setattr(tool, 'read_image', no_reading)
    assert _run(['--input', tmp_path, '--output', tmp_path / 'out', '--weights', bad]) == 2
    assert 'not a gUNet checkpoint' in capsys.readouterr().err
    assert not (tmp_path / 'out').exists()


def test_variant_mismatch_is_a_clear_error(tmp_path, identity_ckpt, capsys):
    cv2.imwrite(str(tmp_path / 'a.png'), _photo(8, 8))
    assert _run(['--input', tmp_path / 'a.png', '--output', tmp_path / 'out', '--weights', identity_ckpt,
                 '--variant', 's']) == 2
    err = capsys.readouterr().err
    assert 'error:' in err and 'gUNet-S' in err
    assert not (tmp_path / 'out').exists()


def test_deploy_and_no_deploy_agree(tmp_path, random_ckpt, monkeypatch):
    """The default path runs the deployed (BatchNorm-folded) network, --no-deploy the plain one,
    and with random BatchNorm statistics in the checkpoint both write the same image."""
    from gunet_arch.archs.deploy import DeployedBlock
    used = []
    real_dehaze_files = inference_cli.dehaze_files

    def recording(pairs, net, *args, **kwargs):
        used.append(net)
        return real_dehaze_files(pairs, net, *args, **kwargs)

    monkeypatch.setattr(inference_cli, 'dehaze_files', recording)
    img = _photo(40, 40, seed=4)
    cv2.imwrite(str(tmp_path / 'a.png'), img)
    assert _run(['--input', tmp_path / 'a.png', '--output', tmp_path / 'fused', '--weights', random_ckpt]) == 0
    assert _run(['--input', tmp_path / 'a.png', '--output', tmp_path / 'plain', '--weights', random_ckpt,
                 '--no-deploy']) == 0
    fused_net, plain_net = used
    assert fused_net.deployed is True and not fused_net.training
    assert any(isinstance(m, DeployedBlock) for m in fused_net.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused_net.modules())
    assert plain_net.deployed is False
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in plain_net.modules())
    # The checkpoint's BatchNorm statistics are the random ones, not the defaults.
    bn = next(m for m in plain_net.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))
    fused = cv2.imread(str(tmp_path / 'fused' / 'a.png')).astype(int)
    plain = cv2.imread(str(tmp_path / 'plain' / 'a.png')).astype(int)
    assert np.abs(fused - plain).max() <= 1


def test_command_line_entry_point(tmp_path, identity_ckpt):
    cv2.imwrite(str(tmp_path / 'a.png'), _photo(16, 16))
    proc = subprocess.run([sys.executable, SCRIPT, '--input', str(tmp_path / 'a.png'), '--output',
                           str(tmp_path / 'out'), '--weights', identity_ckpt, '--tile', '64'],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / 'out' / 'a.png').is_file()
