"""GUNetModel's optimizer: AdamW/Adam run fused by default (one kernel over all parameters), the
same update as PyTorch's default loop up to float rounding; train.optim_g.fused/foreach override."""
import pytest
import torch
from basicsr.models import build_model
from conftest import tiny_train_opt


@pytest.fixture
def make_model(tiny_its, tmp_path):
    def make(**optim):
        opt = tiny_train_opt(*tiny_its, str(tmp_path / 'exp'))
        opt['train']['optim_g'].update(optim)
        return build_model(opt)

    return make


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {'lq': torch.rand(2, 3, 32, 32, generator=g), 'gt': torch.rand(2, 3, 32, 32, generator=g)}


@pytest.mark.parametrize('optim_type', ['AdamW', 'Adam'])
def test_fused_by_default_and_the_same_update_as_the_loop(make_model, optim_type):
    fused = make_model(type=optim_type)
    loop = make_model(type=optim_type, foreach=False)
    assert fused.optimizer_g.defaults['fused'] is True
    assert not loop.optimizer_g.defaults['fused'] and loop.optimizer_g.defaults['foreach'] is False
    start = {k: v.clone() for k, v in fused.get_bare_model(fused.net_g).state_dict().items()}
    loop.get_bare_model(loop.net_g).load_state_dict(start)
    for model in (fused, loop):
        for it in range(1, 4):
            model.feed_data(batch(it))
            model.optimize_parameters(it)
    a = fused.get_bare_model(fused.net_g).state_dict()
    b = loop.get_bare_model(loop.net_g).state_dict()
    moved = max((a[k] - b[k]).abs().max().item() for k in a if a[k].is_floating_point())
    assert moved < 1e-5  # float rounding only; three steps at lr 2e-3 move weights by ~6e-3
    assert max((a[k] - start[k]).abs().max().item() for k in a if a[k].is_floating_point()) > 1e-3


def test_an_explicit_fused_false_is_kept(make_model):
    model = make_model(fused=False)
    assert not model.optimizer_g.defaults['fused']
