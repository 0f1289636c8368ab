"""An unknown key or a value of the wrong type in the parts of an option file the plugin owns is
an error naming the key and the closest valid one, raised while BasicSR parses the file: before
any dataset, logger or network is built."""
import os
import sys

import pytest
from basicsr.utils.options import parse_options
from conftest import ROOT, tiny_train_opt, write_option_file


def _set(section, key, value):
    def edit(opt):
        target = opt
        for part in section:
            target = target[part]
        target[key] = value

    return edit


@pytest.mark.parametrize('edit, match', [
    (_set(['datasets', 'train'], 'use_flip', True),
     r"datasets\.train: unknown key 'use_flip'; did you mean 'use_hflip'\?"),
    (_set(['network_g'], 'varient', 's'), r"network_g: unknown key 'varient'; did you mean 'variant'\?"),
    (_set(['train'], 'frozen_bn_iters', 5), r"train: unknown key 'frozen_bn_iters'; did you mean 'frozen_bn_iter'\?"),
    (_set(['train', 'scheduler'], 'warmup_iters', 5),
     r"train\.scheduler: unknown key 'warmup_iters'; did you mean 'warmup_iter'\?"),
    (_set(['train', 'optim_g'], 'weight_decays', 0.1),
     r"train\.optim_g: unknown key 'weight_decays'; did you mean 'weight_decay'\?"),
    (_set(['train', 'amp'], 'enable', True), r"train\.amp: unknown key 'enable'; did you mean 'enabled'\?"),
    (_set(['train', 'optim_g'], 'lr', '1e-3'), r"train\.optim_g\.lr: expected a number, got str '1e-3'.*!!float"),
    (_set(['datasets', 'train'], 'gt_size', '32'), r"datasets\.train\.gt_size: expected an integer, got str '32'"),
    (_set(['datasets', 'train'], 'use_rot', 'yes please'), r'datasets\.train\.use_rot: expected true or false'),
    (_set(['network_g'], 'depths', 7), r'network_g\.depths: expected a list, got int 7'),
])
def test_typos_and_wrong_types_fail_while_parsing(tiny_its, tmp_path, monkeypatch, edit, match):
    opt = tiny_train_opt(*tiny_its, str(tmp_path / 'experiments'))
    opt['train']['amp'] = {'enabled': False, 'dtype': 'bfloat16'}
    edit(opt)
    monkeypatch.setattr(sys, 'argv', ['train.py', '-opt', write_option_file(opt, str(tmp_path / 'typo.yml'))])
    with pytest.raises(ValueError, match=match):
        parse_options(ROOT, is_train=True)
    assert not os.path.exists(tmp_path / 'experiments')  # nothing was built


def test_parts_the_plugin_does_not_own_are_left_to_basicsr(tiny_its, tmp_path, monkeypatch):
    opt = tiny_train_opt(*tiny_its, str(tmp_path / 'experiments'))
    opt['logger']['some_future_basicsr_key'] = 1
    opt['datasets']['train']['type'] = 'PairedImageDataset'  # BasicSR's own dataset: its keys are its business
    opt['datasets']['train']['filename_tmpl'] = '{}'
    monkeypatch.setattr(sys, 'argv', ['train.py', '-opt', write_option_file(opt, str(tmp_path / 'ok.yml'))])
    parse_options(ROOT, is_train=True)
