"""Train gUNet with BasicSR's own trainer.

    python gunet_arch/train.py -opt options/train_gunet_s_its.yml [--auto_resume] [--debug]
    torchrun --nproc_per_node=4 gunet_arch/train.py -opt ... --launcher pytorch
    python -m torch.distributed.launch --nproc_per_node=4 gunet_arch/train.py -opt ... --launcher pytorch
    python -m gunet_arch.train -opt ...
"""
import os.path as osp
import sys

PACKAGE_DIR = osp.dirname(osp.abspath(__file__))
PROJECT_ROOT = osp.dirname(PACKAGE_DIR)

if __name__ == '__main__' and sys.path and osp.abspath(sys.path[0] or '.') == PACKAGE_DIR:
    # Run as a file, Python puts gunet_arch/ itself first on sys.path, where this file and its
    # siblings (test.py, data/, models/) would shadow top-level modules. Put the project there.
    sys.path[0] = PROJECT_ROOT


def output_root():
    """Where experiments/, results/ and relative data paths live: the project checkout, or the
    working directory when the package is installed without one."""
    if osp.isfile(osp.join(PROJECT_ROOT, 'setup.py')) or osp.isdir(osp.join(PROJECT_ROOT, 'options')):
        return PROJECT_ROOT
    return osp.abspath('.')


def main():
    import gunet_arch  # noqa: F401  (registers the plugin and applies the BasicSR fixes)
    from basicsr.train import train_pipeline

    train_pipeline(output_root())


if __name__ == '__main__':
    main()
