from .gunet_arch import GUNet, VARIANTS, variant_depths

__all__ = ['GUNet', 'VARIANTS', 'variant_depths']
