"""ONNX export of the deployed gUNet with dynamic batch, height and width."""
import torch

from .atomic import atomic_path

# Below this side length the padding switches from reflect to replicate, a branch an exported
# graph cannot hold; the exported model is specified for sides >= this.
MIN_EXPORT_SIDE = 24


def export_onnx(net, path, opset=18, example_size=(61, 83)):
    """Export ``net`` (a GUNet, deployed first if it is not) to ``path``.

    The graph takes ``image`` (N x 3 x H x W, [0, 1]) and returns ``dehazed`` (same shape,
    unclamped), padding and cropping inside as the PyTorch model does, for any H, W >= 24.
    The example size is deliberately not a multiple of 8 so that the padding is traced as a
    function of the input size rather than specialised away."""
    net = net.eval()
    if not getattr(net, 'deployed', False):
        net.deploy()
    side = max(MIN_EXPORT_SIDE, net.min_size)
    x = torch.rand(2, 3, max(side, example_size[0]), max(side, example_size[1]))
    dims = {
        0: torch.export.Dim('batch', min=1, max=1024),
        2: torch.export.Dim('height', min=side, max=16384),
        3: torch.export.Dim('width', min=side, max=16384),
    }
    with atomic_path(path) as tmp, torch.no_grad():
        program = torch.onnx.export(
            net, (x, ),
            tmp,
            input_names=['image'],
            output_names=['dehazed'],
            dynamic_shapes={'x': dims},
            opset_version=opset,
            dynamo=True,
            external_data=False,
            verbose=False)
        if program is None:
            raise RuntimeError(f'ONNX export produced no program for {path}')
    return path
