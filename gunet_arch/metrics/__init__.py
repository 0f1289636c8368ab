"""Paper-protocol dehazing metrics; importing registers them in BasicSR's METRIC_REGISTRY."""
from .dehaze_metrics import calculate_psnr_dehaze, calculate_ssim_dehaze, ssim_pooled

__all__ = ['calculate_psnr_dehaze', 'calculate_ssim_dehaze', 'ssim_pooled']
