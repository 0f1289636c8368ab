"""Image files for the whole package: which names are images, decoding their bytes, bit-depth
scaling, and the colour conversions and crops the datasets and tools share.

Images stay in OpenCV's channel order (BGR, gray or BGRA) and their own integer type until the
crop is taken: converting a full image to RGB float only to keep a 256x256 patch of it would
cost more than decoding it.
"""
import io

import cv2
import numpy as np

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')
# What one unit of each pixel type means: 16-bit PNGs span 0..65535, not 0..255.
FULL_SCALE = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}


# Above this many pixels an image is refused before it is decoded (--max-pixels, max_pixels).
DEFAULT_MAX_PIXELS = 300_000_000


class ImageDecodeError(ValueError):
    """An image file (or stored entry) that cannot be decoded."""


class ImageTooLargeError(ImageDecodeError):
    """An image whose header claims more pixels than the limit allows."""


def image_dimensions(buf):
    """(height, width) read from the file header alone, or None when Pillow cannot parse it.
    Pillow's own decompression-bomb limit is lifted for the look: the caller applies its own."""
    from PIL import Image

    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        with Image.open(io.BytesIO(buf)) as im:
            width, height = im.size
        return height, width
    except Exception:  # noqa: BLE001 - not parsable here; the decoder has the last word
        return None
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def check_pixel_limit(buf, name, max_pixels=DEFAULT_MAX_PIXELS, option='--max-pixels'):
    """Refuse ``buf`` before any pixel is decoded when its header claims more than
    ``max_pixels`` pixels: a small file can claim gigapixels (a decompression bomb)."""
    dims = image_dimensions(buf) if max_pixels else None
    if dims and dims[0] * dims[1] > max_pixels:
        raise ImageTooLargeError(
            f'{name}: {dims[1]}x{dims[0]} pixels ({dims[0] * dims[1] / 1e6:.1f} megapixels) is over the limit of '
            f'{max_pixels / 1e6:g} megapixels; refused before decoding ({option} raises the limit)')
    return dims


def is_image_file(name):
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _truncated_jpeg(buf):
    # Some libjpeg builds return a grey-filled image for a cut-off JPEG instead of failing; a
    # complete one ends its last scan (SOS marker) with an end-of-image marker.
    return buf[:2] == b'\xff\xd8' and buf.rfind(b'\xff\xd9') < buf.rfind(b'\xff\xda')


def decode_bytes(buf, name, max_pixels=DEFAULT_MAX_PIXELS, option='--max-pixels'):
    """Decode image file bytes as OpenCV reads them, whatever their sample type; refuse more
    than ``max_pixels`` pixels before decoding (``option`` names the setting in the error)."""
    if not buf:
        raise ImageDecodeError(f'Empty image file: {name}')
    check_pixel_limit(buf, name, max_pixels, option)
    if _truncated_jpeg(buf):
        raise ImageDecodeError(f'Truncated image file (JPEG ends before its last scan does): {name}')
    try:
        img = cv2.imdecode(np.frombuffer(buf, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error:
        img = None
    if img is None:
        raise ImageDecodeError(f'Unreadable or truncated image file: {name}')
    return img


def decode_image(buf, name, max_pixels=DEFAULT_MAX_PIXELS, option='max_pixels'):
    """Decode image file bytes as the datasets take them (BGR/gray/BGRA, uint8/uint16)."""
    return check_pixels(decode_bytes(buf, name, max_pixels, option), name)


def check_pixels(img, name, dtypes=tuple(FULL_SCALE), channels=(1, 3, 4)):
    if img.dtype not in dtypes:
        raise ImageDecodeError(f'Unsupported pixel type {img.dtype} (expected '
                               f'{", ".join(map(str, dtypes))}) in {name}')
    if img.ndim not in (2, 3) or min(img.shape[:2]) < 1:
        raise ImageDecodeError(f'Unsupported image layout {img.shape} in {name}')
    if img.ndim == 3 and img.shape[2] not in channels:
        raise ImageDecodeError(f'Unsupported channel count {img.shape[2]} in {name}')
    return img


def to_bgr(img):
    """Three channels in OpenCV order: gray is repeated, alpha is dropped."""
    if img.ndim == 2 or img.shape[2] == 1:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    return img


def to_rgb_float(img):
    """float32 RGB in [0, 1] from an image in OpenCV order, scaled by its own bit depth."""
    scale = FULL_SCALE[img.dtype]
    # Flips and rot90 leave strided views; the channel reversal and the cast make one copy.
    img = to_bgr(np.ascontiguousarray(img))
    return img[..., ::-1].astype(np.float32) * np.float32(1.0 / scale)


def to_float(img):
    """Samples scaled to [0, 1] as float32, channels as they are; float images are clipped."""
    if img.dtype in FULL_SCALE:
        return img.astype(np.float32) / FULL_SCALE[img.dtype]
    return np.clip(img.astype(np.float32), 0.0, 1.0)


def from_float(img, dtype):
    """Inverse of :func:`to_float`: clip, scale and round into ``dtype``."""
    img, dtype = np.clip(img, 0.0, 1.0), np.dtype(dtype)
    if dtype in FULL_SCALE:
        return np.round(img * FULL_SCALE[dtype]).astype(dtype)
    return img.astype(np.float32)


def centre_crop(img, height, width):
    top, left = (img.shape[0] - height) // 2, (img.shape[1] - width) // 2
    return img[top:top + height, left:left + width, ...]

