"""Reading and writing photographs as they are: bit depth, gray/colour, alpha and orientation.

The datasets' codec (OpenCV) decodes the pixels: it keeps 16-bit samples, which Pillow cannot
for colour images. Pillow decodes what OpenCV cannot, and reads the header for what OpenCV
hides: the EXIF orientation (``IMREAD_UNCHANGED`` ignores it), whether a PNG was grayscale
with alpha (OpenCV expands that to BGRA) and how many frames an animation has (OpenCV decodes
the first). Files are untrusted: the header's size is checked against ``max_pixels`` before any
pixel is decoded, whichever decoder then runs.
Arrays are in OpenCV's channel order: gray H x W, BGR or BGRA H x W x C.
"""
import contextlib
import io
import os
import re
import warnings
from dataclasses import dataclass

import cv2
import numpy as np

from ..atomic import atomic_write_bytes
from ..data.image_codec import (
    DEFAULT_MAX_PIXELS,
    FULL_SCALE,
    IMAGE_EXTENSIONS,
    ImageDecodeError,
    ImageTooLargeError,
    check_pixel_limit,
    check_pixels,
    decode_bytes,
    from_float,
    pixel_limit_error,
    to_float,
)

EXIF_ORIENTATION_TAG = 0x0112
_GRAY_MODES = ('1', 'L', 'LA', 'La', 'I', 'F', 'I;16', 'I;16B', 'I;16L', 'I;16N')
# GIF is read (its first frame) and written here only: the datasets' codec has no use for it.
PHOTO_EXTENSIONS = (*IMAGE_EXTENSIONS, '.gif')


def is_photo_file(name):
    """Whether inference reads ``name``: the datasets' formats, and GIF."""
    return name.lower().endswith(PHOTO_EXTENSIONS)


def shown(path):
    """``path`` safe to print anywhere: a name that is not UTF-8 (its bytes kept in surrogates by
    ``os.fsdecode``) shows those bytes as ``\\xe9`` escapes instead of failing to encode."""
    return os.fsencode(path).decode('utf-8', 'backslashreplace')


@dataclass
class ImageHeader:
    """What Pillow reads from a file's header without decoding it (defaults: it could not)."""
    orientation: int = 1
    is_gray: bool = None
    has_alpha: bool = None
    frames: int = 1
    format: str = None  # Pillow's name for it: 'PNG', 'JPEG', 'GIF', ...


@contextlib.contextmanager
def _quiet_pillow():
    """A broken file's complaints (a truncated TIFF directory, corrupt EXIF) come back as the
    decoder's error, naming the file; as Python warnings they would only clutter a run's output."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        yield


def read_header(buf):
    """The ImageHeader of file bytes ``buf``. Pillow's own decompression-bomb limit is lifted for
    the look (nothing is decoded); the caller applies its own."""
    from PIL import Image
    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        with _quiet_pillow(), Image.open(io.BytesIO(buf)) as im:
            has_alpha = im.mode in ('LA', 'La', 'RGBA', 'RGBa', 'PA') or (im.mode == 'P' and 'transparency' in im.info)
            header = ImageHeader(is_gray=im.mode in _GRAY_MODES, has_alpha=has_alpha, format=im.format)
            try:
                header.orientation = int(im.getexif().get(EXIF_ORIENTATION_TAG, 1) or 1)
                # GIF counts its frames by skipping through them (no decoding); WebP reads it off its header.
                header.frames = int(getattr(im, 'n_frames', 1) or 1)
            except Exception:  # noqa: BLE001 - a broken EXIF block or frame list does not stop the image
                pass
            return header
    except Exception:  # noqa: BLE001 - a header Pillow cannot parse is not an error for OpenCV
        return ImageHeader()
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def peek_size(path):
    """``(height, width)`` of the image file at ``path`` as ``read_image`` turns it upright (EXIF
    orientation), from its header alone (Pillow reads no pixels to tell it); None when Pillow
    cannot read the header. A hint, e.g. to order files by size: the decoded image decides."""
    from PIL import Image
    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        with _quiet_pillow(), Image.open(path) as im:
            width, height = im.size
            try:
                orientation = int(im.getexif().get(EXIF_ORIENTATION_TAG, 1) or 1)
            except Exception:  # noqa: BLE001 - a broken EXIF block: as read_image, upright as stored
                orientation = 1
    except Exception:  # noqa: BLE001 - any header Pillow cannot read
        return None
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    return (width, height) if orientation in (5, 6, 7, 8) else (height, width)


def _decode_with_pillow(buf, name, max_pixels=DEFAULT_MAX_PIXELS, option='--max-pixels'):
    from PIL import Image
    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # the limit is ours, checked below
    try:
        with _quiet_pillow(), Image.open(io.BytesIO(buf)) as im:
            width, height = im.size
            if max_pixels and width * height > max_pixels:
                raise pixel_limit_error(name, height, width, max_pixels, option)
            im.load()
            if im.mode in ('I;16', 'I;16B', 'I;16L', 'I;16N', 'I'):
                return np.asarray(im).astype(np.uint16)
            if im.mode in ('1', 'L') and 'transparency' not in im.info:
                return np.asarray(im.convert('L'))
            if im.mode == 'LA':
                return np.asarray(im)  # gray + alpha, H x W x 2
            rgba = im.mode in ('RGBA', 'PA') or (im.mode == 'P' and 'transparency' in im.info)
            arr = np.asarray(im.convert('RGBA' if rgba else 'RGB'))
            return cv2.cvtColor(arr, cv2.COLOR_RGBA2BGRA if rgba else cv2.COLOR_RGB2BGR)
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def apply_exif_orientation(img, orientation, contiguous=True):
    """Turn ``img`` the way image viewers do for EXIF ``orientation`` (1..8); with
    ``contiguous=False`` the result may be a strided view of ``img`` (no copy)."""
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
    out = ops.get(orientation, ops[1])(img)
    return np.ascontiguousarray(out) if contiguous else out


def read_image(path, max_pixels=DEFAULT_MAX_PIXELS, option='--max-pixels', contiguous=True, with_header=False):
    """The image at ``path`` as stored (uint8/uint16/float32; gray, gray+alpha, BGR or BGRA),
    turned upright (a strided view of the decoded pixels unless ``contiguous``). Decoded by the
    datasets' codec; Pillow decodes what OpenCV cannot. ``with_header``: ``(image, header)``,
    the ImageHeader telling e.g. ``frames`` (> 1: an animation, of which this is the first frame).

    More than ``max_pixels`` pixels (0: no limit) raise ImageTooLargeError (``option`` names
    the setting) before decoding when the header tells the size, as it does for PNG, JPEG, TIFF,
    BMP, WebP and GIF, and after decoding otherwise."""
    name = shown(path)
    if not os.path.isfile(path):
        raise ImageDecodeError(f'No such image file: {name}')
    with open(path, 'rb') as f:
        buf = f.read()
    if not buf:
        raise ImageDecodeError(f'Empty image file: {name}')
    check_pixel_limit(buf, name, max_pixels, option)  # first: even opening a file can allocate its canvas
    header = read_header(buf)
    try:
        img = decode_bytes(buf, name, max_pixels, option)
        if header.has_alpha and (img.ndim == 2 or img.shape[2] not in (2, 4)):  # gray+alpha TIFF; Pillow keeps it
            raise ImageDecodeError(f'OpenCV drops the alpha channel of {name}')
    except ImageTooLargeError:
        raise
    except ImageDecodeError as failure:
        try:
            img = _decode_with_pillow(buf, name, max_pixels, option)
        except ImageTooLargeError:
            raise
        except Exception as err:  # noqa: BLE001 - every decoder failure means the same to the caller
            said = re.sub(r' ?<_io\.BytesIO object at \w+>', '', str(err))  # Pillow names the buffer, not the file
            raise ImageDecodeError(f'{failure} (Pillow: {err.__class__.__name__}: {said})') from None
    del buf
    if max_pixels and img.shape[0] * img.shape[1] > max_pixels:  # a header only the decoder could read
        raise pixel_limit_error(name, img.shape[0], img.shape[1], max_pixels, option)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if header.format == 'GIF' and header.has_alpha is False and img.ndim == 3 and img.shape[2] == 4:
        img = img[..., :3]  # OpenCV gives some GIFs an alpha channel that their palette does not have
    check_pixels(img, name, dtypes=(*FULL_SCALE, np.dtype(np.float32)), channels=(2, 3, 4))
    if header.is_gray and img.ndim == 3 and img.shape[2] in (3, 4):
        # A gray(+alpha) file that OpenCV expanded to BGR(A): keep it gray, with its alpha.
        img = img[..., 0] if img.shape[2] == 3 else np.dstack([img[..., 0], img[..., 3]])
    img = apply_exif_orientation(img, header.orientation, contiguous)
    return (img, header) if with_header else img


# What the formats cannot hold. PNG and TIFF hold everything read_image gives.
_FORMAT_NAMES = {'.jpg': 'JPEG', '.jpeg': 'JPEG', '.webp': 'WebP', '.bmp': 'BMP', '.gif': 'GIF'}
_EIGHT_BIT = ('.jpg', '.jpeg', '.webp', '.bmp', '.gif')
_NO_ALPHA = ('.jpg', '.jpeg')
# JPEG quality when none is asked for; WebP is then lossless (OpenCV's quality 101).
DEFAULT_JPEG_QUALITY = 95
WEBP_LOSSLESS = 101


def fit_format(img, ext):
    """``(img, notes)``: ``img`` as the format of extension ``ext`` can hold it, and a note for
    each thing it lost. JPEG has no alpha channel (the alpha is dropped, colours kept as they
    are); JPEG, WebP, BMP and GIF hold 8 bits per sample (16-bit and float samples are rounded
    to 8 bits). Anything else comes back unchanged, with no notes."""
    ext, notes = ext.lower(), []
    fmt = _FORMAT_NAMES.get(ext)
    if ext in _NO_ALPHA and img.ndim == 3 and img.shape[2] in (2, 4):
        img = np.ascontiguousarray(img[..., 0] if img.shape[2] == 2 else img[..., :3])
        notes.append(f'{fmt} has no alpha channel: written without it')
    if ext in _EIGHT_BIT and img.dtype != np.uint8:
        depth = f'{img.itemsize * 8}-bit' + (' float' if img.dtype.kind == 'f' else '')
        img = from_float(to_float(img), np.uint8)
        notes.append(f'{fmt} holds 8 bits per sample: {depth} samples written as 8-bit')
    return img, notes


def _encode(img, ext, quality=None):
    """``img`` encoded for extension ``ext``, as a bytes-like object (no extra copy); ``quality``
    (1-100) for JPEG and WebP, None: DEFAULT_JPEG_QUALITY, lossless WebP."""
    ext = ext.lower()
    img = fit_format(img, ext)[0]
    if ext == '.gif':
        return _encode_with_pillow(img, 'GIF')
    if img.ndim == 3 and img.shape[2] == 2:
        if ext in ('.png', '.tif', '.tiff'):
            return _encode_gray_alpha(img, ext)
        img = np.dstack([img[..., 0]] * 3 + [img[..., 1]])  # formats without gray+alpha get BGRA
    jpeg = [cv2.IMWRITE_JPEG_QUALITY, int(quality or DEFAULT_JPEG_QUALITY)]
    params = {'.jpg': jpeg, '.jpeg': jpeg, '.webp': [cv2.IMWRITE_WEBP_QUALITY, int(quality or WEBP_LOSSLESS)]}
    ok, buf = cv2.imencode(ext, img, params.get(ext, []))
    if not ok:
        raise ValueError(f'cannot encode a {img.dtype} {img.shape} image as {ext}')
    return buf


def encode_image(img, ext, quality=None):
    """``img`` encoded for extension ``ext`` ('.png', ...), as :func:`fit_format` fits it. A
    gray+alpha image is written as PNG/TIFF gray with alpha where the format has it, else as
    BGRA. ``quality``: 1-100 for JPEG and WebP (default: JPEG 95, WebP lossless)."""
    return bytes(_encode(img, ext, quality))


def _encode_with_pillow(img, fmt):
    """GIF (one frame, 256 colours: what the format holds) through Pillow, which OpenCV lacks."""
    from PIL import Image
    if img.dtype != np.uint8:
        img = from_float(to_float(img), np.uint8)
    if img.ndim == 2:
        pil = Image.fromarray(img, 'L')
    elif img.shape[2] == 2:
        pil = Image.fromarray(np.dstack([img[..., 0]] * 3 + [img[..., 1]]), 'RGBA')
    else:
        pil = Image.fromarray(cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA if img.shape[2] == 4 else cv2.COLOR_BGR2RGB))
    out = io.BytesIO()
    pil.save(out, format=fmt)
    return out.getbuffer()


def _encode_gray_alpha(img, ext):
    """OpenCV cannot write gray+alpha; Pillow can for 8-bit. 16-bit gray+alpha goes through
    OpenCV as BGRA (the colour channels stay equal, so it still looks gray)."""
    if img.dtype == np.uint8:
        from PIL import Image
        out = io.BytesIO()
        Image.fromarray(img, 'LA').save(out, format='PNG' if ext == '.png' else 'TIFF')
        return out.getbuffer()
    bgra = np.dstack([img[..., 0]] * 3 + [img[..., 1]])
    ok, buf = cv2.imencode(ext, bgra)
    if not ok:
        raise ValueError(f'cannot encode a {img.dtype} gray+alpha image as {ext}')
    return buf


def write_image(path, img, quality=None):
    """Encode ``img`` for ``path``'s extension (see :func:`encode_image`) and write it atomically
    (a temporary name, then a rename: nothing ever stands under ``path`` half-written)."""
    atomic_write_bytes(path, _encode(img, os.path.splitext(path)[1], quality))
