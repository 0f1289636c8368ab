"""Train gUNet with BasicSR's own trainer.

    python gunet_arch/train.py -opt options/train_gunet_s_its.yml [--auto_resume] [--debug]
    torchrun --nproc_per_node=4 gunet_arch/train.py -opt ... --launcher pytorch
    python -m torch.distributed.launch --nproc_per_node=4 gunet_arch/train.py -opt ... --launcher pytorch
    python -m gunet_arch.train -opt ...
"""
import os.path as osp
import sys

PACKAGE_DIR = osp.dirname(osp.abspath(__file__))

if __name__ == '__main__' and sys.path and osp.abspath(sys.path[0] or '.') == PACKAGE_DIR:
    # Run as a file, Python puts gunet_arch/ itself first on sys.path, where this file and its
    # siblings (test.py, options.py, data/, models/) would shadow top-level modules. Put the
    # project there.
    sys.path[0] = osp.dirname(PACKAGE_DIR)


def main():
    # The plugin first: basicsr 1.4.2 cannot even be imported on current torchvision without its fixes.
    # isort: off
    import gunet_arch  # noqa: F401  (registers the plugin and applies the BasicSR fixes)
    from basicsr.train import train_pipeline
    from gunet_arch.distributed_exit import leave_without_interpreter_shutdown
    from gunet_arch.options import output_root
    # isort: on

    with leave_without_interpreter_shutdown():
        train_pipeline(output_root())


if __name__ == '__main__':
    main()
