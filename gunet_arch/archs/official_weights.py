"""Reading gUNet weights from either checkpoint format.

* BasicSR: ``{'params': sd}`` and/or ``{'params_ema': sd}``.
* Official gUNet training: ``{'state_dict': sd, 'optimizer': ..., ...}`` where ``sd`` comes from a
  DistributedDataParallel model, so every key starts with ``module.``.

The variant is read off the weights (blocks per stage, width, kernel size), and the whole state
dict is checked against the network it describes before anything is loaded, so a wrong file fails
with the first offending key instead of a half-loaded model.
"""
import os
import re

import torch

from .gunet_arch import BASE_DIM, KERNEL_SIZE, VARIANTS, GUNet, variant_depths

PARAM_KEYS = ('params_ema', 'params', 'state_dict')
_BLOCK_KEY = re.compile(r'^layers\.(\d+)\.blocks\.(\d+)\.')


def extract_state_dict(checkpoint, param_key=None, source='checkpoint'):
    """The network state dict inside ``checkpoint``, with any ``module.`` prefix removed."""
    if not isinstance(checkpoint, dict):
        raise ValueError(f'{source}: expected a dict of tensors, got {type(checkpoint).__name__}')
    if param_key is not None:
        if param_key not in checkpoint:
            raise ValueError(f'{source}: no {param_key!r} entry (found: {", ".join(map(str, checkpoint))})')
        sd = checkpoint[param_key]
    else:
        sd = next((checkpoint[k] for k in PARAM_KEYS if isinstance(checkpoint.get(k), dict)), checkpoint)
    if not isinstance(sd, dict) or not sd or not all(torch.is_tensor(v) for v in sd.values()):
        raise ValueError(f'{source}: not a gUNet checkpoint (no state dict of tensors under '
                         f'{"/".join(PARAM_KEYS)} or at the top level)')
    return {(k[len('module.'):] if k.startswith('module.') else k): v for k, v in sd.items()}


def infer_config(sd, source='checkpoint'):
    """``dict(base_dim, depths, kernel_size)`` of the gUNet that ``sd`` belongs to."""
    for key in ('inconv.proj.weight', 'layers.0.blocks.0.conv.Wv.1.weight'):
        if key not in sd:
            raise ValueError(f'{source}: not a gUNet checkpoint: missing key {key!r}')
    blocks = {}
    for key in sd:
        m = _BLOCK_KEY.match(key)
        if m:
            stage, block = int(m.group(1)), int(m.group(2))
            blocks[stage] = max(blocks.get(stage, 0), block + 1)
    depths = [blocks.get(i, 0) for i in range(max(blocks) + 1)]
    if len(depths) % 2 != 1 or min(depths) < 1:
        raise ValueError(f'{source}: not a gUNet checkpoint: stage depths {depths} are not an odd number of stages')
    return {
        'base_dim': int(sd['inconv.proj.weight'].shape[0]),
        'depths': depths,
        'kernel_size': int(sd['layers.0.blocks.0.conv.Wv.1.weight'].shape[-1]),
    }


def variant_of(config):
    """'t'/'s'/'b'/'d' when ``config`` is one of the paper's variants, else None."""
    if config['base_dim'] != BASE_DIM or config['kernel_size'] != KERNEL_SIZE:
        return None
    return next((v for v in VARIANTS if variant_depths(v) == list(config['depths'])), None)


def check_state_dict(sd, net, source='checkpoint'):
    """Raise ValueError naming the first key or shape where ``sd`` and ``net`` disagree."""
    expected = net.state_dict()
    for key, tensor in expected.items():
        if key not in sd:
            raise ValueError(f'{source}: missing key {key!r} (expected shape {tuple(tensor.shape)})')
        if tuple(sd[key].shape) != tuple(tensor.shape):
            raise ValueError(f'{source}: key {key!r} has shape {tuple(sd[key].shape)}, '
                             f'expected {tuple(tensor.shape)}')
    extra = [k for k in sd if k not in expected]
    if extra:
        raise ValueError(f'{source}: unexpected key {extra[0]!r} ({len(extra)} unexpected in all)')


def load_gunet_checkpoint(path, variant=None, map_location='cpu', param_key=None):
    """Read ``path`` and return ``(state_dict, config)``; ``config`` holds base_dim, depths,
    kernel_size and variant (None for a non-paper configuration). With ``variant`` given, a
    checkpoint of another variant is an error."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f'no such checkpoint file: {path}')
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # pickle, zip and weights-only errors all mean "not a checkpoint we read"
        raise ValueError(f'{path}: cannot be read as a PyTorch checkpoint ({err.__class__.__name__}: {err})') from None
    sd = extract_state_dict(checkpoint, param_key=param_key, source=path)
    config = infer_config(sd, source=path)
    config['variant'] = variant_of(config)
    if variant is not None:
        wanted = variant_depths(variant)  # also validates the name
        if config['variant'] is None or variant_depths(config['variant']) != wanted:
            reference = GUNet(variant=variant, channels_last=False)
            check_state_dict(sd, reference, source=f'{path} (checked against gUNet-{variant.lower()[-1].upper()})')
    net = GUNet(base_dim=config['base_dim'], depths=config['depths'], kernel_size=config['kernel_size'],
                channels_last=False)
    check_state_dict(sd, net, source=path)
    return sd, config


def build_gunet_from_checkpoint(path, variant=None, channels_last=True, map_location='cpu'):
    """A GUNet in eval mode with the weights of ``path`` (either format) loaded strictly."""
    sd, config = load_gunet_checkpoint(path, variant=variant, map_location=map_location)
    net = GUNet(base_dim=config['base_dim'], depths=config['depths'], kernel_size=config['kernel_size'],
                channels_last=channels_last)
    net.load_state_dict(sd, strict=True)
    return net.eval()
