"""The gUNet variants of the paper, in one table.

A variant is a name, the blocks per stage, the width of the first stage, the depthwise kernel
and the parameter count of the official model. The network, the checkpoint reader's variant
detection, the option checks, the model's network signature and every script's ``--variant``
read this table, so adding a variant is one line here.
"""
from collections import namedtuple

Variant = namedtuple('Variant', ['name', 'depths', 'base_dim', 'kernel_size', 'params'])

VARIANTS = {
    v.name: v
    for v in (
        Variant('t', (2, 2, 2, 4, 2, 2, 2), 24, 5, 844_899),
        Variant('s', (4, 4, 4, 8, 4, 4, 4), 24, 5, 1_477_059),
        Variant('b', (8, 8, 8, 16, 8, 8, 8), 24, 5, 2_741_379),
        Variant('d', (16, 16, 16, 32, 16, 16, 16), 24, 5, 5_270_019),
    )
}


def get_variant(name):
    """The Variant called ``name`` ('s', 'S', 'gunet-s' and 'gunet_s' all work)."""
    key = str(name).lower()
    if key.startswith(('gunet-', 'gunet_')):
        key = key[len('gunet-'):]
    if key not in VARIANTS:
        raise ValueError(f'unknown gUNet variant {name!r}; valid variants: {", ".join(VARIANTS)}')
    return VARIANTS[key]


def network_config(variant='t', base_dim=None, depths=None, kernel_size=None):
    """``dict(base_dim, depths, kernel_size)`` of a network: explicit values win, the rest come
    from ``variant`` (whose name is only read when something is left to fill in)."""
    if depths is None or base_dim is None or kernel_size is None:
        spec = get_variant(variant)
        base_dim = spec.base_dim if base_dim is None else base_dim
        depths = spec.depths if depths is None else depths
        kernel_size = spec.kernel_size if kernel_size is None else kernel_size
    return {'base_dim': int(base_dim), 'depths': [int(d) for d in depths], 'kernel_size': int(kernel_size)}


def variant_of(config):
    """The name of the variant with exactly this ``network_config``, or None."""
    return next((v.name for v in VARIANTS.values()
                 if (v.base_dim, list(v.depths), v.kernel_size) == (config['base_dim'], list(config['depths']),
                                                                    config['kernel_size'])), None)
