"""scripts/prepare_lmdb.py on images from outside: every file that cannot be used is named in one
error and nothing is written; odd but legal files work, as stored, and what they lose is logged."""
import logging
import os
import sys

import cv2
import numpy as np
import pytest
from basicsr.utils import FileClient, imfrombytes
from fixtures_dehaze import make_its
from hostile_images import BOMBS, encode, legal_oddities, pixels, truncated

import gunet_arch  # noqa: F401
from gunet_arch.data.image_codec import ImageTooLargeError
from gunet_arch.data.lmdb_store import close_env
from gunet_arch.data.lmdb_writer import SourceImagesError, prepare_lmdb
from gunet_arch.data.paired_dehaze_dataset import PairedDehazeDataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'scripts'))
import prepare_lmdb as prepare_cli  # noqa: E402


def write(folder, name, data):
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(os.fsencode(folder), name if isinstance(name, bytes) else name.encode())
    with open(path, 'wb') as f:
        f.write(data)


def cli(fixture, output, *extra):
    return prepare_cli.main(['--dataset', 'its', '--hazy', fixture.hazy_dir, '--clear', fixture.clear_dir,
                             '--output', str(output), '--no-progress', '--workers', '2', *extra])


def test_every_bad_file_is_listed_and_nothing_is_written(tmp_path, capsys):
    fixture = make_its(str(tmp_path / 'src'))  # 32x40 images; hazy <id>_<k>_<beta> pairs with clear <id>
    hazy, clear, img = fixture.hazy_dir, fixture.clear_dir, pixels((32, 40))
    bad = {  # hazy file -> what the error must say about it
        '1_3_0.1.png': (b'', 'Empty image file'),
        '1_4_0.1.png': (truncated('.png', img), 'truncated'),
        '1_5_0.1.jpg': (truncated('.jpg', img), 'truncated'),
        '1_6_0.1.tif': (truncated('.tif', img), 'truncated'),
        '1_7_0.1.webp': (truncated('.webp', img), 'truncated'),
        '1_8_0.1.bmp': (truncated('.bmp', img), 'truncated'),
        '2_3_0.1.png': (b'this is a text file\n', 'not an image file'),
        '2_4_0.1.jpg': (BOMBS['jpg'](), '20000x20000 pixels (400.0 megapixels) is over the limit of 300 megapixels; '
                        'refused before decoding (--max-pixels'),
        '2_5_0.1.tif': (encode('.tif', img.astype(np.float32) / 255), 'Unsupported pixel type float32'),
        '2_6_0.1.gif': (b'GIF89a' + b'\0' * 20, 'a GIF image'),
        '3_3_0.1.png': (encode('.png', img[:30]), 'Size mismatch'),
    }
    for name, (data, _) in bad.items():
        write(hazy, name, data)
    # A clear image that is broken (its hazy partner is fine) and a pair with non-UTF-8 names.
    write(clear, '4.png', b'')
    write(hazy, '4_1_0.1.png', encode('.png', img))
    write(hazy, b'caf\xe9_1_0.1.png', encode('.png', img))
    write(clear, b'caf\xe9.png', encode('.png', img))

    assert cli(fixture, tmp_path / 'out') == 1
    err = capsys.readouterr().err
    assert err.startswith('error: 14 source images cannot be used; nothing was written to')
    lines = err.splitlines()[1:]
    for name, (_, message) in bad.items():
        line = next(line for line in lines if name in line)
        assert message.lower() in line.lower(), (name, line)
    assert any('4.png' in line and 'Empty image file' in line for line in lines)
    for name in (r'caf\xe9_1_0.1.png', r'caf\xe9.png'):
        line = next(line for line in lines if name in line)
        assert 'is not valid UTF-8' in line and 'rename the file' in line
    assert len(lines) == 14
    assert not os.path.exists(tmp_path / 'out')  # not even an empty output folder


def test_errors_of_one_kind_keep_their_type(tmp_path):
    fixture = make_its(str(tmp_path / 'src'))
    for name in ('1_3_0.1.png', '2_3_0.1.png'):
        write(fixture.hazy_dir, name, b'')
    with pytest.raises(ValueError) as caught:
        prepare_lmdb(fixture.hazy_dir, fixture.clear_dir, str(tmp_path / 'out'), dataset='its', workers=2,
                     progress=False, log=lambda *_: None)
    assert type(caught.value).__name__ == 'ImageDecodeError' and len(caught.value.problems) == 2
    write(fixture.hazy_dir, '3_3_0.1.png', encode('.png', pixels((30, 40))))
    with pytest.raises(SourceImagesError, match='3 source images'):
        prepare_lmdb(fixture.hazy_dir, fixture.clear_dir, str(tmp_path / 'out'), dataset='its', workers=2,
                     progress=False, log=lambda *_: None)


def test_bombs_are_refused_naming_file_size_and_flag(tmp_path, capsys):
    """Headers only here; tests/test_data_integrity.py measures that nothing big is allocated
    (and the default limit)."""
    fixture = make_its(str(tmp_path / 'src'))
    for k, ext in enumerate(sorted(BOMBS)):
        write(fixture.hazy_dir, f'1_{k + 3}_0.1.{ext}', BOMBS[ext]())
    # A WebP cannot be over 16383x16383 = 268 megapixels, which is under the default limit.
    assert cli(fixture, tmp_path / 'out', '--max-pixels', '1e8') == 1
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith('error: 4 source images cannot be used')
    sizes = {'jpg': '20000x20000', 'png': '30000x30000', 'tif': '20000x20000', 'webp': '16383x16383'}
    for k, ext in enumerate(sorted(BOMBS)):
        assert lines[k + 1].endswith(f'1_{k + 3}_0.1.{ext}: {sizes[ext]} pixels '
                                     f'({int(sizes[ext][:5]) ** 2 / 1e6:.1f} megapixels) is over the limit of '
                                     '100 megapixels; refused before decoding (--max-pixels raises the limit)')
    assert not os.path.exists(tmp_path / 'out')


def test_max_pixels_flag_applies_to_every_image_and_zero_lifts_it(tmp_path):
    fixture = make_its(str(tmp_path / 'src'))
    with pytest.raises(ImageTooLargeError) as caught:
        prepare_lmdb(fixture.hazy_dir, fixture.clear_dir, str(tmp_path / 'out'), dataset='its', workers=2,
                     progress=False, log=lambda *_: None, max_pixels=1000)
    assert len(caught.value.problems) == 9  # 32x40 = 1280 pixels: all 6 hazy and 3 clear images
    prepare_lmdb(fixture.hazy_dir, fixture.clear_dir, str(tmp_path / 'out'), dataset='its', workers=2,
                 progress=False, log=lambda *_: None, max_pixels=0)


def test_odd_but_legal_files_work_as_stored_and_say_what_they_drop(tmp_path, caplog):
    img = pixels()
    oddities = legal_oddities(img)
    for name, data in oddities.items():
        write(str(tmp_path / 'IN'), name, data)
        write(str(tmp_path / 'GT'), os.path.splitext(name)[0] + '.png', encode('.png', img))
    notes = []
    prepare_lmdb(str(tmp_path / 'IN'), str(tmp_path / 'GT'), str(tmp_path / 'out'), workers=2, progress=False,
                 log=notes.append, verify=True)
    dropped = [n for n in notes if 'only the first frame is used' in n or 'EXIF orientation' in n]
    assert sorted(os.path.basename(n.split(':')[0]) for n in dropped) == [
        'animated.webp', 'animated_png.png', 'exif_rotated.jpg', 'multipage.tif']
    assert 'EXIF orientation 6 (rotate 90 clockwise) is ignored' in ''.join(dropped)

    opt = {'io_backend': {'type': 'lmdb'}, 'phase': 'val', 'dataroot_lq': str(tmp_path / 'out' / 'hazy.lmdb'),
           'dataroot_gt': str(tmp_path / 'out' / 'clear.lmdb')}
    with caplog.at_level(logging.WARNING):
        from_lmdb = PairedDehazeDataset(opt)
    assert 'no record checksums' not in caplog.text
    from_disk = PairedDehazeDataset(dict(opt, io_backend={'type': 'disk'}, dataroot_lq=str(tmp_path / 'IN'),
                                         dataroot_gt=str(tmp_path / 'GT')))
    items = {os.path.basename(item['lq_path']): item for item in from_lmdb}
    assert sorted(items) == sorted(oddities)
    for disk_item in from_disk:
        name = os.path.basename(disk_item['lq_path'])
        np.testing.assert_array_equal(items[name]['lq'].numpy(), disk_item['lq'].numpy(), err_msg=name)
        assert items[name]['lq'].shape == (3, 24, 32), name  # as stored: EXIF rotation not applied
    expected = img[..., ::-1].transpose(2, 0, 1) / 255.0
    for name, tolerance in (('png_named.jpg', 1e-6), ('jpeg_named.png', 0.01), ('exif_rotated.jpg', 0.02),
                            ('cmyk.jpg', 0.01), ('palette.png', 0.1)):
        assert np.abs(items[name]['lq'].numpy() - expected).mean() <= tolerance, name
    assert set(np.unique(items['bilevel.png']['lq'].numpy())) <= {0.0, 1.0}
    assert np.allclose(items['animated.webp']['lq'].numpy(), 10 / 255)  # the first frame
    assert np.allclose(items['multipage.tif']['lq'].numpy(), 10 / 255)
    # BasicSR's own reader sees the EXIF-tagged JPEG as stored too: it was re-encoded as PNG.
    close_env(opt['dataroot_lq'])  # py-lmdb takes one handle per database and process
    client = FileClient('lmdb', db_paths=[opt['dataroot_lq']], client_keys=['lq'])
    assert imfrombytes(client.get('exif_rotated', 'lq')).shape == (24, 32, 3)
    meta = open(os.path.join(opt['dataroot_lq'], 'meta_info.txt')).read()
    assert 'exif_rotated.png (24,32,3) 1' in meta and 'cmyk.jpg (24,32,3) source' in meta


def test_cv2_would_have_turned_the_exif_jpeg(tmp_path):
    """Why the EXIF-tagged JPEG is not kept as it is: BasicSR's imfrombytes turns it."""
    from hostile_images import exif_rotated_jpeg
    data = exif_rotated_jpeg(pixels())
    assert imfrombytes(data).shape == (32, 24, 3)
    assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED).shape == (24, 32, 3)
