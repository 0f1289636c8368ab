"""Decoding image bytes, and the colour and range conversions the datasets need.

Images stay in OpenCV's channel order (BGR, gray or BGRA) and their own integer type until the
crop is taken: converting a full image to RGB float only to keep a 256x256 patch of it would
cost more than decoding it.
"""
import cv2
import numpy as np

# What one unit of each pixel type means: 16-bit PNGs span 0..65535, not 0..255.
_FULL_SCALE = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}


class ImageDecodeError(ValueError):
    """An image file (or stored entry) that cannot be decoded."""


def _truncated_jpeg(buf):
    # Some libjpeg builds return a grey-filled image for a cut-off JPEG instead of failing; a
    # complete one ends its last scan (SOS marker) with an end-of-image marker.
    return buf[:2] == b'\xff\xd8' and buf.rfind(b'\xff\xd9') < buf.rfind(b'\xff\xda')


def decode_image(buf, name):
    """Decode image file bytes as OpenCV reads them (BGR/gray/BGRA, uint8/uint16)."""
    if not buf:
        raise ImageDecodeError(f'Empty image file: {name}')
    if _truncated_jpeg(buf):
        raise ImageDecodeError(f'Truncated image file (JPEG ends before its last scan does): {name}')
    img = cv2.imdecode(np.frombuffer(buf, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ImageDecodeError(f'Unreadable or truncated image file: {name}')
    check_pixels(img, name)
    return img


def check_pixels(img, name):
    if img.dtype not in _FULL_SCALE:
        raise ImageDecodeError(f'Unsupported pixel type {img.dtype} (expected 8 or 16 bit) in {name}')
    if img.ndim == 3 and img.shape[2] not in (1, 3, 4):
        raise ImageDecodeError(f'Unsupported channel count {img.shape[2]} in {name}')


def to_bgr(img):
    """Three channels in OpenCV order: gray is repeated, alpha is dropped."""
    if img.ndim == 2 or img.shape[2] == 1:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    return img


def to_rgb_float(img):
    """float32 RGB in [0, 1] from an image in OpenCV order, scaled by its own bit depth."""
    scale = _FULL_SCALE[img.dtype]
    # Flips and rot90 leave strided views; the channel reversal and the cast make one copy.
    img = to_bgr(np.ascontiguousarray(img))
    return img[..., ::-1].astype(np.float32) * np.float32(1.0 / scale)


def image_size(img):
    """(height, width) of an array image."""
    return img.shape[0], img.shape[1]
