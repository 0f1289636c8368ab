from setuptools import find_packages, setup

with open('README.md', encoding='utf-8') as f:
    long_description = f.read()

setup(
    name='gunet-basicsr',
    version='0.1.0',
    description='gUNet image dehazing as a BasicSR plugin',
    long_description=long_description,
    long_description_content_type='text/markdown',
    packages=find_packages(include=['gunet_arch', 'gunet_arch.*']),
    python_requires='>=3.8',
    install_requires=[
        'basicsr>=1.4.2',
        'torch',
        'torchvision',
        'opencv-python',
        'lmdb',
        'pyyaml',
        'addict',
        'numpy',
        'tqdm',
        'Pillow',
        'safetensors',
        'xxhash',
    ],
    extras_require={
        'test': ['pytest', 'pytest-xdist', 'pytest-timeout', 'scikit-image', 'ruff==0.17.6'],
        'deploy': ['onnx', 'onnxscript', 'onnxruntime'],
        # The fastest CPU runtime of scripts/inference.py --backend (with the deploy extra's export).
        'openvino': ['openvino>=2024.0', 'onnx', 'onnxscript'],
        # The demo hazes the photographs that ship with scikit-image.
        'demo': ['scikit-image'],
        # make test-browser: Playwright drives Debian's chromium (no browser download).
        'browser': ['playwright', 'pytest', 'pytest-timeout', 'scikit-image'],
    },
    license='MIT',
)
