"""PSNR and SSIM as the gUNet paper reports them (its official test script).

* PSNR: RGB in [0, 1], whole image, no Y channel, no uint8 rounding of the output.
* SSIM: both images average-pooled by ``r = max(1, round(min(H, W) / 256))``, then SSIM with an
  11-tap Gaussian window (sigma 1.5) applied without padding, averaged over pixels and channels.

Both take BasicSR's metric arguments (``img, img2, crop_border, input_order``), so they can be
listed under ``val.metrics`` like ``calculate_psnr``. Integer images are read as 0-255, floating
point images as 0-1; the result does not depend on the channel order (RGB or BGR).
"""
import numpy as np
import torch
import torch.nn.functional as F
from basicsr.metrics.metric_util import reorder_image
from basicsr.utils.registry import METRIC_REGISTRY


def _to_unit_hwc(img, crop_border, input_order):
    """float64 HWC array in [0, 1] from a uint8/uint16/float image (numpy or tensor)."""
    if torch.is_tensor(img):
        img = img.detach().cpu().numpy()
    img = np.asarray(img)
    if img.ndim == 4:
        if img.shape[0] != 1:
            raise ValueError(f'expected a single image, got a batch of {img.shape[0]}')
        img = img[0]
    img = reorder_image(img, input_order=input_order)
    if np.issubdtype(img.dtype, np.integer):
        img = img.astype(np.float64) / float(np.iinfo(img.dtype).max)  # uint8: 255
    else:
        img = img.astype(np.float64)
    if crop_border:
        img = img[crop_border:-crop_border, crop_border:-crop_border, ...]
    return img


def _pair(img, img2, crop_border, input_order):
    if tuple(np.shape(img)) != tuple(np.shape(img2)):
        raise ValueError(f'Image shapes are different: {np.shape(img)}, {np.shape(img2)}.')
    return _to_unit_hwc(img, crop_border, input_order), _to_unit_hwc(img2, crop_border, input_order)


@METRIC_REGISTRY.register()
def calculate_psnr_dehaze(img, img2, crop_border=0, input_order='HWC', **kwargs):
    """PSNR in dB of two images on the [0, 1] scale (inf for identical images)."""
    img, img2 = _pair(img, img2, crop_border, input_order)
    mse = np.mean((img - img2)**2)
    if mse == 0:
        return float('inf')
    return float(10. * np.log10(1. / mse))


def ssim_pool_ratio(height, width):
    """The downsampling factor of the paper's SSIM (from Zhou Wang's SSIM page: ~256 px)."""
    return max(1, round(min(height, width) / 256))


def _gaussian_window(size=11, sigma=1.5, dtype=torch.float64):
    coords = torch.arange(size, dtype=dtype) - size // 2
    g = torch.exp(-coords**2 / (2 * sigma**2))
    return g / g.sum()


def _blur(x, window):
    """Separable Gaussian blur without padding. A side shorter than the window is left unfiltered
    (what pytorch_msssim does, with a warning), so tiny images still get a value."""
    channels = x.shape[1]
    size = window.numel()
    if x.shape[-2] >= size:
        x = F.conv2d(x, window.view(1, 1, size, 1).repeat(channels, 1, 1, 1), groups=channels)
    if x.shape[-1] >= size:
        x = F.conv2d(x, window.view(1, 1, 1, size).repeat(channels, 1, 1, 1), groups=channels)
    return x


def ssim_pooled(x, y, win_size=11, win_sigma=1.5, data_range=1.0, k1=0.01, k2=0.03):
    """The paper's SSIM of two N x C x H x W tensors, one value per image."""
    h, w = x.shape[-2:]
    r = ssim_pool_ratio(h, w)
    size = (int(h / r), int(w / r))
    x = F.adaptive_avg_pool2d(x, size)
    y = F.adaptive_avg_pool2d(y, size)
    window = _gaussian_window(win_size, win_sigma, dtype=x.dtype).to(x.device)
    c1, c2 = (k1 * data_range)**2, (k2 * data_range)**2
    mu_x, mu_y = _blur(x, window), _blur(y, window)
    var_x = _blur(x * x, window) - mu_x**2
    var_y = _blur(y * y, window) - mu_y**2
    cov = _blur(x * y, window) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)) * ((2 * cov + c2) / (var_x + var_y + c2))
    return ssim_map.flatten(2).mean(-1).mean(1)


@METRIC_REGISTRY.register()
def calculate_ssim_dehaze(img, img2, crop_border=0, input_order='HWC', **kwargs):
    """SSIM of two images on the [0, 1] scale, paper protocol (see the module docstring)."""
    img, img2 = _pair(img, img2, crop_border, input_order)
    to_nchw = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))[None]  # noqa: E731
    return float(ssim_pooled(to_nchw(img), to_nchw(img2))[0])
