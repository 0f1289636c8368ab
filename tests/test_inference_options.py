"""scripts/inference.py's output and run options: --suffix, --ext with --quality (and what a
format cannot hold), --device, --batch (same outputs as one at a time, grouped by size, within
--max-memory), --strength and --gallery. A small gUNet (8 channels, one block per stage) with
random BatchNorm statistics, so that a batch that mixed its images' statistics would show."""
import os
import sys

import cv2
import numpy as np
import pytest
import torch
from conftest import ROOT, load_script, randomise_batch_norms, run_env
from test_gallery import check_page

import gunet_arch  # noqa: F401
from gunet_arch.archs import GUNet
from gunet_arch.tools import image_io
from gunet_arch.tools import inference as tool

MIB = 2**20
SMALL = {'base_dim': 8, 'depths': [1] * 7}


@pytest.fixture(scope='module')
def cli():
    return load_script('inference')


@pytest.fixture(scope='module')
def weights(tmp_path_factory):
    torch.manual_seed(4)
    net = randomise_batch_norms(GUNet(**SMALL), seed=4)
    path = str(tmp_path_factory.mktemp('ckpt') / 'small.pth')
    torch.save({'params': net.state_dict()}, path)
    return path


def _photo(h, w, channels=3, dtype=np.uint8, seed=0):
    rng = np.random.default_rng(seed)
    small = rng.uniform(0.1, 0.9, (max(2, h // 8), max(2, w // 8), channels)).astype(np.float32)
    img = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR).reshape(h, w, channels)
    img = image_io.from_float(np.clip(img + rng.normal(0, 0.02, img.shape), 0, 1), dtype)
    return img[..., 0] if channels == 1 else img


def _run(cli, *args):
    return cli.main([str(a) for a in args])


def _read(path):
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


def _jpeg(img, quality=95):
    """``img`` as a JPEG of that quality decodes."""
    return cv2.imdecode(cv2.imencode('.jpg', img, [cv2.IMWRITE_JPEG_QUALITY, quality])[1], cv2.IMREAD_UNCHANGED)


def _files(folder):
    return sorted(os.path.relpath(os.path.join(r, f), folder) for r, _, fs in os.walk(folder) for f in fs)


# -- --suffix -------------------------------------------------------------------------------------
def test_suffix_names_outputs_and_skip_existing_uses_the_suffixed_name(tmp_path, cli, weights, capsys):
    src = tmp_path / 'in'
    (src / 'sub').mkdir(parents=True)
    cv2.imwrite(str(src / 'a.png'), _photo(24, 32))
    cv2.imwrite(str(src / 'sub' / 'b.jpg'), _photo(24, 32, seed=1))
    args = ['--input', src, '--output', tmp_path / 'out', '--weights', weights, '--suffix', '_dehazed']
    assert _run(cli, *args) == 0
    assert _files(tmp_path / 'out') == ['a_dehazed.png', os.path.join('sub', 'b_dehazed.jpg')]
    capsys.readouterr()
    assert _run(cli, *args, '--skip-existing') == 0
    err = capsys.readouterr().err
    assert '0 image(s) written' in err and '2 already there' in err
    os.remove(tmp_path / 'out' / 'a_dehazed.png')
    assert _run(cli, *args, '--skip-existing') == 0
    err = capsys.readouterr().err
    assert '1 image(s) written' in err and '1 already there' in err


def test_suffix_lets_the_outputs_stand_beside_the_inputs(tmp_path, cli, weights, capsys):
    """--output the input folder: the outputs of the first run are not inputs of the second."""
    cv2.imwrite(str(tmp_path / 'a.png'), _photo(24, 32))
    args = ['--input', tmp_path, '--output', tmp_path, '--weights', weights, '--suffix', '_dehazed']
    assert _run(cli, *args) == 0
    first = _read(tmp_path / 'a_dehazed.png')
    capsys.readouterr()
    assert _run(cli, *args) == 0
    assert '1 image(s) written' in capsys.readouterr().err
    assert _files(tmp_path) == ['a.png', 'a_dehazed.png']
    assert np.array_equal(_read(tmp_path / 'a_dehazed.png'), first)
    # Without a suffix every output would be its input: refused, and nothing is touched.
    before = _read(tmp_path / 'a.png')
    assert _run(cli, '--input', tmp_path / 'a.png', '--output', tmp_path, '--weights', weights) == 1
    assert 'would overwrite an input file' in capsys.readouterr().err
    assert np.array_equal(_read(tmp_path / 'a.png'), before)


def test_a_suffix_with_a_folder_separator_is_refused(cli, capsys):
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(['--input', 'x', '--output', 'y', '--weights', 'w', '--suffix', 'a/b'])
    assert '--suffix' in capsys.readouterr().err


# -- --ext and --quality --------------------------------------------------------------------------
@pytest.mark.parametrize('ext, suffix', [('png', '.png'), ('tiff', '.tiff'), ('webp', '.webp'), ('jpg', '.jpg')])
def test_ext_writes_that_format(tmp_path, cli, weights, ext, suffix):
    cv2.imwrite(str(tmp_path / 'p.bmp'), _photo(24, 32))
    assert _run(cli, '--input', tmp_path / 'p.bmp', '--output', tmp_path / 'out', '--weights', weights,
                '--ext', ext) == 0
    assert _files(tmp_path / 'out') == [f'p{suffix}']
    with open(tmp_path / 'out' / f'p{suffix}', 'rb') as f:
        assert image_io.read_header(f.read()).format == {'jpg': 'JPEG', 'tiff': 'TIFF'}.get(ext, ext.upper())
    # The lossless formats hold exactly what --ext auto (BMP) holds; JPEG is that at quality 95.
    assert _run(cli, '--input', tmp_path / 'p.bmp', '--output', tmp_path / 'auto', '--weights', weights) == 0
    auto = _read(tmp_path / 'auto' / 'p.bmp')
    if ext == 'jpg':
        auto = _jpeg(auto)
    assert np.array_equal(_read(tmp_path / 'out' / f'p{suffix}'), auto)


def test_sixteen_bit_stays_sixteen_bit_in_png_and_tiff(tmp_path, cli, weights):
    img = _photo(24, 32, 3, np.uint16)
    cv2.imwrite(str(tmp_path / 'deep.png'), img)
    for ext in ('tiff', 'png'):
        assert _run(cli, '--input', tmp_path / 'deep.png', '--output', tmp_path / ext, '--weights', weights,
                    '--ext', ext, '--strength', '0') == 0
        out = _read(tmp_path / ext / f'deep.{ext}')
        assert out.dtype == np.uint16 and np.array_equal(out, img)


def test_quality_sets_jpeg_and_webp_quality(tmp_path, cli, weights):
    cv2.imwrite(str(tmp_path / 'p.png'), _photo(48, 48))
    sizes = {}
    for ext in ('jpg', 'webp'):
        for quality in (None, 20, 95):
            out = tmp_path / f'{ext}{quality}'
            extra = ['--quality', quality] if quality else []
            assert _run(cli, '--input', tmp_path / 'p.png', '--output', out, '--weights', weights, '--ext', ext,
                        *extra) == 0
            sizes[ext, quality] = os.path.getsize(out / f'p.{ext}')
    assert sizes['jpg', 20] < sizes['jpg', 95] and sizes['webp', 20] < sizes['webp', 95]
    # The defaults: JPEG at 95, WebP lossless.
    with open(tmp_path / 'jpgNone' / 'p.jpg', 'rb') as f, open(tmp_path / 'jpg95' / 'p.jpg', 'rb') as g:
        assert f.read() == g.read()
    for quality, bitstream in ((None, b'VP8L'), (95, b'VP8 ')):  # lossless, lossy
        with open(tmp_path / f'webp{quality}' / 'p.webp', 'rb') as f:
            assert f.read()[12:16] == bitstream


@pytest.mark.parametrize('args, flag', [(['--quality', '0'], '--quality'), (['--quality', '101'], '--quality'),
                                        (['--quality', 'high'], '--quality'),
                                        (['--ext', 'png', '--quality', '80'], '--quality'),
                                        (['--ext', 'gif'], '--ext'), (['--batch', '0'], '--batch'),
                                        (['--batch', '2.5'], '--batch'), (['--strength', '1.5'], '--strength'),
                                        (['--strength', '-0.1'], '--strength'), (['--strength', 'nan'], '--strength'),
                                        (['--strength', 'most'], '--strength'), (['--device', 'gpu'], '--device'),
                                        (['--device', 'cuda:x'], '--device'), (['--device', 'meta'], '--device')])
def test_bad_values_are_usage_errors_naming_the_flag(cli, args, flag, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(['--input', 'x', '--output', 'y', '--weights', 'w', *args])
    assert exit_.value.code == 2
    assert flag in capsys.readouterr().err


def test_alpha_into_jpeg_is_dropped_with_a_note(tmp_path, cli, weights, capsys):
    rgba = _photo(24, 32, 4)
    rgba[..., 3] = np.arange(24 * 32).reshape(24, 32) % 256
    la = np.dstack([_photo(24, 32, 1, seed=2), rgba[..., 3]])
    cv2.imwrite(str(tmp_path / 'rgba.png'), rgba)
    from PIL import Image
    Image.fromarray(la, 'LA').save(tmp_path / 'la.png')
    assert _run(cli, '--input', tmp_path, '--output', tmp_path / 'out', '--weights', weights, '--ext', 'jpg',
                '--strength', '0') == 0
    err = capsys.readouterr().err
    for name in ('rgba.png', 'la.png'):
        assert f'{tmp_path / name}: JPEG has no alpha channel: written without it' in err
    assert np.array_equal(_read(tmp_path / 'out' / 'rgba.jpg'), _jpeg(rgba[..., :3]))
    assert _read(tmp_path / 'out' / 'la.jpg').shape == (24, 32)  # gray stays gray
    # WebP holds alpha: nothing dropped, no note.
    assert _run(cli, '--input', tmp_path / 'rgba.png', '--output', tmp_path / 'webp', '--weights', weights,
                '--ext', 'webp') == 0
    assert 'note' not in capsys.readouterr().err
    assert np.array_equal(_read(tmp_path / 'webp' / 'rgba.webp')[..., 3], rgba[..., 3])


@pytest.mark.parametrize('ext', ['jpg', 'webp'])
def test_sixteen_bit_into_an_eight_bit_format_is_rounded_with_a_note(tmp_path, cli, weights, ext, capsys):
    img = _photo(24, 32, 3, np.uint16)
    cv2.imwrite(str(tmp_path / 'deep.tif'), img)
    assert _run(cli, '--input', tmp_path / 'deep.tif', '--output', tmp_path / 'out', '--weights', weights,
                '--ext', ext, '--strength', '0') == 0
    fmt = {'jpg': 'JPEG', 'webp': 'WebP'}[ext]
    assert f'deep.tif: {fmt} holds 8 bits per sample: 16-bit samples written as 8-bit' in capsys.readouterr().err
    expected = np.round(img / 257.0).astype(np.uint8)
    assert np.array_equal(_read(tmp_path / 'out' / f'deep.{ext}'), _jpeg(expected) if ext == 'jpg' else expected)


def test_fit_format_changes_only_what_the_format_cannot_hold():
    rgba16 = _photo(8, 8, 4, np.uint16)
    for ext in ('.png', '.tif', '.tiff'):
        img, notes = image_io.fit_format(rgba16, ext)
        assert img is rgba16 and notes == []
    img, notes = image_io.fit_format(rgba16, '.webp')
    assert img.shape == (8, 8, 4) and img.dtype == np.uint8 and len(notes) == 1
    img, notes = image_io.fit_format(rgba16, '.jpg')
    assert img.shape == (8, 8, 3) and img.dtype == np.uint8 and len(notes) == 2
    img, notes = image_io.fit_format(np.zeros((8, 8), np.float32), '.jpeg')
    assert img.dtype == np.uint8 and notes == ['JPEG holds 8 bits per sample: 32-bit float samples written as 8-bit']


def test_two_inputs_that_ext_gives_one_name_are_not_both_written(tmp_path, cli, weights, capsys):
    cv2.imwrite(str(tmp_path / 'a.png'), _photo(24, 32))
    cv2.imwrite(str(tmp_path / 'a.jpg'), _photo(24, 32, seed=1))
    assert _run(cli, '--input', tmp_path, '--output', tmp_path / 'out', '--weights', weights, '--ext', 'png') == 1
    err = capsys.readouterr().err
    assert _files(tmp_path / 'out') == ['a.png']
    assert f'{tmp_path / "a.png"}: its output {tmp_path / "out" / "a.png"} is also that of {tmp_path / "a.jpg"}' in err
    assert '--ext' in err and '1 failed' in err


# -- --device -------------------------------------------------------------------------------------
def test_device_strings(monkeypatch):
    assert tool.parse_device('cpu') == torch.device('cpu')
    assert tool.parse_device('cuda:1') == torch.device('cuda', 1)
    assert tool.pick_device('cpu').type == 'cpu'
    for bad in ('gpu', 'cuda:-1', 'CUDA', '', 'meta'):
        with pytest.raises(ValueError, match='--device'):
            tool.parse_device(bad)
    # A machine with two GPUs (nothing is allocated on them here).
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 2)
    assert tool.pick_device('cuda:1') == torch.device('cuda', 1)
    assert tool.pick_device('cuda') == torch.device('cuda')
    with pytest.raises(ValueError, match=r'--device cuda:2: there is no such device; this machine has 2 CUDA '
                                         r'device\(s\): cuda:0, cuda:1'):
        tool.pick_device('cuda:2')
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    with pytest.raises(ValueError, match='--device cuda:0: CUDA is not available on this machine'):
        tool.pick_device('cuda:0')


def test_a_device_that_is_not_there_fails_before_any_image(tmp_path, cli, weights, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 1)
    cv2.imwrite(str(tmp_path / 'a.png'), _photo(24, 32))
    assert _run(cli, '--input', tmp_path / 'a.png', '--output', tmp_path / 'out', '--weights', weights,
                '--device', 'cuda:1') == 2
    assert 'error: --device cuda:1: there is no such device' in capsys.readouterr().err
    assert not (tmp_path / 'out').exists()


@pytest.mark.cuda
def test_the_nth_gpu_is_used_and_one_past_the_last_is_refused(tmp_path, cli, weights, capsys):
    count = torch.cuda.device_count()
    cv2.imwrite(str(tmp_path / 'a.png'), _photo(40, 48))
    last = f'cuda:{count - 1}'
    assert _run(cli, '--input', tmp_path / 'a.png', '--output', tmp_path / 'gpu', '--weights', weights,
                '--device', last) == 0
    assert _run(cli, '--input', tmp_path / 'a.png', '--output', tmp_path / 'cpu', '--weights', weights,
                '--device', 'cpu') == 0
    assert np.abs(_read(tmp_path / 'gpu' / 'a.png').astype(int) - _read(tmp_path / 'cpu' / 'a.png')).max() <= 1
    assert _run(cli, '--input', tmp_path / 'a.png', '--output', tmp_path / 'none', '--weights', weights,
                '--device', f'cuda:{count}') == 2
    assert f'--device cuda:{count}: there is no such device' in capsys.readouterr().err


# -- --batch --------------------------------------------------------------------------------------
@pytest.fixture
def batch_sizes(monkeypatch):
    """The number of images in each batched forward of a run (single images are not counted)."""
    sizes = []
    real = tool.dehaze_batch

    def recording(net, imgs, *args, **kwargs):
        sizes.append(len(imgs))
        return real(net, imgs, *args, **kwargs)

    monkeypatch.setattr(tool, 'dehaze_batch', recording)
    return sizes


@pytest.mark.parametrize('deploy', ['--deploy', '--no-deploy'])  # BatchNorm folded, and BatchNorm itself
def test_batches_give_what_one_at_a_time_gives(tmp_path, cli, weights, batch_sizes, deploy):
    """Float TIFFs (the network's output itself, no rounding) and 8-bit PNGs, gray and colour
    mixed in a batch, 10 images in batches of 2: within 1e-6 of one at a time."""
    src = tmp_path / 'in'
    src.mkdir()
    for i in range(5):
        img = _photo(24, 40, 3, seed=i).astype(np.float32) / 255
        cv2.imwrite(str(src / f'f{i}.tif'), img if i != 2 else img[..., 0])
        cv2.imwrite(str(src / f'u{i}.png'), _photo(24, 40, 1 if i == 3 else 3, seed=10 + i))
    base = ['--input', src, '--weights', weights, deploy]
    assert _run(cli, *base, '--output', tmp_path / 'one') == 0
    assert batch_sizes == []
    assert _run(cli, *base, '--output', tmp_path / 'two', '--batch', '2') == 0
    assert batch_sizes == [2] * 5  # 10 images of one size
    for name in _files(src):
        one, two = _read(tmp_path / 'one' / name), _read(tmp_path / 'two' / name)
        assert one.dtype == two.dtype and one.shape == two.shape
        if one.dtype == np.float32:
            assert np.abs(one - two).max() <= 1e-6, name
            assert np.abs(one - (_read(src / name))).max() > 0.01  # the network did something
        else:
            assert np.array_equal(one, two), name


def test_batches_gather_images_of_one_size(tmp_path, cli, weights, batch_sizes, capsys):
    """Sizes interleaved by name, a broken file, an output already there and an EXIF-rotated
    JPEG whose header is read turned: each size forms its own batches, the rest as without --batch."""
    src = tmp_path / 'in'
    src.mkdir()
    sizes = [(24, 32), (32, 24), (24, 32), (16, 16), (32, 24), (24, 32), (24, 32)]
    for i, (h, w) in enumerate(sizes):
        cv2.imwrite(str(src / f'{i}.png'), _photo(h, w, seed=i))
    (src / '2b.png').write_bytes(b'not an image')
    from PIL import Image
    rotated = Image.fromarray(_photo(24, 32, seed=9)[..., ::-1])  # stored 32 wide, shown 24 wide
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated.save(src / 'r.jpg', exif=exif.tobytes())
    out = tmp_path / 'out'
    out.mkdir()
    cv2.imwrite(str(out / '5.png'), np.zeros((2, 2, 3), np.uint8))
    code = _run(cli, '--input', src, '--output', out, '--weights', weights, '--batch', '3', '--skip-existing')
    assert code == 1
    err = capsys.readouterr().err
    assert '7 image(s) written' in err and '1 already there' in err and '2b.png' in err.split('1 failed:')[1]
    # 24x32: 0, 2, 6 (5 is there); 32x24: 1, 4 and r.jpg; 16x16: 3 alone.
    assert sorted(batch_sizes) == [3, 3]
    assert _run(cli, '--input', src, '--output', tmp_path / 'ref', '--weights', weights) == 1
    for name in ['0.png', '1.png', '2.png', '3.png', '4.png', '6.png', 'r.jpg']:
        assert np.array_equal(_read(out / name), _read(tmp_path / 'ref' / name)), name
    assert _read(out / 'r.jpg').shape == (32, 24, 3)


def test_plan_batch_fits_the_batch_into_max_memory():
    model = tool.MemoryModel(net_bytes_per_pixel=960)
    one = model.estimate(480, 640, 3, 1, 100_000)
    assert model.estimate(480, 640, 3, 1, 100_000, batch=4) - tool.FIXED_BYTES == 4 * (one - tool.FIXED_BYTES)
    baseline = 300 * MIB
    budget = tool.MemoryBudget(limit=baseline + model.estimate(480, 640, batch=3) + 1, baseline=baseline,
                               model=model)
    n, message = budget.plan_batch('p.jpg', 480, 640, 8)
    assert n == 3 and message.startswith('p.jpg: 640x480, a batch of 8 estimated at ')
    three = tool.format_size(baseline + model.estimate(480, 640, batch=3))
    assert message.endswith(f'batches of 3 (estimated {three})')
    assert budget.plan_batch('p.jpg', 480, 640, 3) == (3, None)
    assert budget.plan_batch('p.jpg', 4800, 6400, 8) == (0, None)  # one alone does not fit: tiles
    assert tool.MemoryBudget(0, baseline, model).plan_batch('p.jpg', 4800, 6400, 8) == (8, None)


def test_max_memory_shrinks_batches_and_tiles_what_does_not_fit(tmp_path, cli, weights, batch_sizes, monkeypatch,
                                                                capsys):
    """The process's own memory pinned at 400 MiB: a --max-memory that holds 2 of these images
    at once gives batches of 2 (said once); one that holds none tiles them one at a time."""
    monkeypatch.setattr(tool, 'resident_bytes', lambda: 400 * MIB)
    src = tmp_path / 'in'
    src.mkdir()
    for i in range(5):
        cv2.imwrite(str(src / f'{i}.png'), _photo(160, 200, seed=i))
    size = max(os.path.getsize(src / f'{i}.png') for i in range(5))
    model = tool.MemoryModel.for_network(GUNet(**SMALL), 'cpu')
    limit = 400 * MIB + model.estimate(160, 200, 3, 1, size, batch=2) + 1
    assert 400 * MIB + model.estimate(160, 200, 3, 1, 0, batch=3) > limit
    assert _run(cli, '--input', src, '--output', tmp_path / 'out', '--weights', weights, '--batch', '4',
                '--max-memory', limit) == 0
    assert batch_sizes == [2, 2]  # and the fifth alone
    err = capsys.readouterr().err
    assert err.count('a batch of 4 estimated at') == 1 and 'batches of 2' in err
    assert _run(cli, '--input', src / '0.png', '--output', tmp_path / 'tiled', '--weights', weights, '--batch', '4',
                '--max-memory', 400 * MIB + 20 * MIB, '--tile-overlap', 8) == 0
    assert batch_sizes == [2, 2]
    assert 'running in tiles of 128 px' in capsys.readouterr().err


def test_a_batch_that_fails_is_retried_one_image_at_a_time(tmp_path, cli, weights, monkeypatch, capsys):
    for i in range(3):
        cv2.imwrite(str(tmp_path / f'{i}.png'), _photo(24, 32, seed=i))

    def out_of_memory(*args, **kwargs):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory")

    monkeypatch.setattr(tool, 'dehaze_batch', out_of_memory)
    assert _run(cli, '--input', tmp_path, '--output', tmp_path / 'out', '--weights', weights, '--batch', '3') == 0
    err = capsys.readouterr().err
    assert 'a batch of 3 failed' in err and 'one at a time' in err and '3 image(s) written' in err


@pytest.mark.system
def test_batched_run_stays_under_max_memory(tmp_path, weights):
    """A measured run (fresh process, peak resident memory): 8 images of 512x384 under a
    --max-memory that the model says holds some of them at once."""
    sys.path.insert(0, os.path.join(ROOT, 'scripts'))
    from benchmark_inference_memory import run_inference

    cv2.imwrite(str(tmp_path / 'tiny.png'), _photo(16, 16))
    code, own, _, err = run_inference(['--input', tmp_path / 'tiny.png', '--output', tmp_path / 'o',
                                       '--weights', weights], run_env())
    assert code == 0, err
    src = tmp_path / 'in'
    src.mkdir()
    for i in range(8):
        cv2.imwrite(str(src / f'{i}.png'), _photo(384, 512, seed=i))
    # What the program holds before its first image is at most the tiny run's peak: 2 fit.
    size = max(os.path.getsize(src / name) for name in os.listdir(src))
    limit = own + tool.MemoryModel.for_network(GUNet(**SMALL), 'cpu').estimate(384, 512, 3, 1, size, batch=2)
    code, peak, _, err = run_inference(['--input', src, '--output', tmp_path / 'out', '--weights', weights,
                                        '--batch', '8', '--max-memory', limit], run_env())
    assert code == 0, err
    assert 'a batch of 8 estimated at' in err and 'batches of ' in err
    assert peak <= limit, f'peak {peak / MIB:.0f} MiB > --max-memory {limit / MIB:.0f} MiB'
    assert len(os.listdir(tmp_path / 'out')) == 8


# -- --strength -----------------------------------------------------------------------------------
@pytest.mark.parametrize('tile', [0, 32])
def test_strength_blends_the_result_with_the_input(tmp_path, cli, weights, tile):
    img = _photo(32, 48, 3, np.uint16)
    gray = _photo(32, 48, 1, seed=3)
    cv2.imwrite(str(tmp_path / 'c.png'), img)
    cv2.imwrite(str(tmp_path / 'g.png'), gray)
    outs = {}
    for strength in ('0', '0.25', '1'):
        out = tmp_path / f'out{strength}'
        assert _run(cli, '--input', tmp_path, '--output', out, '--weights', weights, '--strength', strength,
                    '--tile', tile, '--tile-overlap', 8) == 0
        outs[strength] = {n: _read(out / n).astype(float) for n in ('c.png', 'g.png')}
    for name, inp in (('c.png', img), ('g.png', gray)):
        assert np.array_equal(outs['0'][name], inp)  # 0: the input itself
        assert np.abs(outs['1'][name] - inp).mean() > 2 * (257 if inp.dtype == np.uint16 else 1)
        blend = 0.25 * outs['1'][name] + 0.75 * inp
        assert np.abs(outs['0.25'][name] - blend).max() <= 1


# -- --gallery ------------------------------------------------------------------------------------
def test_gallery_shows_each_input_beside_its_output(tmp_path, cli, weights, capsys):
    src = tmp_path / 'photos'
    (src / 'sub').mkdir(parents=True)
    cv2.imwrite(str(src / 'a.jpg'), _photo(24, 32))
    cv2.imwrite(str(src / 'sub' / 'b.png'), _photo(32, 24, 4, np.uint16, seed=1))
    (src / 'broken.png').write_bytes(b'nope')
    out = tmp_path / 'out'
    args = ['--input', src, '--output', out, '--weights', weights, '--gallery', '--suffix', '_d', '--strength', '0.8']
    assert _run(cli, *args) == 1  # the broken file
    assert f'gallery: {out / "index.html"}' in capsys.readouterr().err
    page = check_page(str(out / 'index.html'))
    assert [a['data-v0'] for _, a in page.rows] == ['a_d.jpg', 'sub/b_d.png']
    text = page.all_text()
    assert 'clear' not in text and 'PSNR' not in text and 'missing or unreadable' not in text
    assert '2 images' in text and 'strength 0.8' in text and 'small.pth' in text
    assert len([a for t, a in page.tags if t == 'input' and a.get('type') == 'range']) == 2
    hrefs = {a['href'] for t, a in page.tags if t == 'a' and a.get('target') == '_blank'}
    assert hrefs == {'../photos/a.jpg', 'a_d.jpg', '../photos/sub/b.png', 'sub/b_d.png'}
    # A rerun with --skip-existing keeps the outputs in the page; thumbnails are not inputs.
    capsys.readouterr()
    assert _run(cli, *args, '--skip-existing') == 1
    assert [a['data-v0'] for _, a in check_page(str(out / 'index.html')).rows] == ['a_d.jpg', 'sub/b_d.png']
    assert _run(cli, '--input', out, '--output', out, '--weights', weights, '--gallery', '--suffix', '_d') == 0
    assert '2 image(s) written' in capsys.readouterr().err  # a_d_d.jpg, sub/b_d_d.png, not the thumbnails
