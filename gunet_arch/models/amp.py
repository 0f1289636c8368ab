"""Mixed precision from ``train.amp: {enabled: true|false|auto, dtype: float16|bfloat16}``.

float16 needs loss scaling (a GradScaler, whose state travels with the training state);
bfloat16 has float32's range and needs none. CPUs have no float16 autocast worth using, so there
float16 falls back to bfloat16, with one warning.

``enabled: auto`` turns it on where it pays: on CUDA with ``dtype``; on a CPU only with bfloat16
units (AVX512-BF16 or AMX), in bfloat16 and without the warning. Elsewhere oneDNN converts to
bfloat16 and back around every convolution, and autocast only costs.
"""
import warnings

import torch

AMP_DTYPES = {'float16': torch.float16, 'fp16': torch.float16, 'bfloat16': torch.bfloat16, 'bf16': torch.bfloat16}


def check_amp_options(amp_opt):
    """Raise ValueError naming the offending ``train.amp`` key."""
    from .option_checks import TEXT, TRUE_FALSE_AUTO, check_keys

    if amp_opt is None or isinstance(amp_opt, bool):
        return
    check_keys('train.amp', amp_opt, {'enabled': TRUE_FALSE_AUTO, 'dtype': TEXT})
    if amp_opt.get('enabled') not in (None, True, False, 'auto'):
        raise ValueError(f'train.amp.enabled: expected true, false or auto, got {amp_opt["enabled"]!r}')
    if str(amp_opt.get('dtype', 'float16')).lower() not in AMP_DTYPES:
        raise ValueError(f'train.amp.dtype: {amp_opt.get("dtype")!r} is not one of float16, bfloat16')


class AmpSettings:
    """What autocast and loss scaling to use on ``device``."""

    def __init__(self, amp_opt, device):
        amp_opt = {'enabled': amp_opt} if isinstance(amp_opt, bool) else (amp_opt or {})
        self.device_type = torch.device(device).type
        self.dtype = AMP_DTYPES[str(amp_opt.get('dtype', 'float16')).lower()]
        self.auto = amp_opt.get('enabled') == 'auto'
        if self.auto:
            self.enabled = self.device_type == 'cuda' or (self.device_type == 'cpu' and cpu_has_bf16_units())
            if self.device_type != 'cuda':
                self.dtype = torch.bfloat16
        else:
            self.enabled = bool(amp_opt.get('enabled', False))
        if self.enabled and self.dtype == torch.float16 and self.device_type != 'cuda':
            warnings.warn('train.amp: float16 autocast needs CUDA; training on CPU with bfloat16 instead',
                          RuntimeWarning, stacklevel=2)
            self.dtype = torch.bfloat16
        self.use_scaler = self.enabled and self.dtype == torch.float16

    def autocast(self):
        return torch.autocast(device_type=self.device_type, dtype=self.dtype, enabled=self.enabled)

    def make_scaler(self):
        return torch.amp.GradScaler('cuda') if self.use_scaler else None

    def __repr__(self):
        auto = ''
        if self.auto and self.device_type == 'cpu':
            auto = f' (auto: this CPU {"has" if self.enabled else "has no"} bfloat16 units)'
        elif self.auto:
            auto = ' (auto)'
        if not self.enabled:
            return 'off' + auto
        return f'{str(self.dtype).replace("torch.", "")}{" with loss scaling" if self.use_scaler else ""}{auto}'


def cpu_has_bf16_units():
    """AVX512-BF16 or AMX, where oneDNN runs bfloat16 convolutions natively. torch.cpu's probes
    are private: a missing one counts as no."""
    probes = ('_is_avx512_bf16_supported', '_is_amx_tile_supported')
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)
