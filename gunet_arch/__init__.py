"""gUNet for BasicSR. Importing this package registers the plugin's architecture, model,
datasets, metrics and scheduler with BasicSR's registries."""
from . import compat

compat.apply()

# Each subpackage registers its classes with BasicSR when imported.
from . import archs, data, metrics, models  # noqa: E402,F401

__version__ = '0.1.0'
