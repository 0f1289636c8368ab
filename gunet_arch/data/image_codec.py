"""Image files for the whole package: which names are images, decoding their bytes, bit-depth
scaling, and the colour conversions and crops the datasets and tools share.

Images stay in OpenCV's channel order (BGR, gray or BGRA) and their own integer type until the
crop is taken: converting a full image to RGB float only to keep a 256x256 patch of it would
cost more than decoding it.
"""
import io
import struct

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
    """(height, width) read from the file header alone, or None when it cannot be parsed.
    Pillow's own decompression-bomb limit is lifted for the look: the caller applies its own.
    WebP is read here (Pillow's WebP reader allocates the whole canvas to open a file), and so
    are TIFFs that Pillow cannot open (3-channel float, for one), from their first IFD."""
    from PIL import Image

    webp = _webp_dimensions(buf)
    if webp:
        return webp
    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        with Image.open(io.BytesIO(buf)) as im:
            width, height = im.size
        return height, width
    except Exception:  # noqa: BLE001 - not parsable here; the decoder has the last word
        return _tiff_dimensions(buf)
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def _tiff_dimensions(buf):
    """(height, width) from the ImageLength/ImageWidth tags of a (Big)TIFF's first IFD, or None."""
    order = {b'II': '<', b'MM': '>'}.get(bytes(buf[:2]))
    if order is None or len(buf) < 16:
        return None
    try:
        version = struct.unpack_from(order + 'H', buf, 2)[0]
        if version not in (42, 43):
            return None
        # Classic TIFF: 4-byte offsets, 12-byte entries (value at +8); BigTIFF: 8, 20 (value at +12).
        big = version == 43
        ifd = struct.unpack_from(order + ('Q' if big else 'I'), buf, 8 if big else 4)[0]
        count = struct.unpack_from(order + ('Q' if big else 'H'), buf, ifd)[0]
        start, entry_size, value_at = ifd + (8 if big else 2), (20 if big else 12), (12 if big else 8)
        value_fmt, dims = {3: 'H', 4: 'I', 16: 'Q'}, {}
        for k in range(min(count, 4096)):
            entry = start + k * entry_size
            tag, kind = struct.unpack_from(order + 'HH', buf, entry)
            if tag in (256, 257) and kind in value_fmt:
                dims[tag] = struct.unpack_from(order + value_fmt[kind], buf, entry + value_at)[0]
        return (dims[257], dims[256]) if len(dims) == 2 else None
    except struct.error:  # offsets past the end: a truncated file
        return None


def pixel_limit_error(name, height, width, max_pixels=DEFAULT_MAX_PIXELS, option='--max-pixels'):
    """The ImageTooLargeError for an image of ``height`` x ``width`` pixels (to raise)."""
    return ImageTooLargeError(
        f'{name}: {width}x{height} pixels ({height * width / 1e6:.1f} megapixels) is over the limit of '
        f'{max_pixels / 1e6:g} megapixels; refused before decoding ({option} raises the limit)')


def _webp_dimensions(buf):
    """(height, width) from a WebP file's first chunk (VP8X canvas, VP8 or VP8L frame header)."""
    chunk = buf[12:16]
    if chunk == b'VP8X' and len(buf) >= 30:
        return int.from_bytes(buf[27:30], 'little') + 1, int.from_bytes(buf[24:27], 'little') + 1
    if chunk == b'VP8 ' and len(buf) >= 30 and buf[23:26] == b'\x9d\x01\x2a':
        return int.from_bytes(buf[28:30], 'little') & 0x3FFF, int.from_bytes(buf[26:28], 'little') & 0x3FFF
    if chunk == b'VP8L' and len(buf) >= 25 and buf[20] == 0x2F:
        bits = int.from_bytes(buf[21:25], 'little')
        return ((bits >> 14) & 0x3FFF) + 1, (bits & 0x3FFF) + 1
    return None


def check_pixel_limit(buf, name, max_pixels=DEFAULT_MAX_PIXELS, option='--max-pixels'):
    """Refuse ``buf`` before any pixel is decoded when its header claims more than
    ``max_pixels`` pixels: a small file can claim gigapixels (a decompression bomb)."""
    dims = image_dimensions(buf) if max_pixels else None
    if dims and dims[0] * dims[1] > max_pixels:
        raise pixel_limit_error(name, dims[0], dims[1], max_pixels, option)
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


# File signatures of the formats OpenCV decodes that the datasets meet. The content decides what a
# file is, not its name: a PNG saved as .jpg is a PNG.
_SIGNATURES = ((b'\x89PNG\r\n\x1a\n', 'PNG'), (b'\xff\xd8\xff', 'JPEG'), (b'II*\x00', 'TIFF'), (b'MM\x00*', 'TIFF'),
               (b'II+\x00', 'TIFF'), (b'MM\x00+', 'TIFF'), (b'BM', 'BMP'), (b'GIF87a', 'GIF'), (b'GIF89a', 'GIF'))
# The formats of IMAGE_EXTENSIONS: what the datasets and prepare_lmdb take.
TRAINING_FORMATS = ('PNG', 'JPEG', 'BMP', 'TIFF', 'WEBP')
# Formats OpenCV would decode that are refused as training images, and why.
REFUSED_FORMATS = {'GIF': 'a GIF image: GIF keeps at most 256 colours a frame, too few for haze gradients, so it is '
                          'not used for training (convert it to PNG)'}


def image_format(buf):
    """'PNG', 'JPEG', 'TIFF', 'WEBP', 'BMP' or 'GIF' from the first bytes of a file, else None."""
    head = bytes(buf[:12])
    if head[:4] == b'RIFF' and head[8:12] == b'WEBP':
        return 'WEBP'
    for signature, name in _SIGNATURES:
        if head.startswith(signature):
            return name
    return None


def decode_training_image(buf, name, max_pixels=DEFAULT_MAX_PIXELS, option='max_pixels'):
    """:func:`decode_image` for files from outside: only the formats of ``TRAINING_FORMATS``,
    recognised by their content, and only with a header that can be read, so that the pixel
    limit (``max_pixels``; 0 for none) always applies before anything is decoded."""
    if not buf:
        raise ImageDecodeError(f'Empty image file: {name}')
    kind = image_format(buf)
    if kind in REFUSED_FORMATS:
        raise ImageDecodeError(f'{name}: {REFUSED_FORMATS[kind]}')
    if kind not in TRAINING_FORMATS:
        raise ImageDecodeError(f'{name}: not an image file (its content is no PNG, JPEG, BMP, TIFF or WebP '
                               f'whatever its name says; it starts with {bytes(buf[:8])!r})')
    if max_pixels and check_pixel_limit(buf, name, max_pixels, option) is None:
        raise ImageDecodeError(f'Unreadable or truncated image file (its {kind} header cannot be read): {name}')
    return decode_image(buf, name, 0)
