#!/usr/bin/env python
"""Export a gUNet checkpoint (BasicSR or official format) to ONNX, in its deployed form.

    python scripts/export_onnx.py --weights net_g_gunet_t.pth --output gunet.onnx

The model takes ``image`` N x 3 x H x W in [0, 1] (RGB, any H, W >= 24) and returns ``dehazed``
of the same shape, unclamped: clamp to [0, 1] before saving. Needs the ``deploy`` extra
(``pip install -e .[deploy]``: onnx, onnxscript, onnxruntime).

Tracing the network for dynamic image sizes takes 5-20 s on a small CPU, whatever the weights:
the trace is kept per architecture in a cache folder ($GUNET_CACHE_DIR, default
~/.cache/gunet-basicsr), so exporting other weights of the same variant takes a second or two.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gunet_arch.archs import VARIANTS  # noqa: E402
from gunet_arch.archs.checkpoints import build_gunet_from_checkpoint  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--weights', required=True, help='checkpoint: BasicSR (params/params_ema) or official')
    parser.add_argument('--output', required=True, help='ONNX file to write')
    parser.add_argument('--variant', choices=list(VARIANTS), help='fail unless the weights are this variant')
    parser.add_argument('--opset', type=int, default=18)
    parser.add_argument('--check', action='store_true', help='compare onnxruntime with PyTorch after export')
    args = parser.parse_args(argv)

    try:
        net = build_gunet_from_checkpoint(args.weights, variant=args.variant)
    except (ValueError, FileNotFoundError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    try:
        from gunet_arch.export import export_onnx
        export_onnx(net.deploy(), args.output, opset=args.opset)
    except ImportError as err:
        print(f'error: ONNX export needs the deploy extra (pip install -e .[deploy]): {err}', file=sys.stderr)
        return 1
    print(f'wrote {args.output}')
    if args.check:
        import numpy as np
        import onnxruntime as ort
        import torch

        session = ort.InferenceSession(args.output, providers=['CPUExecutionProvider'])
        for shape in ((1, 3, 64, 64), (1, 3, 77, 101)):
            x = torch.rand(shape)
            with torch.no_grad():
                ref = net(x).numpy()
            diff = float(np.abs(session.run(None, {'image': x.numpy()})[0] - ref).max())
            print(f'onnxruntime vs PyTorch at {shape[2]}x{shape[3]}: max |diff| {diff:.2e}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
