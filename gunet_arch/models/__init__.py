"""GUNetModel and the WarmupCosineLR schedule. Importing registers GUNetModel in BasicSR's
MODEL_REGISTRY; WarmupCosineLR goes into the plugin's own LR_SCHEDULER_REGISTRY, since BasicSR
has no registry for schedulers."""
from .gunet_model import GUNetModel
from .lr_scheduler import LR_SCHEDULER_REGISTRY, WarmupCosineLR

__all__ = ['GUNetModel', 'WarmupCosineLR', 'LR_SCHEDULER_REGISTRY']
