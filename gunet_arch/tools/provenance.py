"""Which libraries produced a result: the versions that the metrics CSVs and the results gallery
record, so that two evaluations that disagree can be traced to a different decoder or build.

The images a test scores are decoded by OpenCV (the datasets' codec, with the JPEG and PNG
libraries built into it), and by Pillow where OpenCV cannot; the network runs in torch under
BasicSR. A JPEG decoder of another version can move PSNR by hundredths of a dB on OTS/SOTS-outdoor.
"""
import platform
import re
import sys
from collections import OrderedDict


def _package_version(module_name, dist_name=None):
    module = sys.modules.get(module_name)
    version = getattr(module, '__version__', None) if module is not None else None
    if version:
        return str(version)
    try:
        from importlib import metadata

        return metadata.version(dist_name or module_name)
    except Exception:  # noqa: BLE001 - not installed, or installed without metadata
        return None


def opencv_codecs(build_information):
    """``{'jpeg': 'libjpeg-turbo 3.1.2-70', 'png': 'libpng 1.6.58'}`` from the Media I/O lines of
    ``cv2.getBuildInformation()`` (``JPEG: build-libjpeg-turbo (ver 3.1.2-70)``, or a system
    library's path ``/usr/lib/libjpeg.so (ver 80)``)."""
    codecs = {}
    for key in ('JPEG', 'PNG'):
        match = re.search(rf'^\s*{key}:\s*(.+?)\s*$', build_information, re.MULTILINE)
        if not match or match.group(1) in ('NO', 'YES'):
            continue
        text = match.group(1)
        found = re.match(r'(\S+)\s+\(ver\s+([^)]+)\)', text)
        if found:
            library = found.group(1).rsplit('/', 1)[-1]
            library = re.sub(r'^build-', '', library)
            if library == 'build':  # OpenCV's own copy of the library
                library = f'lib{key.lower()} (bundled)'
            library = re.sub(r'\.(so|dylib|dll|lib|a)(\.[\d.]+)?$', '', library)
            text = f'{library} {found.group(2).strip()}'
        codecs[key.lower()] = text
    return codecs


def pillow_jpeg(features):
    """Pillow's JPEG library: libjpeg-turbo's own version when Pillow was built with it, else the
    libjpeg API version (``jpg``: ``6.2``, ``8.0``, ``9.x``)."""
    try:
        if features.check_feature('libjpeg_turbo'):
            return f'libjpeg-turbo {features.version("libjpeg_turbo")}'
    except (ValueError, AttributeError):  # Pillow older than 8.0 has no such feature
        pass
    try:
        version = features.version('jpg')
    except (ValueError, AttributeError):
        version = None
    return f'libjpeg {version}' if version else None


def library_versions():
    """Ordered ``{name: version}`` of what computed and decoded a result; a library that is not
    installed is left out. One function, so the CSVs and the gallery always say the same."""
    versions = OrderedDict()
    versions['python'] = platform.python_version()
    versions['torch'] = _package_version('torch')
    try:
        import torch

        if torch.version.cuda:
            versions['cuda'] = torch.version.cuda
            if torch.backends.cudnn.is_available():
                versions['cudnn'] = str(torch.backends.cudnn.version())
    except ImportError:
        pass
    versions['basicsr'] = _package_version('basicsr')
    import gunet_arch

    versions['gunet_arch'] = gunet_arch.__version__
    versions['numpy'] = _package_version('numpy')
    try:
        import cv2

        versions['opencv'] = cv2.__version__
        for codec, text in opencv_codecs(cv2.getBuildInformation()).items():
            versions[f'opencv-{codec}'] = text
    except ImportError:
        pass
    try:
        import PIL
        from PIL import features

        versions['pillow'] = PIL.__version__
        versions['pillow-jpeg'] = pillow_jpeg(features)
    except ImportError:
        pass
    return OrderedDict((k, v) for k, v in versions.items() if v)


def versions_line(versions=None):
    """``torch 2.14.1; basicsr 1.4.2; ...``: one line, without commas, so that a CSV reader sees
    it as one field."""
    versions = library_versions() if versions is None else versions
    return '; '.join(f'{name} {value}' for name, value in versions.items()).replace(',', ' ')


CSV_COMMENT = '# versions: '


def csv_comment(versions=None):
    """The line that ends every ``*_metrics.csv``: a comment, which readers skip with
    ``comment='#'`` (pandas, numpy) or by dropping lines that start with '#'."""
    return CSV_COMMENT + versions_line(versions)


def parse_csv_comment(line):
    """``{name: version}`` back from :func:`csv_comment`'s line; ``{}`` for any other line."""
    if not line.startswith(CSV_COMMENT):
        return {}
    pairs = (item.strip().split(' ', 1) for item in line[len(CSV_COMMENT):].split(';') if item.strip())
    return OrderedDict((p[0], p[1] if len(p) > 1 else '') for p in pairs)
