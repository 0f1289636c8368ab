"""The gUNet network, its variant table, deployment and checkpoint reading. Importing
registers GUNet in BasicSR's ARCH_REGISTRY."""
from .gunet_arch import GUNet
from .variants import VARIANTS, Variant, get_variant, network_config, variant_of

__all__ = ['GUNet', 'VARIANTS', 'Variant', 'get_variant', 'network_config', 'variant_of']
