"""GUNetModel and the WarmupCosineLR schedule; importing registers them with BasicSR."""
from .gunet_model import GUNetModel
from .lr_scheduler import LR_SCHEDULER_REGISTRY, WarmupCosineLR

__all__ = ['GUNetModel', 'WarmupCosineLR', 'LR_SCHEDULER_REGISTRY']
