"""Learning-rate schedules that BasicSR lacks, registered by name for ``train.scheduler.type``.

BasicSR builds schedulers with a fixed if/else over its own types, so ``GUNetModel`` looks a
type up in ``LR_SCHEDULER_REGISTRY`` first and hands anything else to BasicSR.
"""
import math

from basicsr.utils.registry import Registry
from torch.optim.lr_scheduler import LRScheduler

LR_SCHEDULER_REGISTRY = Registry('lr_scheduler')


def warmup_cosine(t, base, minimum, warmup_iter, total_iter):
    """Value at step ``t``: linear from ``minimum`` to ``base`` over ``warmup_iter`` steps, then a
    half cosine from ``base`` down to ``minimum`` at ``total_iter``, constant afterwards."""
    if t < warmup_iter:
        return minimum + (base - minimum) * t / warmup_iter
    if t >= total_iter:
        return minimum
    progress = (t - warmup_iter) / (total_iter - warmup_iter)
    return minimum + 0.5 * (base - minimum) * (1 + math.cos(math.pi * progress))


@LR_SCHEDULER_REGISTRY.register()
class WarmupCosineLR(LRScheduler):
    """gUNet's schedule, per iteration: warm-up from ``eta_min`` then cosine back to ``eta_min``.

    The value is a closed-form function of the step count, so a resumed run (whose step count
    comes back with ``load_state_dict``) continues exactly where it stopped. BasicSR steps the
    scheduler before every iteration but the first, so iteration ``i`` trains with the value at
    step ``i - 1``: the first iteration uses ``eta_min``.

    Args:
        optimizer: the wrapped optimizer; each group's lr at construction is its peak lr.
        total_iter (int): the step at which the cosine reaches ``eta_min``.
        warmup_iter (int): length of the linear warm-up (0: start at the peak lr).
        eta_min (float): the lr at the start of the warm-up and at the end.
        weight_decay_min (float | None): when set, each group's weight decay follows a cosine
            (no warm-up) from its initial value to this one over ``total_iter``, as the official
            training does with its second scheduler; None leaves weight decay alone.
    """

    def __init__(self, optimizer, total_iter, warmup_iter=0, eta_min=0.0, weight_decay_min=None, last_epoch=-1):
        total_iter, warmup_iter = int(total_iter), int(warmup_iter)
        if total_iter <= 0:
            raise ValueError(f'train.scheduler.total_iter must be a positive number of iterations, got {total_iter}')
        if not 0 <= warmup_iter < total_iter:
            raise ValueError(f'train.scheduler.warmup_iter must be in [0, total_iter={total_iter}), got {warmup_iter}')
        if eta_min < 0:
            raise ValueError(f'train.scheduler.eta_min must be >= 0, got {eta_min}')
        self.total_iter = total_iter
        self.warmup_iter = warmup_iter
        self.eta_min = float(eta_min)
        self.weight_decay_min = None if weight_decay_min is None else float(weight_decay_min)
        if self.weight_decay_min is not None:
            for group in optimizer.param_groups:
                group.setdefault('initial_weight_decay', group.get('weight_decay', 0.0))
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        return [
            warmup_cosine(self.last_epoch, base, self.eta_min, self.warmup_iter, self.total_iter)
            for base in self.base_lrs
        ]

    def step(self, epoch=None):
        super().step(epoch)
        if self.weight_decay_min is not None:
            for group in self.optimizer.param_groups:
                group['weight_decay'] = warmup_cosine(self.last_epoch, group['initial_weight_decay'],
                                                      self.weight_decay_min, 0, self.total_iter)


def build_scheduler(scheduler_type, optimizer, **kwargs):
    """A registered scheduler, with a readable error for a missing or unknown option."""
    cls = LR_SCHEDULER_REGISTRY.get(scheduler_type)
    if cls is WarmupCosineLR and kwargs.get('total_iter') is None:
        raise ValueError('train.scheduler.total_iter is required for WarmupCosineLR '
                         '(the iteration at which the cosine reaches eta_min; usually train.total_iter)')
    try:
        return cls(optimizer, **kwargs)
    except TypeError as err:
        raise ValueError(f'train.scheduler ({scheduler_type}): {err}') from None
