"""The gallery of scripts/inference.py --gallery in a real browser (headless Chromium from
file://): your own photos have no clear image and no metrics, and the page shows hazy | dehazed
with a working slider, without console errors, broken images or network requests."""
import cv2
import numpy as np
import pytest
import torch
from conftest import load_script
from gallery_data import photo_triples

from gunet_arch.archs import GUNet

pytestmark = pytest.mark.browser


def test_inference_gallery_loads_and_slides(open_page, tmp_path):
    torch.manual_seed(0)
    weights = tmp_path / 'small.pth'
    torch.save({'params': GUNet(base_dim=8, depths=[1] * 7).state_dict()}, weights)
    photos = tmp_path / 'photos'
    (photos / 'trip').mkdir(parents=True)
    for i, (hazy, _, _) in enumerate(photo_triples(3, size=(96, 72))):
        if i == 2:  # with an alpha channel
            cv2.imwrite(str(photos / 'trip' / '2.png'), np.dstack([hazy, np.full(hazy.shape[:2], 200, np.uint8)]))
        else:
            cv2.imwrite(str(photos / ('trip/1.jpg' if i else '0.png')), hazy)
    out = tmp_path / 'dehazed'
    assert load_script('inference').main(['--input', str(photos), '--output', str(out), '--weights', str(weights),
                                          '--gallery', '--suffix', '_dehazed']) == 0
    opened = open_page(out / 'index.html')
    page = opened.page
    assert opened.load_all_images() == []
    rows = page.eval_on_selector('table.gallery', 'el => Array.from(el.querySelectorAll("tbody tr"))'
                                                  '.map(r => r.dataset.v0)')
    assert rows == ['0_dehazed.png', 'trip/1_dehazed.jpg', 'trip/2_dehazed.png']
    headers = page.eval_on_selector('table.gallery thead', 'el => el.innerText')
    assert 'clear' not in headers and 'PSNR' not in headers and 'hazy' in headers and 'dehazed' in headers
    assert page.locator('.missing').count() == 0 and page.locator('.note').count() == 0
    assert '3 images' in page.inner_text('header')

    row = 'table.gallery tbody tr:nth-child(2)'
    page.locator(f'{row} input.cmp-range').fill('20')
    assert page.eval_on_selector(f'{row} img.before', 'el => getComputedStyle(el).clipPath') == \
        'inset(0px 80% 0px 0px)'
    # Each picture opens its full image: the input and the output.
    links = page.eval_on_selector(row, 'el => Array.from(el.querySelectorAll("a")).map(a => a.getAttribute("href"))')
    assert links == ['../photos/trip/1.jpg', 'trip/1_dehazed.jpg']
    opened.screenshot(tmp_path, 'inference_gallery.png')
    assert opened.problems == []
