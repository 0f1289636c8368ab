"""Reading and writing photographs as they are: bit depth, gray/colour, alpha and orientation.

The datasets' codec (OpenCV) decodes the pixels: it keeps 16-bit samples, which Pillow cannot
for colour images. Pillow decodes what OpenCV cannot, and reads the header for what OpenCV
hides: the EXIF orientation (``IMREAD_UNCHANGED`` ignores it) and whether a PNG was grayscale
with alpha (OpenCV expands that to BGRA).
Arrays are in OpenCV's channel order: gray H x W, BGR or BGRA H x W x C.
"""
import io
import os

import cv2
import numpy as np

from ..atomic import atomic_write_bytes
from ..data.image_codec import FULL_SCALE, ImageDecodeError, check_pixels, decode_bytes, from_float, to_float

EXIF_ORIENTATION_TAG = 0x0112
_GRAY_MODES = ('1', 'L', 'LA', 'La', 'I', 'F', 'I;16', 'I;16B', 'I;16L', 'I;16N')


def _header(buf):
    """(orientation, is_gray, has_alpha) from the file header; (1, None, None) when Pillow
    cannot tell."""
    try:
        from PIL import Image
    except ImportError:  # orientation then stays as stored
        return 1, None, None
    try:
        with Image.open(io.BytesIO(buf)) as im:
            orientation = int(im.getexif().get(EXIF_ORIENTATION_TAG, 1) or 1)
            return orientation, im.mode in _GRAY_MODES, im.mode in ('LA', 'La', 'RGBA', 'RGBa', 'PA')
    except Exception:  # noqa: BLE001 - a header Pillow cannot parse is not an error for OpenCV
        return 1, None, None


def _decode_with_pillow(path):
    from PIL import Image
    with Image.open(path) as im:  # by name, so that its errors name the file
        im.load()
        if im.mode in ('I;16', 'I;16B', 'I;16L', 'I;16N', 'I'):
            return np.asarray(im).astype(np.uint16)
        if im.mode in ('1', 'L', 'P') and 'transparency' not in im.info:
            return np.asarray(im.convert('L'))
        if im.mode == 'LA':
            return np.asarray(im)  # gray + alpha, H x W x 2
        rgba = im.mode in ('RGBA', 'PA', 'P')
        arr = np.asarray(im.convert('RGBA' if rgba else 'RGB'))
        return cv2.cvtColor(arr, cv2.COLOR_RGBA2BGRA if rgba else cv2.COLOR_RGB2BGR)


def apply_exif_orientation(img, orientation):
    """Turn ``img`` the way image viewers do for EXIF ``orientation`` (1..8)."""
    ops = {
        1: lambda a: a,
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: np.swapaxes(a, 0, 1),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: np.swapaxes(a[::-1, ::-1], 0, 1),
        8: lambda a: np.rot90(a, 1),
    }
    return np.ascontiguousarray(ops.get(orientation, ops[1])(img))


def read_image(path):
    """The image at ``path`` as stored (uint8/uint16/float32; gray, gray+alpha, BGR or BGRA),
    turned upright. Decoded by the datasets' codec; Pillow decodes what OpenCV cannot."""
    if not os.path.isfile(path):
        raise ImageDecodeError(f'No such image file: {path}')
    with open(path, 'rb') as f:
        buf = f.read()
    orientation, is_gray, has_alpha = _header(buf)
    try:
        img = decode_bytes(buf, path)
        if has_alpha and (img.ndim == 2 or img.shape[2] not in (2, 4)):  # gray+alpha TIFF; Pillow keeps it
            raise ImageDecodeError(f'OpenCV drops the alpha channel of {path}')
    except ImageDecodeError as failure:
        try:
            img = _decode_with_pillow(path)
        except Exception as err:  # noqa: BLE001 - every decoder failure means the same to the caller
            raise ImageDecodeError(f'{failure} (Pillow: {err.__class__.__name__}: {err})') from None
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    check_pixels(img, path, dtypes=(*FULL_SCALE, np.dtype(np.float32)), channels=(2, 3, 4))
    if is_gray and img.ndim == 3 and img.shape[2] in (3, 4):
        # A gray(+alpha) file that OpenCV expanded to BGR(A): keep it gray, with its alpha.
        img = img[..., 0] if img.shape[2] == 3 else np.dstack([img[..., 0], img[..., 3]])
    return apply_exif_orientation(img, orientation)


def encode_image(img, ext):
    """``img`` encoded for extension ``ext`` ('.png', ...). A gray+alpha image is written as
    PNG/TIFF gray with alpha where the format has it, else as BGRA."""
    ext = ext.lower()
    if img.ndim == 3 and img.shape[2] == 2:
        if ext in ('.png', '.tif', '.tiff'):
            return _encode_gray_alpha(img, ext)
        img = np.dstack([img[..., 0]] * 3 + [img[..., 1]])  # formats without gray+alpha get BGRA
    if ext in ('.jpg', '.jpeg', '.webp', '.bmp') and img.dtype != np.uint8:
        img = from_float(to_float(img), np.uint8)
    # WebP quality 101 is lossless, so alpha and detail survive.
    params = {'.jpg': [cv2.IMWRITE_JPEG_QUALITY, 95], '.jpeg': [cv2.IMWRITE_JPEG_QUALITY, 95],
              '.webp': [cv2.IMWRITE_WEBP_QUALITY, 101]}.get(ext, [])
    ok, buf = cv2.imencode(ext, img, params)
    if not ok:
        raise ValueError(f'cannot encode a {img.dtype} {img.shape} image as {ext}')
    return buf.tobytes()


def _encode_gray_alpha(img, ext):
    """OpenCV cannot write gray+alpha; Pillow can for 8-bit. 16-bit gray+alpha goes through
    OpenCV as BGRA (the colour channels stay equal, so it still looks gray)."""
    if img.dtype == np.uint8:
        from PIL import Image
        out = io.BytesIO()
        Image.fromarray(img, 'LA').save(out, format='PNG' if ext == '.png' else 'TIFF')
        return out.getvalue()
    bgra = np.dstack([img[..., 0]] * 3 + [img[..., 1]])
    ok, buf = cv2.imencode(ext, bgra)
    if not ok:
        raise ValueError(f'cannot encode a {img.dtype} gray+alpha image as {ext}')
    return buf.tobytes()


def write_image(path, img):
    """Encode ``img`` for ``path``'s extension and write it atomically."""
    atomic_write_bytes(path, encode_image(img, os.path.splitext(path)[1]))
