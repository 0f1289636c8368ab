"""Reading gUNet weights, whichever program saved them. The model, inference, conversion and
ONNX export all read checkpoints through this module.

* BasicSR: ``{'params': sd}`` and/or ``{'params_ema': sd}``.
* Official gUNet training: ``{'state_dict': sd, 'optimizer': ..., ...}`` where ``sd`` comes from a
  DistributedDataParallel model, so every key starts with ``module.``.

Files are read with ``weights_only=True``: a checkpoint is data, and loading one never runs code.
The variant is read off the weights (blocks per stage, width, kernel size), and the whole state
dict is checked against the network it describes before anything is loaded, so a wrong file fails
with the first offending key instead of a half-loaded model.
"""
import os
import re

import torch

from .gunet_arch import GUNet
from .variants import get_variant, network_config, variant_of

PARAM_KEYS = ('params_ema', 'params', 'state_dict')
_BLOCK_KEY = re.compile(r'^layers\.(\d+)\.blocks\.(\d+)\.')
_DDP_PREFIX = 'module.'


def strip_module_prefix(state_dict):
    """``state_dict`` without the ``module.`` that (Distributed)DataParallel puts before each key."""
    return {(k[len(_DDP_PREFIX):] if k.startswith(_DDP_PREFIX) else k): v for k, v in state_dict.items()}


def _refusal(path, err):
    text = f'{err.__class__.__name__}: {err}'
    if 'weights_only' in text.lower() or 'unsupported global' in text.lower():
        return (f'{path}: refused: the file holds Python objects besides tensors, and unpickling them could run '
                'code. Only weights are loaded; re-save the weights alone (torch.save of a state dict, or '
                '.safetensors)')
    return f'{path}: cannot be read as a PyTorch or safetensors checkpoint ({text})'


def read_checkpoint(path, map_location='cpu'):
    """The weights saved in ``path`` (``.safetensors``, or a torch file loaded with
    ``weights_only=True``), as a dict. Nothing in the file can run code."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f'no such checkpoint file: {path}')
    try:
        if str(path).endswith('.safetensors'):
            from safetensors.torch import load_file

            return _nest(load_file(path, device=str(map_location)))
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # pickle, zip, header and weights-only errors: none of them is loadable
        raise ValueError(_refusal(path, err)) from None


def _nest(flat):
    """safetensors holds one flat dict: ``params.<name>`` entries go back under ``params``."""
    groups = {key.split('.', 1)[0] for key in flat}
    if not groups <= set(PARAM_KEYS):
        return flat  # a bare state dict
    nested = {group: {} for group in groups}
    for key, tensor in flat.items():
        group, name = key.split('.', 1)
        nested[group][name] = tensor
    return nested


def save_weights(weights, path):
    """Write ``{param_key: state_dict}`` to ``path`` safely (``gunet_arch.atomic``): as
    ``.safetensors`` when the name says so, else with ``torch.save``."""
    from gunet_arch.atomic import atomic_path

    with atomic_path(path) as tmp:
        if str(path).endswith('.safetensors'):
            from safetensors.torch import save_file

            flat = {f'{group}.{name}': t.detach().cpu().contiguous() for group, sd in weights.items()
                    for name, t in sd.items()}
            save_file(flat, tmp)
        else:
            torch.save(weights, tmp)


def extract_state_dict(checkpoint, param_key=None, source='checkpoint', log=None):
    """The network state dict inside ``checkpoint``, with any ``module.`` prefix removed.

    Without ``param_key`` the first of ``PARAM_KEYS`` present is taken (or the top level, for a
    bare state dict). A ``param_key`` the file lacks falls back to ``params`` or ``state_dict``,
    as BasicSR's ``param_key_g: params_ema`` users expect of a checkpoint saved without EMA."""
    if not isinstance(checkpoint, dict):
        raise ValueError(f'{source}: expected a dict of tensors, got {type(checkpoint).__name__}')
    if param_key is not None and param_key not in checkpoint:
        fallback = next((k for k in ('params', 'state_dict') if k in checkpoint), None)
        if fallback is None:
            raise ValueError(f'{source}: no {param_key!r} entry (found: {", ".join(map(str, checkpoint))})')
        if log is not None:
            log(f'Loading: {param_key} does not exist in {source}, use {fallback}.')
        param_key = fallback
    if param_key is not None:
        sd = checkpoint[param_key]
    else:
        sd = next((checkpoint[k] for k in PARAM_KEYS if isinstance(checkpoint.get(k), dict)), checkpoint)
    if not isinstance(sd, dict) or not sd or not all(torch.is_tensor(v) for v in sd.values()):
        raise ValueError(f'{source}: not a gUNet checkpoint (no state dict of tensors under '
                         f'{"/".join(PARAM_KEYS)} or at the top level)')
    return strip_module_prefix(sd)


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
    return network_config(base_dim=sd['inconv.proj.weight'].shape[0], depths=depths,
                          kernel_size=sd['layers.0.blocks.0.conv.Wv.1.weight'].shape[-1])


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
    kernel_size and variant (None for a configuration that is no named variant). With ``variant``
    given, a checkpoint of another variant is an error."""
    sd = extract_state_dict(read_checkpoint(path, map_location), param_key=param_key, source=path)
    config = infer_config(sd, source=path)
    config['variant'] = variant_of(config)
    if variant is not None:
        wanted = get_variant(variant)  # also validates the name
        if config['variant'] != wanted.name:
            reference = GUNet(variant=wanted.name, channels_last=False)
            check_state_dict(sd, reference, source=f'{path} (checked against gUNet-{wanted.name.upper()})')
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
