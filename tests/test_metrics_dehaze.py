"""The paper-protocol metrics against independent computations (numpy PSNR, scikit-image SSIM)."""
import numpy as np
import pytest
from basicsr.metrics import calculate_metric
from skimage.metrics import structural_similarity

from gunet_arch.metrics import calculate_psnr_dehaze, calculate_ssim_dehaze


def adaptive_avg_pool(img, out_h, out_w):
    """numpy adaptive average pooling of an HWC image (PyTorch's bin edges)."""
    h, w = img.shape[:2]
    rows = [(i * h // out_h, -(-(i + 1) * h // out_h)) for i in range(out_h)]
    cols = [(j * w // out_w, -(-(j + 1) * w // out_w)) for j in range(out_w)]
    return np.array([[img[r0:r1, c0:c1].mean(axis=(0, 1)) for c0, c1 in cols] for r0, r1 in rows])


def reference_ssim(img, img2):
    h, w = img.shape[:2]
    r = max(1, round(min(h, w) / 256))
    a, b = adaptive_avg_pool(img, int(h / r), int(w / r)), adaptive_avg_pool(img2, int(h / r), int(w / r))
    # skimage filters the whole image with reflect padding, then averages only the pixels whose
    # 11x11 window lies inside the image (it crops (11 - 1) / 2 = 5 px per side): the same pixels
    # as a convolution without padding.
    _, full = structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                    data_range=1, channel_axis=-1, full=True)
    return full[5:-5, 5:-5].mean()


def pair(h, w, seed=0):
    rng = np.random.default_rng(seed)
    gt = rng.uniform(0, 1, (h, w, 3))
    out = np.clip(gt + rng.normal(0, 0.05, gt.shape) + 0.02, 0, 1)
    return out.astype(np.float32), gt.astype(np.float32)


@pytest.mark.parametrize('h, w', [(100, 120), (460, 620), (517, 390)])
def test_ssim_matches_scikit_image_on_pooled_images(h, w):
    out, gt = pair(h, w)
    assert calculate_ssim_dehaze(out, gt, crop_border=0) == pytest.approx(reference_ssim(out, gt), abs=1e-4)


def test_ssim_pools_by_round_min_side_over_256():
    out, gt = pair(460, 620)  # r = round(460 / 256) = 2: SSIM of the 2x2 block means
    blocks = lambda a: a.reshape(230, 2, 310, 2, 3).mean(axis=(1, 3))  # noqa: E731
    assert calculate_ssim_dehaze(out, gt, 0) == pytest.approx(calculate_ssim_dehaze(blocks(out), blocks(gt), 0),
                                                             abs=1e-6)
    assert calculate_ssim_dehaze(gt, gt, 0) == pytest.approx(1.0, abs=1e-12)


def test_psnr_on_unit_floats_of_the_whole_image():
    out, gt = pair(37, 53)
    mse = np.mean((out.astype(np.float64) - gt.astype(np.float64))**2)
    assert calculate_psnr_dehaze(out, gt, crop_border=0) == pytest.approx(10 * np.log10(1 / mse), abs=1e-6)
    assert calculate_psnr_dehaze(gt, gt, 0) == float('inf')


def test_uint8_images_read_as_0_to_255_and_chw_order():
    out, gt = pair(64, 48)
    out8, gt8 = (out * 255).round().astype(np.uint8), (gt * 255).round().astype(np.uint8)
    psnr8 = calculate_psnr_dehaze(out8, gt8, 0)
    assert psnr8 == pytest.approx(calculate_psnr_dehaze(out8 / 255., gt8 / 255., 0), abs=1e-9)
    ssim8 = calculate_ssim_dehaze(out8, gt8, 0)
    assert ssim8 == pytest.approx(calculate_ssim_dehaze(out8 / 255., gt8 / 255., 0), abs=1e-9)
    chw = calculate_psnr_dehaze(out.transpose(2, 0, 1), gt.transpose(2, 0, 1), 0, input_order='CHW')
    assert chw == pytest.approx(calculate_psnr_dehaze(out, gt, 0))


def test_crop_border_and_basicsr_call_path():
    out, gt = pair(40, 40)
    cropped = calculate_psnr_dehaze(out[4:-4, 4:-4], gt[4:-4, 4:-4], 0)
    assert calculate_psnr_dehaze(out, gt, 4) == pytest.approx(cropped)
    via_registry = calculate_metric({'img': out, 'img2': gt}, {'type': 'calculate_ssim_dehaze', 'crop_border': 0})
    assert via_registry == pytest.approx(calculate_ssim_dehaze(out, gt, 0))


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match='shapes'):
        calculate_psnr_dehaze(np.zeros((8, 8, 3)), np.zeros((8, 9, 3)), 0)
