"""Test gUNet with BasicSR's own test pipeline: dehazed images, per-image PSNR/SSIM in a CSV,
and the means in the log, under results/<name>/.

    python gunet_arch/test.py -opt options/test_gunet_s_sots_indoor.yml
    python -m gunet_arch.test -opt ...
"""
import os.path as osp
import sys

PACKAGE_DIR = osp.dirname(osp.abspath(__file__))

if __name__ == '__main__' and sys.path and osp.abspath(sys.path[0] or '.') == PACKAGE_DIR:
    # See train.py: keep gunet_arch/'s own files from shadowing top-level modules.
    sys.path[0] = osp.dirname(PACKAGE_DIR)


def main():
    # The plugin first: basicsr 1.4.2 cannot even be imported on current torchvision without its fixes.
    # isort: off
    import gunet_arch  # noqa: F401  (registers the plugin and applies the BasicSR fixes)
    from basicsr.test import test_pipeline
    from gunet_arch.distributed_exit import leave_without_interpreter_shutdown
    from gunet_arch.options import output_root
    # isort: on

    with leave_without_interpreter_shutdown():
        test_pipeline(output_root())


if __name__ == '__main__':
    main()
