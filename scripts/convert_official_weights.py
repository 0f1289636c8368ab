#!/usr/bin/env python
"""Convert an official gUNet checkpoint (``{'state_dict': ...}`` with ``module.`` keys) into a
BasicSR checkpoint (``{'params': ...}``) for ``path.pretrain_network_g``; an output name ending
in ``.safetensors`` writes that format.

    python scripts/convert_official_weights.py --input gunet-t.pth --output net_g_gunet_t.pth [--variant t]
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gunet_arch.archs import VARIANTS  # noqa: E402
from gunet_arch.archs.checkpoints import load_gunet_checkpoint, save_weights  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--input', required=True, help='official checkpoint (gunet-t.pth ...)')
    parser.add_argument('--output', required=True, help='BasicSR checkpoint to write')
    parser.add_argument('--variant', choices=list(VARIANTS), help='fail unless the weights are this variant')
    args = parser.parse_args(argv)

    if os.path.abspath(args.input) == os.path.abspath(args.output):
        parser.error('--output must differ from --input')
    try:
        sd, config = load_gunet_checkpoint(args.input, variant=args.variant)
    except (ValueError, FileNotFoundError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    save_weights({'params': sd}, args.output)
    name = f"gUNet-{config['variant'].upper()}" if config['variant'] else f"gUNet (depths {config['depths']})"
    print(f'{name}: {sum(v.numel() for k, v in sd.items() if "running" not in k and "num_batches" not in k):,} '
          f'parameters written to {args.output}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
