"""WarmupCosineLR: values against the formula, weight-decay decay, exact resume, bad options."""
import math

import pytest
import torch

from gunet_arch.models.lr_scheduler import LR_SCHEDULER_REGISTRY, WarmupCosineLR

LR, ETA_MIN, WD, WARMUP, TOTAL = 1.6e-3, 1.6e-5, 0.01, 50, 1000


def expected_lr(t):
    if t < WARMUP:
        return ETA_MIN + (LR - ETA_MIN) * t / WARMUP
    return ETA_MIN + 0.5 * (LR - ETA_MIN) * (1 + math.cos(math.pi * (t - WARMUP) / (TOTAL - WARMUP)))


def make(**kwargs):
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([param], lr=LR, weight_decay=WD)
    kwargs = {'total_iter': TOTAL, 'warmup_iter': WARMUP, 'eta_min': ETA_MIN, **kwargs}
    return opt, WarmupCosineLR(opt, **kwargs)


def lr_of_iteration(sched, opt, n):
    """Drive the scheduler as BasicSR's trainer does (a step before every iteration but the
    first) and return the lr each of iterations 1..n trains with."""
    lrs = []
    for it in range(1, n + 1):
        if it > 1:
            sched.step()
        lrs.append(opt.param_groups[0]['lr'])
        opt.step()
    return lrs


def test_registered_by_name():
    assert LR_SCHEDULER_REGISTRY.get('WarmupCosineLR') is WarmupCosineLR


def test_values_at_chosen_iterations_follow_the_formula():
    opt, sched = make()
    lrs = lr_of_iteration(sched, opt, TOTAL + 5)
    for it in (1, 2, 26, 50, 51, 52, 300, 525, 999, 1000, 1001, 1005):
        assert lrs[it - 1] == pytest.approx(expected_lr(min(it - 1, TOTAL)), rel=1e-12), it
    assert lrs[0] == pytest.approx(ETA_MIN)  # warm-up starts at eta_min
    assert lrs[WARMUP] == pytest.approx(LR)  # the peak right after warm-up
    assert lrs[TOTAL] == pytest.approx(ETA_MIN)  # and eta_min at total_iter


def test_weight_decay_follows_its_own_cosine():
    opt, sched = make(weight_decay_min=0)
    for it in range(1, 501):
        if it > 1:
            sched.step()
        opt.step()
    t = 499
    assert opt.param_groups[0]['weight_decay'] == pytest.approx(0.5 * WD * (1 + math.cos(math.pi * t / TOTAL)))
    opt2, _ = make()  # without weight_decay_min it stays put
    assert opt2.param_groups[0]['weight_decay'] == WD


def test_resume_restores_the_schedule_exactly():
    opt, sched = make(weight_decay_min=0)
    full = lr_of_iteration(sched, opt, 400)
    opt_a, sched_a = make(weight_decay_min=0)
    lr_of_iteration(sched_a, opt_a, 123)
    opt_b, sched_b = make(weight_decay_min=0)
    opt_b.load_state_dict(opt_a.state_dict())
    sched_b.load_state_dict(sched_a.state_dict())
    resumed = []
    for _ in range(124, 401):
        sched_b.step()
        opt_b.step()
        resumed.append(opt_b.param_groups[0]['lr'])
    assert resumed == full[123:]
    assert opt_b.param_groups[0]['weight_decay'] == opt.param_groups[0]['weight_decay']


@pytest.mark.parametrize('kwargs, match', [
    ({'total_iter': 0}, 'total_iter'),
    ({'warmup_iter': TOTAL}, 'warmup_iter'),
    ({'eta_min': -1}, 'eta_min'),
])
def test_bad_settings_name_the_key(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make(**kwargs)
