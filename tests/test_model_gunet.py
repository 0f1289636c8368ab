"""GUNetModel on the CPU: training, FrozenBN, NaN-step skipping, AMP fallback, option errors,
exact resume, checkpoints, and validation with float metrics and a CSV."""
import copy
import csv
import math
import os
import sys
import warnings

import pytest
import torch
from basicsr.data import build_dataloader, build_dataset
from basicsr.models import build_model
from basicsr.utils.options import parse_options
from conftest import ROOT, TINY_NET, tiny_train_opt, write_option_file

from gunet_arch.compat import load_resume_state
from gunet_arch.metrics import calculate_psnr_dehaze
from gunet_arch.models.frozen_bn import batch_norms


@pytest.fixture
def make_opt(tiny_its, tmp_path):
    def make(**train):
        return tiny_train_opt(*tiny_its, str(tmp_path / 'exp'), **train)

    return make


@pytest.fixture(scope='module')
def batches(tiny_its):
    opt = tiny_train_opt(*tiny_its, 'unused')['datasets']['train']
    ds = build_dataset(opt)
    items = [ds[i] for i in range(len(ds))]
    return [{'lq': torch.stack([x['lq'] for x in items[i:i + 4]]), 'gt': torch.stack([x['gt'] for x in items[i:i + 4]])}
            for i in range(0, len(items), 4)]


def train(model, batches, first, last):
    losses = []
    for it in range(first, last + 1):
        model.update_learning_rate(it, warmup_iter=-1)
        model.feed_data(batches[(it - 1) % len(batches)])
        model.optimize_parameters(it)
        losses.append(model.get_current_log()['l_pix'])
    return losses


def state(model):
    return {k: v.clone() for k, v in model.get_bare_model(model.net_g).state_dict().items()}


def same_state(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def make_dirs(opt):
    for key in ('models', 'training_states'):
        os.makedirs(opt['path'][key], exist_ok=True)


def test_training_reduces_the_loss_with_adamw(make_opt, batches):
    model = build_model(make_opt(total_iter=24))
    assert type(model.optimizer_g) is torch.optim.AdamW
    losses = train(model, batches, 1, 24)
    assert sum(losses[-4:]) / 4 < 0.8 * sum(losses[:4]) / 4


def test_adam_is_available_too(make_opt):
    opt = make_opt()
    opt['train']['optim_g'] = {'type': 'Adam', 'lr': 1e-3}
    assert type(build_model(opt).optimizer_g) is torch.optim.Adam


def test_frozen_bn_keeps_statistics_and_trains_the_rest(make_opt, batches):
    model = build_model(make_opt(frozen_bn_iter=3))
    train(model, batches, 1, 2)
    bns = batch_norms(model.net_g)
    assert all(bn.training for bn in bns)
    before = state(model)
    train(model, batches, 3, 4)
    after = state(model)
    assert all(not bn.training for bn in bns) and model.net_g.training
    assert all(m.training for m in model.net_g.modules() if m not in bns)
    stats = [k for k in before if 'running_' in k or 'num_batches' in k]
    assert stats and all(torch.equal(before[k], after[k]) for k in stats)
    assert not torch.equal(before['layers.0.blocks.0.norm.weight'], after['layers.0.blocks.0.norm.weight'])
    assert not torch.equal(before['inconv.proj.weight'], after['inconv.proj.weight'])
    model.test()  # validation switches to eval and back: BatchNorm must stay frozen
    assert all(not bn.training for bn in bns) and model.net_g.training


def test_nan_step_changes_nothing_and_is_counted(make_opt, batches):
    model = build_model(make_opt())
    train(model, batches, 1, 2)
    weights, optim = state(model), copy.deepcopy(model.optimizer_g.state_dict())
    bad = {'lq': batches[0]['lq'].clone(), 'gt': batches[0]['gt']}
    bad['lq'][0, 0, 0, 0] = float('nan')
    model.feed_data(bad)
    model.optimize_parameters(3)
    assert same_state(weights, state(model))  # weights and BatchNorm statistics
    after = model.optimizer_g.state_dict()
    for key, value in optim['state'].items():
        assert all(torch.equal(value[k], after['state'][key][k]) for k in value)
    assert model.bad_steps == 1 and model.get_current_log()['bad_steps'] == 1
    train(model, batches, 4, 4)
    assert model.bad_steps_in_a_row == 0 and not same_state(weights, state(model))


def test_too_many_bad_steps_stop_training_and_keep_the_checkpoint(make_opt, batches):
    opt = make_opt(max_bad_steps=3)
    make_dirs(opt)
    model = build_model(opt)
    train(model, batches, 1, 2)
    model.save(0, 2)
    saved = torch.load(os.path.join(opt['path']['models'], 'net_g_2.pth'))['params']
    bad = {'lq': torch.full_like(batches[0]['lq'], float('inf')), 'gt': batches[0]['gt']}
    model.feed_data(bad)
    model.optimize_parameters(3)
    model.optimize_parameters(4)
    with pytest.raises(RuntimeError, match='max_bad_steps = 3'):
        model.optimize_parameters(5)
    assert same_state(saved, {k: v.cpu() for k, v in state(model).items()})


def test_float16_amp_without_cuda_falls_back_to_bfloat16_with_one_warning(make_opt, batches):
    opt = make_opt(amp={'enabled': True, 'dtype': 'float16'})
    with pytest.warns(RuntimeWarning, match='bfloat16') as record:
        model = build_model(opt)
    assert len([w for w in record if 'amp' in str(w.message)]) == 1
    assert model.amp.dtype == torch.bfloat16 and model.scaler is None
    with conv_output_dtypes(model) as dtypes:
        loss = train(model, batches, 1, 1)[0]
    assert math.isfinite(loss)  # neither NaN nor +-inf
    assert dtypes and set(dtypes.values()) == {torch.bfloat16}


class conv_output_dtypes:
    """Records, per nn.Conv2d of the model's network, the dtype of its output during the block."""

    def __init__(self, model):
        self.convs = {n: m for n, m in model.get_bare_model(model.net_g).named_modules()
                      if isinstance(m, torch.nn.Conv2d)}
        self.dtypes, self.handles = {}, []

    def __enter__(self):
        for name, conv in self.convs.items():
            self.handles.append(conv.register_forward_hook(
                lambda mod, inp, out, name=name: self.dtypes.__setitem__(name, out.dtype)))
        return self.dtypes

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()
        assert not exc[0] and sorted(self.dtypes) == sorted(self.convs), 'a conv did not run'


@pytest.mark.parametrize('amp, conv_dtype', [({'enabled': True, 'dtype': 'bfloat16'}, torch.bfloat16),
                                             ({'enabled': False, 'dtype': 'bfloat16'}, torch.float32)],
                         ids=['bfloat16', 'off'])
def test_bfloat16_amp_runs_every_convolution_in_bfloat16(make_opt, batches, amp, conv_dtype):
    """Under train.amp bfloat16 every convolution of the training forward computes in bfloat16
    (autocast really applies), the loss is finite, the weights stay float32 and do change. With
    amp off the same hooks see float32, so the hooks measure what they claim."""
    model = build_model(make_opt(amp=amp))
    assert model.scaler is None
    before = state(model)
    with conv_output_dtypes(model) as dtypes:
        model.feed_data(batches[0])
        model.optimize_parameters(1)
    assert set(dtypes.values()) == {conv_dtype}
    loss = model.get_current_log()['l_pix']
    assert math.isfinite(loss) and loss > 0
    after = state(model)
    assert all(v.dtype == torch.float32 for k, v in after.items() if v.is_floating_point())
    assert not same_state(before, after)


@pytest.mark.parametrize('units', [True, False], ids=['bf16-units', 'no-bf16-units'])
def test_amp_auto_on_the_cpu_follows_its_bfloat16_units(make_opt, batches, monkeypatch, units):
    """``enabled: auto`` on the CPU: bfloat16 (no float16 warning) where the CPU has bfloat16
    units, float32 where it has none; the log line says which and why."""
    from gunet_arch.models import amp as amp_module

    monkeypatch.setattr(amp_module, 'cpu_has_bf16_units', lambda: units)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        model = build_model(make_opt(amp={'enabled': 'auto', 'dtype': 'float16'}))
    assert model.amp.enabled is units and model.scaler is None
    assert repr(model.amp) == ('bfloat16 (auto: this CPU has bfloat16 units)' if units
                               else 'off (auto: this CPU has no bfloat16 units)')
    with conv_output_dtypes(model) as dtypes:
        model.feed_data(batches[0])
        model.optimize_parameters(1)
    assert set(dtypes.values()) == {torch.bfloat16 if units else torch.float32}


@pytest.mark.parametrize('edit, match', [
    (lambda o: o['train'].update(amp={'enabled': True, 'dtyp': 'float16'}), r"train\.amp.*'dtyp'"),
    (lambda o: o['train'].update(amp={'enabled': True, 'dtype': 'float8'}), r'train\.amp\.dtype'),
    (lambda o: o['train'].update(amp={'enabled': 'yes'}), r"train\.amp\.enabled: expected true, false or auto"),
    (lambda o: o['train']['scheduler'].pop('total_iter'), r'train\.scheduler\.total_iter'),
    (lambda o: o['network_g'].update(variant='x', depths=None), r'network_g\.variant'),
    (lambda o: o.update(sync_bn='maybe'), r'sync_bn'),
    (lambda o: o['train'].update(frozen_bn_iter=-5), r'train\.frozen_bn_iter'),
    (lambda o: o['logger'].update(keep_checkpoints=0), r'logger\.keep_checkpoints'),
])
def test_bad_options_fail_before_training_naming_the_key(make_opt, edit, match, tmp_path, monkeypatch):
    """The checks run once, as BasicSR parses the option file: before any dataset or model."""
    opt = make_opt()
    edit(opt)
    monkeypatch.setattr(sys, 'argv', ['train.py', '-opt', write_option_file(opt, str(tmp_path / 'bad.yml'))])
    with pytest.raises(ValueError, match=match):
        parse_options(ROOT, is_train=True)


def resumed_opt(opt, iteration):
    opt = copy.deepcopy(opt)
    opt['path']['resume_state'] = os.path.join(opt['path']['training_states'], f'{iteration}.state')
    opt['auto_resume'] = False
    return opt


def test_resume_continues_exactly_like_an_uninterrupted_run(make_opt, batches):
    opt = make_opt(total_iter=8, frozen_bn_iter=5)
    make_dirs(opt)
    full = build_model(copy.deepcopy(opt))
    train(full, batches, 1, 4)
    full.save(1, 4)
    train(full, batches, 5, 8)

    ropt = resumed_opt(opt, 4)
    resume_state = load_resume_state(ropt)  # sets pretrain_network_g as BasicSR's check_resume does
    resumed = build_model(ropt)
    resumed.resume_training(resume_state)
    assert resume_state['iter'] == 4
    train(resumed, batches, 5, 8)

    assert same_state(state(full), state(resumed))
    assert resumed.get_current_learning_rate() == full.get_current_learning_rate()
    assert resumed.bn_frozen and full.bn_frozen
    assert all(not bn.training for bn in batch_norms(resumed.net_g))
    a, b = full.optimizer_g.state_dict(), resumed.optimizer_g.state_dict()
    assert a['param_groups'] == b['param_groups']
    assert all(torch.equal(a['state'][i][k], b['state'][i][k]) for i in a['state'] for k in a['state'][i])


def test_resume_state_of_another_network_is_a_clear_error(make_opt, batches):
    opt = make_opt()
    make_dirs(opt)
    model = build_model(copy.deepcopy(opt))
    train(model, batches, 1, 1)
    model.save(0, 1)
    other = resumed_opt(opt, 1)
    other['network_g']['depths'] = [1, 1, 1, 2, 1, 1, 1]
    other['path']['strict_load_g'] = False  # even a non-strict option file must not half-load
    resume_state = load_resume_state(other)
    with pytest.raises(ValueError, match='missing key|shape|another network'):
        build_model(other).resume_training(resume_state)
    # The weights alone fitting is not enough: the state records its network.
    other['path']['pretrain_network_g'] = None
    other['path']['resume_state'] = None
    with pytest.raises(ValueError, match='another network'):
        build_model(other).resume_training(resume_state)


def test_checkpoints_are_written_atomically(make_opt, monkeypatch):
    opt = make_opt()
    make_dirs(opt)
    model = build_model(opt)
    model.save(0, 2)
    path = os.path.join(opt['path']['models'], 'net_g_2.pth')
    good = open(path, 'rb').read()

    def broken_save(obj, f, *args, **kwargs):
        with open(f, 'wb') as handle:
            handle.write(b'half a checkpoint')
        raise OSError('disk full')

    monkeypatch.setattr(torch, 'save', broken_save)
    with pytest.raises(OSError):
        model.save(0, 2)
    assert open(path, 'rb').read() == good
    assert sorted(os.listdir(opt['path']['models'])) == ['net_g_2.pth']


def test_validation_uses_float_outputs_and_writes_a_csv(tiny_val, tmp_path):
    model_net = build_model(tiny_train_opt(*tiny_val, str(tmp_path / 'exp'))).net_g
    # Loaded from an official-style checkpoint: {'state_dict': DDP keys with 'module.'}.
    weights = tmp_path / 'official.pth'
    torch.save({'state_dict': {'module.' + k: v for k, v in model_net.state_dict().items()}}, weights)
    opt = {
        'name': 'tiny_test', 'model_type': 'GUNetModel', 'num_gpu': 0, 'is_train': False, 'dist': False,
        'rank': 0, 'world_size': 1, 'network_g': dict(TINY_NET),
        'path': {'pretrain_network_g': str(weights), 'param_key_g': 'params', 'strict_load_g': True,
                 'results_root': str(tmp_path / 'results'), 'log': str(tmp_path / 'results'),
                 'visualization': str(tmp_path / 'results' / 'visualization')},
        'val': {'save_img': True, 'suffix': None, 'metrics': {
            'psnr': {'type': 'calculate_psnr_dehaze', 'crop_border': 0},
            'ssim': {'type': 'calculate_ssim_dehaze', 'crop_border': 0}}},
    }
    ds_opt = {'name': 'tinyval', 'type': 'PairedDehazeDataset', 'phase': 'test', 'dataroot_lq': tiny_val[0],
              'dataroot_gt': tiny_val[1], 'io_backend': {'type': 'disk'}}
    loader = build_dataloader(build_dataset(ds_opt), ds_opt, num_gpu=0, dist=False)
    model = build_model(opt)
    assert same_state(state(model), model_net.state_dict())
    model.validation(loader, current_iter='tiny_test', tb_logger=None, save_img=True)

    expected = []
    for data in loader:
        with torch.no_grad():
            out = model_net.eval()(data['lq']).clamp(0, 1)
        assert out.shape[-2:] == (36, 44)
        expected.append(calculate_psnr_dehaze(out[0].permute(1, 2, 0).numpy(), data['gt'][0].permute(1, 2, 0).numpy()))
    rows = [r for r in csv.reader(open(tmp_path / 'results' / 'tinyval_metrics.csv')) if r and not r[0].startswith('#')]
    assert rows[0] == ['image', 'psnr', 'ssim'] and rows[-1][0] == 'mean' and len(rows) == 2 + len(expected)
    assert [float(r[1]) for r in rows[1:-1]] == pytest.approx(expected, abs=1e-5)
    assert float(rows[-1][1]) == pytest.approx(sum(expected) / len(expected), abs=1e-5)
    assert model.metric_results['psnr'] == pytest.approx(sum(expected) / len(expected), abs=1e-9)
    saved = os.listdir(tmp_path / 'results' / 'visualization' / 'tinyval')
    assert len(saved) == len(expected) and all(name.endswith('_tiny_test.png') for name in saved)


def test_loss_scaler_state_travels_with_the_training_state(make_opt, batches, monkeypatch):
    # float16 loss scaling is CUDA-only here; PyTorch's CPU GradScaler has the same bookkeeping.
    from gunet_arch.models.amp import AmpSettings
    monkeypatch.setattr(AmpSettings, 'make_scaler',
                        lambda self: torch.amp.GradScaler('cpu', init_scale=1024., growth_interval=1))
    opt = make_opt(amp={'enabled': True, 'dtype': 'bfloat16'})
    make_dirs(opt)
    model = build_model(copy.deepcopy(opt))
    train(model, batches, 1, 3)
    scale = model.scaler.get_scale()
    assert scale == 1024. * 2**3  # grows after every finite step
    model.save(0, 3)
    ropt = resumed_opt(opt, 3)
    resume_state = load_resume_state(ropt)
    assert resume_state['amp_scaler']['scale'] == scale
    resumed = build_model(ropt)
    resumed.resume_training(resume_state)
    assert resumed.scaler.get_scale() == scale
