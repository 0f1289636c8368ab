"""The results gallery in a real browser (headless Chromium from file://): it loads without
console errors or network requests, a click on a column header reorders the rows, and the
before/after slider moves the hazy overlay. Screenshots go to results/browser_tests/."""
import time

import pytest
from gallery_data import tiny_test_run, write_photo_set

from gunet_arch.tools.gallery import GalleryEntry, write_gallery

pytestmark = pytest.mark.browser

ROW_NAMES = 'el => Array.from(el.querySelectorAll("tbody tr")).map(r => r.dataset.v0)'


def column(page, table, key):
    return page.eval_on_selector(table, f'el => Array.from(el.querySelectorAll("tbody tr")).map('
                                        f'r => r.dataset.v{key} === "" ? null : parseFloat(r.dataset.v{key}))')


@pytest.fixture(scope='module')
def photo_gallery(tmp_path_factory):
    """Two sets of photo-like images with made-up PSNR/SSIM, as a test of two sets writes them."""
    root = tmp_path_factory.mktemp('gallery')
    sets = {'SOTS-indoor': write_photo_set(str(root / 'a'), 12, size=(400, 300), seed=1),
            'SOTS-outdoor': write_photo_set(str(root / 'b'), 5, size=(300, 400), seed=2)}
    option_file = root / 'test_gunet_t.yml'
    option_file.write_text('name: test_gunet_t\nmodel_type: GUNetModel\nnetwork_g: {type: GUNet, variant: t}\n')
    return write_gallery(str(root / 'results'), sets, title='gUNet test: browser', option_file=str(option_file))


def test_gallery_loads_sorts_and_slides(open_page, photo_gallery, tmp_path):
    opened = open_page(photo_gallery)
    page = opened.page
    assert page.title() == 'gUNet test: browser'
    assert opened.load_all_images() == []
    table = '#set-0 table'
    psnr = column(page, table, 1)
    assert len(psnr) == 12 and psnr == sorted(psnr)  # worst first
    assert page.get_attribute(f'{table} th[data-key="1"]', 'aria-sort') == 'ascending'

    # A click on the PSNR header reverses the order (best first), a second restores it.
    page.click(f'{table} th[data-key="1"] button')
    assert column(page, table, 1) == sorted(psnr, reverse=True)
    assert page.get_attribute(f'{table} th[data-key="1"]', 'aria-sort') == 'descending'
    page.click(f'{table} th[data-key="1"] button')
    assert column(page, table, 1) == psnr
    # SSIM, then the image names (numerically: 2_2 before 10_10).
    page.click(f'{table} th[data-key="2"] button')
    assert column(page, table, 2) == sorted(column(page, table, 2))
    assert page.get_attribute(f'{table} th[data-key="1"]', 'aria-sort') == 'none'
    page.click(f'{table} th[data-key="0"] button')
    names = page.eval_on_selector(table, ROW_NAMES)
    assert names == sorted(names, key=lambda n: [int(p) for p in n.split('_')])
    # The other set's table is left as it was.
    other = column(page, '#set-1 table', 1)
    assert other == sorted(other)

    # The slider: a click at 80% of the first row's range shows 80% of the hazy image.
    page.click(f'{table} th[data-key="1"] button')
    row = f'{table} tbody tr:first-child'
    slider, overlay, divider = f'{row} input.cmp-range', f'{row} img.before', f'{row} .divider'

    def state():
        return (page.input_value(slider), page.eval_on_selector(overlay, 'el => getComputedStyle(el).clipPath'),
                page.eval_on_selector(divider, 'el => el.getBoundingClientRect().left'),
                page.eval_on_selector(overlay, 'el => el.getBoundingClientRect().width'))

    value, clip, left, width = state()
    assert value == '50' and clip == 'inset(0px 50% 0px 0px)'
    box = page.locator(slider).bounding_box()
    page.mouse.click(box['x'] + box['width'] * 0.8, box['y'] + box['height'] / 2)
    value2, clip2, left2, width2 = state()
    assert 75 <= int(value2) <= 85 and clip2 == f'inset(0px {100 - int(value2)}% 0px 0px)'
    assert left2 - left == pytest.approx(width * (int(value2) - 50) / 100, abs=2)
    page.focus(slider)
    for _ in range(5):
        page.keyboard.press('ArrowLeft')
    assert int(page.input_value(slider)) == int(value2) - 5
    # Leave a few sliders part-way for the screenshot.
    for i, value in ((2, '25'), (3, '70')):
        page.locator(f'{table} tbody tr:nth-child({i}) input.cmp-range').fill(value)
    page.evaluate('window.scrollTo(0, 0)')
    opened.screenshot(tmp_path, 'gallery.png')
    page.locator('footer').scroll_into_view_if_needed()
    assert 'test_gunet_t.yml' in page.inner_text('footer') and 'torch' in page.inner_text('footer')
    opened.screenshot(tmp_path, 'gallery_footer.png')
    assert opened.problems == []


def test_gallery_of_a_test_run_loads(open_page, tiny_val, tmp_path):
    """The page that GUNetModel's test writes (a random tiny gUNet on the tiny set)."""
    tiny_test_run(tmp_path / 'results', tiny_val)
    opened = open_page(tmp_path / 'results' / 'index.html')
    assert opened.load_all_images() == []
    assert len(opened.page.query_selector_all('table.gallery tbody tr')) == 2
    assert 'PSNR' in opened.page.inner_text('header')
    assert opened.problems == []


def test_missing_images_give_placeholders_not_a_broken_page(open_page, photo_gallery, tmp_path):
    entries = [GalleryEntry('gone', str(tmp_path / 'no-such.png'), str(tmp_path / 'nor-this.png'),
                            str(tmp_path / 'no-clear.png'), {'psnr': 9.0}),
               GalleryEntry('empty', str(tmp_path), None, None, {})]
    opened = open_page(write_gallery(str(tmp_path / 'out'), entries))
    page = opened.page
    assert opened.load_all_images() == []
    assert page.locator('.missing').count() == 8  # per row: 3 pictures and the slider
    assert 'missing or unreadable' in page.inner_text('.note')
    opened.screenshot(tmp_path, 'gallery_missing.png')
    assert opened.problems == []


def test_a_500_image_page_sorts_quickly(open_page, tmp_path):
    entries = write_photo_set(str(tmp_path / 'src'), 500, size=(240, 180))
    opened = open_page(write_gallery(str(tmp_path / 'out'), entries))
    page = opened.page
    psnr = column(page, 'table.gallery', 1)
    start = time.monotonic()
    page.click('th[data-key="1"] button')
    assert column(page, 'table.gallery', 1) == sorted(psnr, reverse=True)
    assert time.monotonic() - start < 3
    page.locator('tbody tr:nth-child(400) input.cmp-range').fill('10')
    assert page.eval_on_selector('tbody tr:nth-child(400) img.before', 'el => el.style.clipPath') == \
        'inset(0px 90% 0px 0px)'
    assert opened.problems == []
