"""Image files from outside, made by the tests: decompression bombs (a small file whose header
claims a huge image) in the four formats that compress, broken files, and legal files of the
kinds that trip up loaders (palettes, 1-bit, 16-bit, alpha, CMYK, animation, EXIF rotation).

Every bomb is real, not only a header: decoded without the pixel limit, each takes 0.8 to 2.3 GB
(measured with OpenCV 5.0: PNG +1721 MiB, JPEG +2295 MiB, TIFF +771 MiB, WebP +1541 MiB).
"""
import io
import struct
import zlib

import cv2
import numpy as np
from PIL import Image


def _png_chunk(kind, data):
    return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))


def png_bomb(side=30000):
    """A valid 1-bit grayscale PNG of side x side black pixels: 110 KB for 30000 x 30000."""
    row = b'\0' * (1 + (side + 7) // 8)  # filter byte + packed bits
    packer = zlib.compressobj(9)
    data = b''.join(packer.compress(row * 1000) for _ in range(side // 1000))
    data += packer.compress(row * (side % 1000)) + packer.flush()
    header = struct.pack('>IIBBBBB', side, side, 1, 0, 0, 0, 0)
    return b'\x89PNG\r\n\x1a\n' + _png_chunk(b'IHDR', header) + _png_chunk(b'IDAT', data) + _png_chunk(b'IEND', b'')


def jpeg_bomb(side=20000):
    """A valid 16x16 JPEG whose frame header (SOF0) says side x side (libjpeg fills the rest grey)."""
    buf = bytearray(cv2.imencode('.jpg', np.zeros((16, 16, 3), np.uint8))[1].tobytes())
    sof = buf.index(b'\xff\xc0')
    buf[sof + 5:sof + 9] = struct.pack('>HH', side, side)
    return bytes(buf)


def tiff_bomb(side=20000, rows=500):
    """A valid 1-bit deflate TIFF of side x side black pixels: every strip of ``rows`` rows points
    at the same compressed bytes, so 20000 x 20000 takes 1.7 KB."""
    strip = zlib.compress(b'\0' * ((side + 7) // 8 * rows), 9)
    count = -(-side // rows)
    arrays_at = 8 + 2 + 12 * 9 + 4
    strip_at = arrays_at + 8 * count
    # (tag, type: 3 SHORT / 4 LONG, values)
    tags = [(256, 4, [side]), (257, 4, [side]), (258, 3, [1]), (259, 3, [8]), (262, 3, [1]),
            (273, 4, [strip_at] * count), (277, 3, [1]), (278, 4, [rows]), (279, 4, [len(strip)] * count)]
    ifd, arrays = struct.pack('<H', len(tags)), b''
    for tag, kind, values in tags:
        if len(values) > 1:
            value = struct.pack('<I', arrays_at + len(arrays))
            arrays += struct.pack(f'<{len(values)}I', *values)
        else:
            value = struct.pack('<HH', values[0], 0) if kind == 3 else struct.pack('<I', values[0])
        ifd += struct.pack('<HHI', tag, kind, len(values)) + value
    return b'II*\0' + struct.pack('<I', 8) + ifd + b'\0\0\0\0' + arrays + strip


def webp_bomb(side=16383):
    """A valid 16x16 lossless WebP whose VP8L header says side x side (16383: the format's most)."""
    buf = bytearray(cv2.imencode('.webp', np.zeros((16, 16, 3), np.uint8), [cv2.IMWRITE_WEBP_QUALITY, 101])[1])
    assert buf[12:16] == b'VP8L' and buf[20] == 0x2F
    bits = int.from_bytes(buf[21:25], 'little') & ~((1 << 28) - 1)
    buf[21:25] = (bits | (side - 1) | (side - 1) << 14).to_bytes(4, 'little')
    return bytes(buf)


BOMBS = {'png': png_bomb, 'jpg': jpeg_bomb, 'tif': tiff_bomb, 'webp': webp_bomb}


def pixels(hw=(24, 32)):
    """A smooth BGR uint8 image (JPEG keeps it closely): blue, green, red = 60, 4*x, 4*y."""
    img = np.empty((*hw, 3), np.uint8)
    img[..., 0] = 60
    img[..., 1] = (4 * np.arange(hw[1]) % 256)[None, :]
    img[..., 2] = (4 * np.arange(hw[0]) % 256)[:, None]
    return img


def encode(ext, img, params=()):
    ok, buf = cv2.imencode(ext, img, list(params))
    assert ok
    return buf.tobytes()


def pil_bytes(image, fmt, **kwargs):
    out = io.BytesIO()
    image.save(out, fmt, **kwargs)
    return out.getvalue()


def truncated(ext, img):
    data = encode(ext, img)
    return data[:len(data) * 2 // 3]


def frames(hw=(24, 32), values=(10, 200, 90)):
    return [Image.fromarray(np.full((*hw, 3), v, np.uint8)) for v in values]


def exif_rotated_jpeg(img, orientation=6):
    """A JPEG of ``img`` whose EXIF says to turn it (6: 90 degrees clockwise)."""
    rgb = Image.fromarray(np.ascontiguousarray(img[..., ::-1]))
    exif = rgb.getexif()
    exif[0x0112] = orientation
    return pil_bytes(rgb, 'JPEG', exif=exif.tobytes(), quality=95)


def legal_oddities(img):
    """{file name: bytes} of files that must work: each name is also the stem its partner shares."""
    rgb = Image.fromarray(np.ascontiguousarray(img[..., ::-1]))
    gray16 = (img[..., 0].astype(np.uint16) * 257)
    first, *rest = frames(img.shape[:2])
    return {
        'png_named.jpg': encode('.png', img),
        'jpeg_named.png': encode('.jpg', img, [cv2.IMWRITE_JPEG_QUALITY, 100]),
        'cmyk.jpg': pil_bytes(rgb.convert('CMYK'), 'JPEG', quality=95),
        'palette.png': pil_bytes(rgb.convert('P'), 'PNG'),
        'palette_alpha.png': pil_bytes(rgb.convert('P'), 'PNG', transparency=0),
        'bilevel.png': pil_bytes(rgb.convert('1'), 'PNG'),
        'bilevel_tiff.tif': pil_bytes(rgb.convert('1'), 'TIFF'),
        'gray16.png': encode('.png', gray16),
        'gray_alpha.png': pil_bytes(rgb.convert('LA'), 'PNG'),
        'animated.webp': pil_bytes(first, 'WEBP', save_all=True, append_images=rest, lossless=True),
        'animated_png.png': pil_bytes(first, 'PNG', save_all=True, append_images=rest),
        'multipage.tif': pil_bytes(first, 'TIFF', save_all=True, append_images=rest),
        'exif_rotated.jpg': exif_rotated_jpeg(img),
    }
