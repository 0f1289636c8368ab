"""gUNet for BasicSR.

``import gunet_arch`` is the one line a user needs, and it has side effects: it applies the fixes
to BasicSR in ``compat.py`` (importing basicsr on the way) and registers the plugin's
architecture, model, datasets, metrics and scheduler with BasicSR's registries. Importing any
submodule (``gunet_arch.tools...``) runs this file first, so it does the same.
"""
from . import compat, options

compat.apply(after_parse=options.prepare_options)

# Each subpackage registers its classes with BasicSR when imported.
from . import archs, data, metrics, models  # noqa: E402,F401

__version__ = '0.1.0'
