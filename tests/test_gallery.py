"""The results gallery (gunet_arch/tools/gallery.py) and the version provenance of the metrics
CSVs (gunet_arch/tools/provenance.py). The page is checked here as HTML; tests/browser/ opens it
in Chromium (make test-browser)."""
import csv
import json
import os
import re
from html.parser import HTMLParser

import cv2
import numpy as np
import pytest
from conftest import load_script
from gallery_data import photo_triples, tiny_test_run, write_photo_set

from gunet_arch.tools import provenance
from gunet_arch.tools.gallery import GalleryEntry, write_gallery, write_results_gallery
from gunet_arch.tools.metrics_csv import read_metrics_csv

VOID = {'meta', 'img', 'input', 'br', 'hr', 'link', 'source', 'wbr'}


class Page(HTMLParser):
    """Tags, attributes and nesting of a page: every non-void tag must close in order."""

    def __init__(self, path):
        super().__init__()
        self.tags, self.stack, self.errors, self.text = [], [], [], []
        self.current_row = None
        self.rows = []  # (section data-set, row attributes)
        self.section = None
        with open(path, encoding='utf-8') as f:
            self.source = f.read()
        self.feed(self.source)
        self.close()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag == 'section':
            self.section = attrs.get('data-set')
        if tag == 'tr' and 'data-v0' in attrs:
            self.rows.append((self.section, attrs))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f'</{tag}> closes {self.stack[-1:] or "nothing"}')
        else:
            self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)

    def all_text(self):
        return ' '.join(self.text)

    def links(self):
        return [a[k] for t, a in self.tags for k in ('src', 'href') if k in a]


def check_page(path):
    """A well-formed, self-contained page whose local links all resolve; returns it parsed."""
    page = Page(path)
    assert not page.errors and not page.stack, (page.errors, page.stack)
    assert not any(t == 'link' or (t == 'script' and 'src' in a) for t, a in page.tags), 'no external CSS/JS'
    assert not re.search(r'(https?:)?//[a-z]', ' '.join(page.links())), 'no network'
    folder = os.path.dirname(path)
    for link in page.links():
        if link.startswith('#'):
            continue
        from urllib.parse import unquote
        assert os.path.isfile(os.path.join(folder, unquote(link))), f'broken link {link}'
    return page


@pytest.fixture(scope='module')
def photo_set(tmp_path_factory):
    """8 photo-like triples at 400x300 (thumbnails are made smaller) with metrics."""
    return write_photo_set(str(tmp_path_factory.mktemp('photos')), 8, size=(400, 300), ext='.png')


def test_versions_name_the_decoders_and_frameworks():
    versions = provenance.library_versions()
    import basicsr
    import cv2
    import PIL
    import torch

    import gunet_arch
    assert versions['torch'] == torch.__version__ and versions['basicsr'] == basicsr.__version__
    assert versions['gunet_arch'] == gunet_arch.__version__
    assert versions['opencv'] == cv2.__version__ and versions['pillow'] == PIL.__version__
    assert 'jpeg' in versions['opencv-jpeg'] and 'jpeg' in versions['pillow-jpeg']
    line = provenance.csv_comment(versions)
    assert line.startswith('# versions: torch') or line.startswith('# versions: python')
    assert ',' not in line and provenance.parse_csv_comment(line) == versions


@pytest.mark.parametrize('build, expected', [
    ('  JPEG:   build-libjpeg-turbo (ver 3.1.2-70)\n  PNG:  /usr/lib/libpng.so (ver 1.6.58)',
     {'jpeg': 'libjpeg-turbo 3.1.2-70', 'png': 'libpng 1.6.58'}),
    ('    JPEG:  /usr/lib/x86_64-linux-gnu/libjpeg.so.62 (ver 62)\n    PNG:  build (ver 1.6.37)\n'
     '    JPEG 2000:  build (ver 2.5.0)', {'jpeg': 'libjpeg 62', 'png': 'libpng (bundled) 1.6.37'}),
    ('    JPEG:  NO\n', {}),
])
def test_opencv_codec_versions_are_read_off_its_build_information(build, expected):
    assert provenance.opencv_codecs(build) == expected


def test_gallery_page_lists_worst_first_with_thumbnails_sliders_and_footer(photo_set, tmp_path):
    option_file = tmp_path / 'test_opt.yml'
    option_file.write_text('name: tiny\nval:\n  save_img: true  # <b>not html</b>\n')
    versions = provenance.library_versions()
    page_path = write_gallery(str(tmp_path / 'out'), photo_set, title='tiny gallery', set_name='SOTS <indoor>',
                              option_file=str(option_file), versions=versions)
    page = check_page(page_path)
    psnrs = [float(attrs['data-v1']) for _, attrs in page.rows]
    assert len(psnrs) == 8 and psnrs == sorted(psnrs)  # lowest PSNR first
    text = page.all_text()
    mean = sum(e.metrics['psnr'] for e in photo_set) / 8
    assert f'{mean:.2f}' in text and 'SOTS <indoor>' in text  # escaped, and shown as text
    assert '<b>not html</b>' in text and 'test_opt.yml' in text
    assert all(f'{k}' in text and str(v) in text for k, v in versions.items())
    sliders = [a for t, a in page.tags if t == 'input' and a.get('type') == 'range']
    overlays = [a for t, a in page.tags if t == 'img' and a.get('class') == 'before']
    assert len(sliders) == len(overlays) == 8
    thumbs = sorted(os.listdir(tmp_path / 'out' / 'gallery' / 'SOTS_indoor' / 'thumbs'))
    assert len(thumbs) == 24
    for name in thumbs:
        img = cv2.imread(str(tmp_path / 'out' / 'gallery' / 'SOTS_indoor' / 'thumbs' / name))
        assert max(img.shape[:2]) == 240 and name.endswith(f'-{img.shape[1]}x{img.shape[0]}.jpg')
    # Each picture links to its full image.
    full = {os.path.basename(a['href']) for t, a in page.tags if t == 'a' and a.get('target') == '_blank'}
    assert full == {os.path.basename(getattr(e, r)) for e in photo_set for r in ('hazy', 'dehazed', 'clear')}


def test_rebuilding_reuses_thumbnails_and_drops_unused_ones(photo_set, tmp_path):
    out = tmp_path / 'out'
    write_gallery(str(out), photo_set)
    thumbs = out / 'gallery' / 'images' / 'thumbs'
    before = {name: os.stat(thumbs / name).st_mtime_ns for name in os.listdir(thumbs)}
    write_gallery(str(out), photo_set[:2])
    after = {name: os.stat(thumbs / name).st_mtime_ns for name in os.listdir(thumbs)}
    assert len(after) == 6 and all(before[name] == t for name, t in after.items())


def test_missing_and_unreadable_images_show_placeholders_and_a_note(photo_set, tmp_path):
    broken = tmp_path / 'broken.png'
    broken.write_bytes(b'\x89PNG\r\n\x1a\n not really')
    entries = [GalleryEntry('fine', photo_set[0].hazy, photo_set[0].dehazed, photo_set[0].clear, {'psnr': 30.0}),
               GalleryEntry('gone', str(tmp_path / 'no-such.png'), photo_set[1].dehazed, None, {'psnr': 20.0}),
               GalleryEntry('bad', photo_set[2].hazy, str(broken), str(tmp_path / 'nope.png'), {}),
               GalleryEntry('nan', photo_set[3].hazy, photo_set[3].dehazed, None, {'psnr': float('nan')})]
    page = check_page(write_gallery(str(tmp_path / 'out'), entries))
    assert [a['data-v0'] for _, a in page.rows] == ['gone', 'fine', 'bad', 'nan']  # no PSNR: last
    text = page.all_text()
    assert '3 image file(s) of 2 image(s) are missing or unreadable' in text
    assert 'hazy image missing' in text and 'dehazed image unreadable' in text and 'clear image missing' in text
    assert 'no-such.png' in text and 'no clear image' in text
    assert len([a for t, a in page.tags if t == 'input' and a.get('type') == 'range']) == 2


def test_a_results_folder_with_missing_images_still_gives_a_page(tmp_path):
    """A results folder of a test run without the gallery (only the CSV and a few of the
    dehazed images): the page lists every image, with placeholders and a note."""
    results = tmp_path / 'results'
    (results / 'visualization' / 'sots').mkdir(parents=True)
    with open(results / 'sots_metrics.csv', 'w', newline='') as f:
        f.write('image,psnr,ssim\r\n1400_1,30.5,0.95\r\n1400_2,25.0,0.90\r\nmean,27.75,0.925\r\n'
                + provenance.csv_comment() + '\r\n')
    hazy, dehazed, _ = next(photo_triples(1))
    cv2.imwrite(str(results / 'visualization' / 'sots' / '1400_2_test_gunet_t.png'), dehazed)
    (results / 'gallery' / 'sots' / 'hazy').mkdir(parents=True)
    cv2.imwrite(str(results / 'gallery' / 'sots' / 'hazy' / '1400_2.png'), hazy)
    page = check_page(write_results_gallery(str(results)))
    assert [a['data-v0'] for _, a in page.rows] == ['1400_2', '1400_1']
    text = page.all_text()
    assert '27.75' in text and '2 image file(s) of 1 image(s) are missing' in text
    assert len([a for t, a in page.tags if t == 'input' and a.get('type') == 'range']) == 1


def test_inference_pairs_without_clear_images(tmp_path):
    """As scripts/inference.py --gallery calls it: (input, output) pairs, no metrics."""
    out = tmp_path / 'dehazed'
    (tmp_path / 'photos' / 'sub').mkdir(parents=True)
    (out / 'sub').mkdir(parents=True)
    pairs = []
    for i, (hazy, dehazed, _) in enumerate(photo_triples(3)):
        rel = f'sub/p{i}.jpg' if i else f'p{i}.jpg'
        cv2.imwrite(str(tmp_path / 'photos' / rel), hazy)
        cv2.imwrite(str(out / rel), dehazed)
        pairs.append((str(tmp_path / 'photos' / rel), str(out / rel)))
    page = check_page(write_gallery(str(out), pairs, title='my photos'))
    assert [a['data-v0'] for _, a in page.rows] == ['p0.jpg', 'sub/p1.jpg', 'sub/p2.jpg']
    text = page.all_text()
    assert 'clear' not in text and 'missing or unreadable' not in text and '3 images' in text
    assert len([a for t, a in page.tags if t == 'input' and a.get('type') == 'range']) == 3
    hrefs = {a['href'] for t, a in page.tags if t == 'a' and a.get('target') == '_blank'}
    assert '../photos/sub/p1.jpg' in hrefs and 'sub/p1.jpg' in hrefs


def test_500_images_page_and_thumbnails_stay_under_20_mb(tmp_path):
    """500 photo-like images, none sharing a clear image (as SOTS-outdoor): 1,500 thumbnails."""
    entries = write_photo_set(str(tmp_path / 'src'), 500, size=(240, 180))
    out = tmp_path / 'out'
    page = write_gallery(str(out), entries)
    thumbs = out / 'gallery' / 'images' / 'thumbs'
    assert len(os.listdir(thumbs)) == 1500
    total = os.path.getsize(page) + sum(os.path.getsize(thumbs / n) for n in os.listdir(thumbs))
    print(f'500 images: page {os.path.getsize(page) / 1e6:.2f} MB, page + thumbnails {total / 1e6:.2f} MB')
    assert total < 20e6


def test_test_run_writes_the_gallery_and_versions_after_the_csv(tiny_val, tmp_path):
    model = tiny_test_run(tmp_path / 'results', tiny_val)
    results = tmp_path / 'results'
    with open(results / 'tinyval_metrics.csv', newline='') as f:
        lines = f.read().splitlines()
    assert lines[0] == 'image,psnr,ssim' and lines[-2].startswith('mean,') and len(lines) == 5
    assert provenance.parse_csv_comment(lines[-1]) == provenance.library_versions()
    # What the existing readers see: the table without the '#' line.
    assert set(read_metrics_csv(results / 'tinyval_metrics.csv')[0]) == {'1_1_0.60', '2_1_0.60'}
    rows = list(csv.DictReader(line for line in lines if not line.startswith('#')))
    assert [r['image'] for r in rows] == ['1_1_0.60', '2_1_0.60', 'mean']

    manifest = json.loads((results / 'gallery' / 'tinyval' / 'manifest.json').read_text())
    assert [im['name'] for im in manifest['images']] == ['1_1_0.60', '2_1_0.60']
    first = manifest['images'][0]
    assert first['dehazed'] == 'visualization/tinyval/1_1_0.60_tiny_gallery.png'
    assert first['clear'] == 'gallery/tinyval/clear/1.png'
    assert first['metrics']['psnr'] == pytest.approx(float(rows[0]['psnr']), abs=1e-5)
    hazy = cv2.imread(str(results / first['hazy']))
    assert hazy.shape == (36, 44, 3)
    page = check_page(str(results / 'index.html'))
    assert len(page.rows) == 2 and f'{model.metric_results["psnr"]:.2f}' in page.all_text()
    assert 'gUNet test: tiny_gallery' in page.all_text()


def test_test_run_without_saved_images_keeps_the_dehazed_ones_for_the_gallery(tiny_val, tmp_path):
    tiny_test_run(tmp_path / 'results', tiny_val, save_img=False)
    results = tmp_path / 'results'
    assert not (results / 'visualization').exists()
    assert sorted(os.listdir(results / 'gallery' / 'tinyval' / 'dehazed')) == ['1_1_0.60.png', '2_1_0.60.png']
    assert len(check_page(str(results / 'index.html')).rows) == 2


def test_gallery_false_writes_no_gallery(tiny_val, tmp_path):
    tiny_test_run(tmp_path / 'results', tiny_val, extra_val={'gallery': False})
    assert sorted(os.listdir(tmp_path / 'results')) == ['tinyval_metrics.csv', 'visualization']


def test_make_gallery_script_rebuilds_the_page(tiny_val, tmp_path):
    results = tmp_path / 'results'
    tiny_test_run(results, tiny_val)
    os.remove(results / 'index.html')
    os.remove(results / 'gallery' / 'tinyval' / 'clear' / '1.png')
    assert load_script('make_gallery').main([str(results)]) == 0
    page = check_page(str(results / 'index.html'))
    assert '1 image file(s) of 1 image(s) are missing' in page.all_text()
    assert load_script('make_gallery').main([str(tmp_path / 'nothing')]) == 2


def test_thumbnails_of_16_bit_gray_and_alpha_images(tmp_path):
    from gunet_arch.tools.gallery import read_for_thumbnail, thumbnail

    ramp = (np.arange(300 * 500, dtype=np.uint32).reshape(300, 500) % 65536).astype(np.uint16)
    for name, img in (('gray16.png', ramp), ('bgra.png', np.dstack([ramp >> 8] * 4).astype(np.uint8))):
        cv2.imwrite(str(tmp_path / name), img)
        small = thumbnail(read_for_thumbnail(str(tmp_path / name)))
        assert small.dtype == np.uint8 and small.shape == (144, 240, 3)
