"""scripts/inference.py on untrusted input: memory-bounded automatic tiling, the pixel limit and
decompression bombs, broken and unusual files, non-UTF-8 names, long runs, and resuming a run
that was killed."""
import io
import os
import signal
import struct
import subprocess
import sys
import textwrap
import time
import zlib

import cv2
import numpy as np
import pytest
import torch
from conftest import ROOT, load_script, randomise_batch_norms, run_env

import gunet_arch  # noqa: F401
from gunet_arch.archs import GUNet
from gunet_arch.data.image_codec import DEFAULT_MAX_PIXELS, ImageTooLargeError
from gunet_arch.tools import image_io
from gunet_arch.tools import inference as tool

sys.path.insert(0, os.path.join(ROOT, 'scripts'))
from benchmark_inference_memory import run_inference, write_batch  # noqa: E402

MIB = 2**20


@pytest.fixture(scope='module')
def cli():
    return load_script('inference')


@pytest.fixture(scope='module')
def weights(tmp_path_factory):
    """gUNet-T as initialised, with trained-looking BatchNorm statistics."""
    torch.manual_seed(1)
    net = randomise_batch_norms(GUNet('t'), seed=1)
    path = str(tmp_path_factory.mktemp('ckpt') / 'gunet_t.pth')
    torch.save({'params': net.state_dict()}, path)
    return path


def _photo(h, w, channels=3, dtype=np.uint8, seed=0):
    rng = np.random.default_rng(seed)
    small = rng.uniform(0.1, 0.9, (max(2, h // 8), max(2, w // 8), channels)).astype(np.float32)
    img = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR).reshape(h, w, channels)
    img = image_io.from_float(np.clip(img + rng.normal(0, 0.02, img.shape), 0, 1), dtype)
    return img[..., 0] if channels == 1 else img


def _main(cli, args):
    return cli.main([str(a) for a in args])


def _run_measured(args, env=None):
    """scripts/inference.py in a child process: (exit status, peak resident bytes, stderr). The
    peak is the child's own high-water mark (VmHWM as it exits; its ru_maxrss would include the
    resident size of this test process, from which it was forked)."""
    code, peak, _, err = run_inference(args, env or run_env())
    return code, peak, err


@pytest.fixture(scope='module')
def tiny_run_peak(tmp_path_factory, weights):
    """Peak resident memory of a whole run on one 16 x 16 photo: what the program itself needs."""
    folder = tmp_path_factory.mktemp('tiny')
    cv2.imwrite(str(folder / 'a.png'), _photo(16, 16))
    code, peak, err = _run_measured(['--input', folder / 'a.png', '--output', folder / 'out', '--weights', weights])
    assert code == 0, err
    return peak


# -- sizes and the memory model -------------------------------------------------------------------
@pytest.mark.parametrize('text, expected', [('1G', 2**30), ('512M', 512 * MIB), ('2.5G', int(2.5 * 2**30)),
                                            ('1GiB', 2**30), ('64mb', 64 * MIB), ('123456', 123456), ('0', 0),
                                            ('50%', 0.5)])
def test_memory_sizes(text, expected):
    assert tool.parse_memory(text) == expected


@pytest.mark.parametrize('text', ['1X', 'lots', '-1G', '150%', ''])
def test_bad_memory_size_is_a_usage_error(cli, text, capsys):
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(['--input', 'x', '--output', 'y', '--weights', 'w', '--max-memory', text])
    assert '--max-memory' in capsys.readouterr().err


def test_pixel_limit_option(cli):
    parse = cli.build_parser().parse_args
    base = ['--input', 'x', '--output', 'y', '--weights', 'w']
    assert parse(base).max_pixels == DEFAULT_MAX_PIXELS == 300_000_000
    assert parse(base + ['--max-pixels', '12M']).max_pixels == 12_000_000
    assert parse(base + ['--max-pixels', '5000']).max_pixels == 5000
    assert '--max-memory SIZE' in cli.build_parser().format_help()


def test_plan_takes_the_largest_tile_that_fits():
    model = tool.MemoryModel(net_bytes_per_pixel=960)
    budget = tool.MemoryBudget(limit=1024 * MIB, baseline=300 * MIB, model=model)
    h, w = 3000, 4000
    tile, message = budget.plan('p.jpg', h, w, overlap=32)

    def estimate(t):
        return budget.baseline + model.estimate(h, w, 3, 1, 0, t, 32)

    assert tile % 8 == 0 and estimate(tile) <= budget.limit < estimate(tile + 8)
    assert estimate(0) > budget.limit
    assert message.startswith('p.jpg: 4000x3000, estimated ') and f'tiles of {tile} px' in message
    assert '--max-memory 1.0 GiB' in message
    # The estimate grows with the tile, and whole images need far more than tiles.
    assert estimate(256) < estimate(512) < estimate(1024) < estimate(0)
    # An image that fits is not tiled; no limit means no tiling.
    assert budget.plan('small.png', 200, 300) == (0, None)
    assert tool.MemoryBudget(0, 300 * MIB, model).plan('p.jpg', h, w) == (0, None)
    # A budget below what the smallest tile needs: the smallest tile, and a line that says so.
    tile, message = tool.MemoryBudget(100 * MIB, 300 * MIB, model).plan('p.jpg', h, w, overlap=32)
    assert tile == 128 and 'even tiles of 128 px' in message


def test_automatic_tiling_is_explicit_tiling(tmp_path, cli, weights, capsys):
    """A --max-memory too small for the photo makes the script tile it, and the result is
    identical (same code path) to asking for that tile size explicitly."""
    img = _photo(150, 230, seed=3)
    cv2.imwrite(str(tmp_path / 'p.png'), img)
    assert _main(cli, ['--input', tmp_path / 'p.png', '--output', tmp_path / 'auto', '--weights', weights,
                     '--max-memory', '1M', '--tile-overlap', '16']) == 0
    err = capsys.readouterr().err
    assert 'p.png: 230x150, estimated ' in err and 'untiled > --max-memory 1 MiB' in err
    assert 'running in tiles of 128 px' in err
    assert _main(cli, ['--input', tmp_path / 'p.png', '--output', tmp_path / 'explicit', '--weights', weights,
                     '--tile', '128', '--tile-overlap', '16']) == 0
    assert _main(cli, ['--input', tmp_path / 'p.png', '--output', tmp_path / 'whole', '--weights', weights,
                     '--max-memory', '0']) == 0
    auto = cv2.imread(str(tmp_path / 'auto' / 'p.png'), cv2.IMREAD_UNCHANGED)
    explicit = cv2.imread(str(tmp_path / 'explicit' / 'p.png'), cv2.IMREAD_UNCHANGED)
    whole = cv2.imread(str(tmp_path / 'whole' / 'p.png'), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(auto, explicit)
    assert not np.array_equal(auto, whole)  # it really was tiled
    # The tiled result stays close to the whole one (the statistics passes at work).
    assert np.abs(auto.astype(int) - whole.astype(int)).mean() < 2


def test_tiled_pieces_match_the_tensor_path():
    """dehaze_array (tiles converted piece by piece from the stored samples, output rows written
    as they finish) gives what run_tiled gives on the whole float image."""
    torch.manual_seed(0)
    net = randomise_batch_norms(GUNet('t').eval(), seed=2)
    net.deploy()
    img = _photo(100, 140, 4, np.uint16, seed=5)
    out = tool.dehaze_array(net, img, torch.device('cpu'), tile=64, overlap=16)
    rgb = img[..., 2::-1].astype(np.float32) / 65535.0
    x = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))[None]
    ref = tool.run_tiled(net, x, 64, 16)[0].numpy().transpose(1, 2, 0)
    ref = np.round(np.clip(ref, 0, 1) * 65535.0).astype(np.uint16)[..., ::-1]
    assert out.dtype == np.uint16 and np.array_equal(out[..., 3], img[..., 3])
    assert np.abs(out[..., :3].astype(int) - ref.astype(int)).max() <= 1


@pytest.mark.system
def test_memory_limit_holds_for_a_large_photo(tmp_path, weights, tiny_run_peak):
    """A photo that needs about 0.8 GB whole, under a --max-memory of the program's own peak plus
    160 MiB: the run tiles by itself and its peak resident memory stays under the limit. (The
    same at 12 megapixels and --max-memory 1G is measured by scripts/benchmark_inference_memory.py.)"""
    cv2.imwrite(str(tmp_path / 'big.jpg'), _photo(750, 1000, seed=7), [cv2.IMWRITE_JPEG_QUALITY, 95])
    limit = tiny_run_peak + 160 * MIB
    code, peak, err = _run_measured(['--input', tmp_path / 'big.jpg', '--output', tmp_path / 'out', '--weights',
                                     weights, '--max-memory', limit])
    assert code == 0, err
    assert 'big.jpg: 1000x750, estimated ' in err and ': tiles of ' in err
    assert peak <= limit, f'peak {peak / MIB:.0f} MiB > --max-memory {limit / MIB:.0f} MiB'
    assert cv2.imread(str(tmp_path / 'out' / 'big.jpg')).shape == (750, 1000, 3)


# -- the pixel limit and decompression bombs ------------------------------------------------------
def _png_bomb(width, height):
    def chunk(kind, data):
        return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))
    ihdr = struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress(b'\0' * (1 + 3 * 64) * 64, 9)  # the start of the claimed pixels
    return b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', ihdr) + chunk(b'IDAT', rows) + chunk(b'IEND', b'')


def _jpeg_bomb(width, height):
    data = bytearray(cv2.imencode('.jpg', _photo(16, 16))[1].tobytes())
    sof = data.index(b'\xff\xc0')
    data[sof + 5:sof + 9] = struct.pack('>HH', height, width)
    return bytes(data)


def _tiff_bomb(width, height):
    entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
               (273, 4, 1, 8 + 2 + 12 * 9 + 4), (277, 3, 1, 1), (278, 4, 1, height), (279, 4, 1, 16)]
    ifd = struct.pack('<H', len(entries)) + b''.join(
        struct.pack('<HHII' if kind == 4 else '<HHIHxx', *entry) for entry in entries for kind in [entry[1]])
    return b'II*\x00' + struct.pack('<I', 8) + ifd + b'\0\0\0\0' + b'\0' * 16


def _webp_bomb(width, height):
    data = bytearray(cv2.imencode('.webp', _photo(16, 16), [cv2.IMWRITE_WEBP_QUALITY, 101])[1].tobytes())
    assert data[12:16] == b'VP8L' and data[20] == 0x2f
    bits = struct.unpack('<I', data[21:25])[0] & ~((1 << 28) - 1)  # keep alpha and version bits
    data[21:25] = struct.pack('<I', bits | (width - 1) | (height - 1) << 14)
    return bytes(data)


def _gif_bomb(width, height):
    from PIL import Image
    out = io.BytesIO()
    Image.fromarray(_photo(16, 16)).save(out, format='GIF')
    data = bytearray(out.getvalue())
    data[6:10] = struct.pack('<HH', width, height)  # the logical screen
    return bytes(data)


def _bmp_bomb(width, height):
    data = bytearray(cv2.imencode('.bmp', _photo(16, 16))[1].tobytes())
    data[18:26] = struct.pack('<ii', width, height)
    return bytes(data)


BOMBS = {  # name: (bytes, claimed width x height, --max-pixels)
    'bomb.png': (_png_bomb(100_000, 100_000), '100000x100000', None),
    'bomb.jpg': (_jpeg_bomb(65_000, 65_000), '65000x65000', None),
    'bomb.tif': (_tiff_bomb(100_000, 100_000), '100000x100000', None),
    'bomb.webp': (_webp_bomb(16_383, 16_383), '16383x16383', 100_000_000),  # WebP ends at 16383 px a side
    'bomb.gif': (_gif_bomb(65_535, 65_535), '65535x65535', None),
    'bomb.bmp': (_bmp_bomb(100_000, 100_000), '100000x100000', None),
}


@pytest.mark.parametrize('name', sorted(BOMBS))
def test_bomb_is_refused_before_any_decoder_runs(tmp_path, name, monkeypatch):
    data, claimed, limit = BOMBS[name]
    assert len(data) < 4096
    path = tmp_path / name
    path.write_bytes(data)

    def no_decoding(*args, **kwargs):
        raise AssertionError('a decoder ran on a decompression bomb')

    monkeypatch.setattr(cv2, 'imdecode', no_decoding)
    monkeypatch.setattr(image_io, '_decode_with_pillow', no_decoding)
    if name.endswith('.webp'):  # Pillow's WebP reader allocates the whole canvas just to open a file
        from PIL import Image
        monkeypatch.setattr(Image, 'open', no_decoding)
    with pytest.raises(ImageTooLargeError) as err:
        image_io.read_image(str(path), max_pixels=limit or DEFAULT_MAX_PIXELS)
    message = str(err.value)
    assert name in message and claimed in message and '--max-pixels' in message and 'before decoding' in message


@pytest.mark.system
def test_bombs_among_photos_cost_no_memory(tmp_path, weights, tiny_run_peak):
    """All the bombs in one folder with a good photo: each is refused and named, the photo is
    written, and the run's peak resident memory is the program's own (no bomb was allocated)."""
    src = tmp_path / 'in'
    src.mkdir()
    for name, (data, _, _) in BOMBS.items():
        (src / name).write_bytes(data)
    cv2.imwrite(str(src / 'good.png'), _photo(16, 16))
    code, peak, err = _run_measured(['--input', src, '--output', tmp_path / 'out', '--weights', weights,
                                     '--max-pixels', '100M'])
    assert code == 1
    assert os.listdir(tmp_path / 'out') == ['good.png']
    summary = err[err.index('1 image(s) written'):]
    for name, (_, claimed, _) in BOMBS.items():
        assert f'{name}: {claimed} pixels' in summary and 'refused before decoding (--max-pixels' in summary
    assert peak < tiny_run_peak + 64 * MIB, f'{peak / MIB:.0f} MiB vs {tiny_run_peak / MIB:.0f} MiB for one tiny photo'


def test_too_many_pixels_names_file_size_and_flag(tmp_path, cli, weights, capsys):
    cv2.imwrite(str(tmp_path / 'wide.png'), _photo(100, 120))
    assert _main(cli, ['--input', tmp_path / 'wide.png', '--output', tmp_path / 'out', '--weights', weights,
                     '--max-pixels', '10000']) == 1
    err = capsys.readouterr().err
    assert 'wide.png: 120x100 pixels (0.0 megapixels) is over the limit of 0.01 megapixels' in err
    assert '--max-pixels raises the limit' in err
    assert _main(cli, ['--input', tmp_path / 'wide.png', '--output', tmp_path / 'out', '--weights', weights,
                     '--max-pixels', '12000']) == 0


# -- broken and unusual files ---------------------------------------------------------------------
def _write_inputs(folder):
    """Every kind of awkward input; returns {file name (bytes): expected (shape, dtype) of the
    output, or None for a file that must be refused}."""
    from PIL import Image
    folder = os.fsencode(folder)
    rgb = _photo(40, 56, seed=1)
    expected = {}

    def put(name, data, outcome):
        with open(os.path.join(folder, name), 'wb') as f:
            f.write(data)
        expected[name] = outcome

    def pil_bytes(im, fmt, **kwargs):
        out = io.BytesIO()
        im.save(out, format=fmt, **kwargs)
        return out.getvalue()

    png = cv2.imencode('.png', rgb)[1].tobytes()
    put(b'zero.png', b'', None)
    for ext in ('png', 'jpg', 'tif', 'webp'):
        data = cv2.imencode(f'.{ext}', rgb)[1].tobytes()
        put(f'truncated.{ext}'.encode(), data[:len(data) // 2], None)
    put(b'png_named.jpg', png, ((40, 56, 3), np.uint8))
    put(b'text.png', b'this is not an image\n' * 20, None)
    put(b'cmyk.jpg', pil_bytes(Image.fromarray(rgb[..., ::-1].copy()).convert('CMYK'), 'JPEG'), ((40, 56, 3), np.uint8))
    put(b'palette.png', pil_bytes(Image.fromarray(rgb[..., ::-1].copy()).convert('P'), 'PNG'), ((40, 56, 3), np.uint8))
    put(b'one_bit.png', pil_bytes(Image.fromarray(rgb[..., 0]).convert('1'), 'PNG'), ((40, 56), np.uint8))
    put(b'gray16.png', cv2.imencode('.png', _photo(40, 56, 1, np.uint16))[1].tobytes(), ((40, 56), np.uint16))
    la = np.dstack([rgb[..., 0], np.arange(40 * 56).reshape(40, 56).astype(np.uint8)])
    put(b'gray_alpha.png', pil_bytes(Image.fromarray(la, 'LA'), 'PNG'), ((40, 56, 2), np.uint8))
    frames = [Image.fromarray(np.roll(rgb, 7 * i, 1)[..., ::-1].copy()) for i in range(3)]
    put(b'animated.gif', pil_bytes(frames[0], 'GIF', save_all=True, append_images=frames[1:], duration=50),
        ((40, 56, 3), np.uint8))
    put(b'animated.webp', pil_bytes(frames[0], 'WEBP', save_all=True, append_images=frames[1:], duration=50),
        ((40, 56, 3), np.uint8))
    exif = Image.Exif()
    exif[image_io.EXIF_ORIENTATION_TAG] = 6
    put(b'rotated.jpg', pil_bytes(Image.fromarray(rgb[..., ::-1].copy()), 'JPEG', exif=exif), ((56, 40, 3), np.uint8))
    put(b'caf\xe9.png', png, ((40, 56, 3), np.uint8))  # Latin-1, not UTF-8
    put(b'broken_\xff.png', b'\x89PNG\r\n\x1a\n', None)
    return expected


def test_broken_and_unusual_files(tmp_path, weights):
    """One run over every kind of awkward input (in a child process printing to an ASCII-only
    terminal): each file is written or named in the summary, none is lost, exit status 1."""
    src, out = tmp_path / 'in', tmp_path / 'out'
    src.mkdir()
    expected = _write_inputs(src)
    env = dict(run_env(), PYTHONIOENCODING='ascii', LC_ALL='C')
    code, _, err = _run_measured(['--input', src, '--output', out, '--weights', weights], env=env)
    assert code == 1, err
    assert 'Traceback' not in err
    written = set(os.listdir(os.fsencode(out)))
    good = {name for name, outcome in expected.items() if outcome}
    assert written == good  # nothing lost, nothing extra (no partial files)
    for name in good:
        img = image_io.read_image(os.fsdecode(os.path.join(os.fsencode(out), name)))
        assert (img.shape, img.dtype) == expected[name], name
    summary = err[err.index(f'{len(good)} image(s) written'):]
    assert f'{len(expected) - len(good)} failed:' in summary
    for name, outcome in expected.items():
        if outcome is None:
            assert name.decode('ascii', 'backslashreplace') in summary, name
    assert 'broken_\\xff.png' in summary
    for name in ('animated.gif', 'animated.webp'):
        assert f'note: {src / name}: an animation of 3 frames; only the first frame is dehazed' in err


def test_animated_gif_gives_a_one_frame_gif(tmp_path, cli, weights):
    from PIL import Image
    frames = [Image.fromarray(np.full((24, 32, 3), 60 * i, np.uint8)) for i in range(1, 4)]
    frames[0].save(tmp_path / 'a.gif', save_all=True, append_images=frames[1:], duration=50)
    assert _main(cli, ['--input', tmp_path / 'a.gif', '--output', tmp_path / 'out', '--weights', weights]) == 0
    with Image.open(tmp_path / 'out' / 'a.gif') as im:
        assert im.format == 'GIF' and getattr(im, 'n_frames', 1) == 1 and im.size == (32, 24)


def test_non_utf8_name_round_trips(tmp_path, cli, weights):
    name = b'caf\xe9 \xff.png'
    src = os.path.join(os.fsencode(tmp_path), b'in')
    os.mkdir(src)
    cv2.imencode('.png', _photo(20, 20))[1].tofile(os.fsdecode(os.path.join(src, name)))
    assert _main(cli, ['--input', os.fsdecode(src), '--output', str(tmp_path / 'out'), '--weights', weights]) == 0
    assert os.listdir(os.fsencode(tmp_path / 'out')) == [name]
    # A single file given by a name that is not UTF-8 works too.
    assert _main(cli, ['--input', os.fsdecode(os.path.join(src, name)), '--output', str(tmp_path / 'one'),
                     '--weights', weights]) == 0
    assert os.listdir(os.fsencode(tmp_path / 'one')) == [name]


# -- long runs and resuming -----------------------------------------------------------------------
@pytest.mark.system
def test_long_run_memory_stays_that_of_its_largest_photo(tmp_path, weights):
    """120 photos of 16..64 px (gray, RGB, RGBA 16-bit, PNG and JPEG) and 3 broken files in one
    run: every good photo is written, the broken ones are listed, and the run's peak resident
    memory is within 10% of the largest photo's alone. (500 photos:
    scripts/benchmark_inference_memory.py batch.)"""
    photos = str(tmp_path / 'photos')
    largest, broken = write_batch(photos, 124, 16, 64)
    code, alone, err = _run_measured(['--input', largest, '--output', tmp_path / 'alone', '--weights', weights])
    assert code == 0, err
    code, whole, err = _run_measured(['--input', photos, '--output', tmp_path / 'out', '--weights', weights])
    assert code == 1
    assert len(os.listdir(tmp_path / 'out')) == 124 - len(broken)
    summary = err[err.index('image(s) written'):]
    assert all(name in summary for name in broken)
    assert whole <= 1.10 * alone, f'{whole / MIB:.0f} MiB for the run, {alone / MIB:.0f} MiB for its largest photo'


@pytest.mark.system
def test_killed_run_resumes_with_skip_existing(tmp_path, weights):
    """kill -9 in the middle of a run; the rerun with --skip-existing leaves what was written
    untouched (same inode, same mtime), writes the rest, and every output is what an
    uninterrupted run writes. At no moment does a partial file stand under an output name."""
    src, out = tmp_path / 'in', tmp_path / 'out'
    src.mkdir()
    count = 24
    for i in range(count):
        cv2.imwrite(str(src / f'{i:02d}.png'), _photo(48, 64, seed=i))
    # The real script, slowed down between images so that the kill lands mid-run.
    code = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {os.path.join(ROOT, 'scripts')!r})
        import inference
        from gunet_arch.tools import inference as tool
        write = tool.write_image
        def slow_write(path, img):
            time.sleep(0.15)
            write(path, img)
        tool.write_image = slow_write
        sys.exit(inference.main(sys.argv[1:]))
    """)
    args = ['--input', str(src), '--output', str(out), '--weights', weights, '--skip-existing']
    proc = subprocess.Popen([sys.executable, '-c', code, *args], env=run_env(), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    done = []
    while time.monotonic() < deadline and proc.poll() is None:
        done = [n for n in os.listdir(out) if not n.startswith('.')] if out.exists() else []
        for name in done:  # whatever stands under an output name is a whole image
            assert cv2.imread(str(out / name)) is not None
        if len(done) >= 6:
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -9
    done = sorted(n for n in os.listdir(out) if not n.startswith('.'))
    assert 6 <= len(done) < count
    before = {n: (os.stat(out / n).st_ino, os.stat(out / n).st_mtime_ns) for n in done}

    code, _, err = _run_measured(args)
    assert code == 0, err
    assert f'{count - len(done)} image(s) written' in err and f'{len(done)} already there' in err
    assert {n: (os.stat(out / n).st_ino, os.stat(out / n).st_mtime_ns) for n in done} == before
    assert sorted(os.listdir(out)) == [f'{i:02d}.png' for i in range(count)]  # no temporary files left
    code, _, err = _run_measured(['--input', src, '--output', tmp_path / 'reference', '--weights', weights])
    assert code == 0, err
    for i in range(count):
        name = f'{i:02d}.png'
        assert np.array_equal(cv2.imread(str(out / name)), cv2.imread(str(tmp_path / 'reference' / name))), name


def test_stale_temporary_files_are_removed_only_for_this_runs_outputs(tmp_path):
    (tmp_path / '.a.abcd1234.partial.png').write_bytes(b'half')
    (tmp_path / '.b.abcd1234.partial.png').write_bytes(b'someone else')
    (tmp_path / '.a.notes').write_bytes(b'keep')
    assert tool.remove_stale_partials([str(tmp_path / 'a.png')]) == 1
    assert sorted(os.listdir(tmp_path)) == ['.a.notes', '.b.abcd1234.partial.png']
