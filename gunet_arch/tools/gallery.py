"""A results gallery: one static HTML page (``index.html``) to look through a test's images.

Per test set, a table of the images with their PSNR/SSIM, worst first (click a column header to
sort by it), and for each image hazy | dehazed | clear thumbnails (a click opens the full image)
and a before/after slider over hazy and dehazed. The header gives the means, the footer the
option file and the library versions (``provenance``). The page needs no server and no network:
its CSS and script are inline, and it works from ``file://``.

Thumbnails are JPEGs of at most ``THUMB_SIZE`` pixels on the long side in ``gallery/<set>/thumbs/``
next to the page, one per distinct source file (SOTS's 50 clear images for its 500 hazy ones): a
set of 500 photographs with 1,500 distinct thumbnails takes about 12 MB, page included. A file
that is missing or unreadable is shown as a grey placeholder and named in a note above its table:
the page itself never breaks.

Three ways in:

- ``gunet_arch/test.py`` (``GUNetModel``): :class:`TestSetGallery` saves the hazy and clear
  images the test read (from folders or LMDB) into ``results/<name>/gallery/<set>/`` and a
  manifest as the test runs; :func:`write_results_gallery` then writes ``results/<name>/index.html``
  (``val.gallery: false`` in the option file turns all of this off).
- ``write_gallery(output_dir, entries)``: any list of :class:`GalleryEntry`, or of
  ``(hazy, dehazed)`` / ``(hazy, dehazed, clear)`` paths (inference: no clear image, no metrics).
- ``scripts/make_gallery.py results/<name>``: rebuilds the page from a results folder.
"""
import hashlib
import html
import json
import math
import os
import re
import sys
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Dict, Optional

import cv2
import numpy as np

from ..atomic import atomic_write_bytes
from ..data.image_codec import check_pixel_limit, from_float, to_bgr, to_float
from . import provenance
from .metrics_csv import read_metrics_csv

PAGE_NAME = 'index.html'
GALLERY_DIR = 'gallery'
# 240 px at JPEG quality 75: about 7 KB a photograph (12 KB for the most detailed), so 500
# images with 3 thumbnails each stay under 20 MB even when no clear image is shared.
THUMB_SIZE = 240  # pixels on the long side
THUMB_QUALITY = 75
ROLES = ('hazy', 'dehazed', 'clear')
# Digits shown per metric; others get 4 significant digits.
METRIC_FORMATS = {'psnr': '{:.2f}', 'ssim': '{:.4f}'}
MAX_NOTED = 12  # missing files named in a set's note; the rest are counted


@dataclass
class GalleryEntry:
    """One image of a set: its name, the paths of its full-size images (absolute, or relative to
    the gallery's folder; ``None`` when there is none, e.g. no clear image for your own photos)
    and its metrics (``{'psnr': 31.2, 'ssim': 0.97}``)."""
    name: str
    hazy: Optional[str] = None
    dehazed: Optional[str] = None
    clear: Optional[str] = None
    metrics: Dict[str, float] = field(default_factory=dict)


def _entry(item, output_dir):
    if isinstance(item, GalleryEntry):
        return item
    if isinstance(item, dict):
        return GalleryEntry(**item)
    paths = list(item)
    if len(paths) not in (2, 3):
        raise ValueError(f'a gallery entry is a GalleryEntry, a dict or (hazy, dehazed[, clear]) paths, got {item!r}')
    hazy, dehazed = paths[0], paths[1]
    named = dehazed if dehazed is not None else hazy
    try:
        name = os.path.relpath(os.path.abspath(named), os.path.abspath(output_dir))
        if name.startswith(os.pardir):
            name = os.path.basename(named)
    except ValueError:  # another drive
        name = os.path.basename(named)
    return GalleryEntry(name.replace(os.sep, '/'), hazy, dehazed, paths[2] if len(paths) == 3 else None)


def _natural_key(text):
    return [(0, int(part), '') if part.isdigit() else (1, 0, part.lower()) for part in re.split(r'(\d+)', text) if part]


def _finite(value):
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


# -- thumbnails -----------------------------------------------------------------------------------
def thumbnail(img, size=THUMB_SIZE):
    """``img`` (OpenCV order, any bit depth, gray/BGR/BGRA) as uint8 BGR of at most ``size``
    pixels on the long side (never enlarged)."""
    if img.ndim == 3 and img.shape[2] == 2:  # gray + alpha
        img = img[..., 0]
    img = to_bgr(np.ascontiguousarray(img))
    if img.dtype != np.uint8:
        img = from_float(to_float(img), np.uint8)
    h, w = img.shape[:2]
    if max(h, w) > size:
        scale = size / max(h, w)
        img = cv2.resize(img, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    return img


def read_for_thumbnail(path, size=THUMB_SIZE):
    """The image at ``path`` as uint8 BGR, upright (EXIF), decoded at the smallest of 1/2, 1/4,
    1/8 scale that still has ``size`` pixels on its long side (a 24-megapixel JPEG decodes in a
    tenth of the time); what OpenCV cannot decode goes through ``image_io.read_image``."""
    with open(path, 'rb') as f:
        buf = f.read()
    dims = check_pixel_limit(buf, path)
    flags = cv2.IMREAD_COLOR
    if dims:
        for factor, reduced in ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4),
                                (2, cv2.IMREAD_REDUCED_COLOR_2)):
            if max(dims) >= factor * size:
                flags = reduced
                break
    try:
        img = cv2.imdecode(np.frombuffer(buf, np.uint8), flags) if buf else None
    except cv2.error:
        img = None
    if img is None:
        from .image_io import read_image

        img = read_image(path)
    return img


def encode_jpeg(img, quality=THUMB_QUALITY):
    ok, buf = cv2.imencode('.jpg', img, [cv2.IMWRITE_JPEG_QUALITY, int(quality), cv2.IMWRITE_JPEG_OPTIMIZE, 1])
    if not ok:
        raise ValueError('JPEG encoding failed')
    return buf.tobytes()


def _write_file(path, data):
    """Written under a temporary name and renamed, so a reader never sees half a file; not
    flushed to disk (unlike ``atomic_write_bytes``): these copies and thumbnails can be redone."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = os.path.join(os.path.dirname(path), f'.{os.path.basename(path)}.partial')
    with open(tmp, 'wb') as f:
        f.write(data)
    os.replace(tmp, path)


def _slug(text, limit=60):
    return re.sub(r'[^A-Za-z0-9._-]+', '_', text)[:limit].strip('._') or 'image'


class Thumbnails:
    """Thumbnails of source files into one folder, named by the source's path, size and time
    (and the width x height, which the page needs): a source shared by many entries gets one,
    an unchanged one is not redone when the page is rebuilt, and :meth:`prune` removes the
    thumbnails of files no longer shown."""

    def __init__(self, folder, size=THUMB_SIZE, quality=THUMB_QUALITY):
        self.folder, self.size, self.quality = folder, size, quality
        self.used = set()
        self._existing = None

    def _existing_names(self):
        if self._existing is None:
            self._existing = {}
            for name in os.listdir(self.folder) if os.path.isdir(self.folder) else []:
                match = re.fullmatch(r'(.+-[0-9a-f]{12})-(\d+)x(\d+)\.jpg', name)
                if match:
                    self._existing[match.group(1)] = (name, int(match.group(2)), int(match.group(3)))
        return self._existing

    def get(self, source):
        """``(thumbnail path, width, height)`` of the image file ``source``; raises OSError or
        ValueError (ImageDecodeError) when it is missing or unreadable."""
        st = os.stat(source)
        key = f'{os.path.abspath(source)}|{st.st_size}|{st.st_mtime_ns}|{self.size}|{self.quality}'
        stem = f'{_slug(os.path.splitext(os.path.basename(source))[0])}-{hashlib.sha1(key.encode()).hexdigest()[:12]}'
        cached = self._existing_names().get(stem)
        if cached is None:
            small = thumbnail(read_for_thumbnail(source, self.size), self.size)
            h, w = small.shape[:2]
            cached = (f'{stem}-{w}x{h}.jpg', w, h)
            _write_file(os.path.join(self.folder, cached[0]), encode_jpeg(small, self.quality))
            self._existing[stem] = cached
        self.used.add(cached[0])
        return os.path.join(self.folder, cached[0]), cached[1], cached[2]

    def prune(self):
        for stem, (name, _, _) in list(self._existing_names().items()):
            if name not in self.used:
                try:
                    os.remove(os.path.join(self.folder, name))
                except OSError:
                    pass
                del self._existing[stem]


# -- the page -------------------------------------------------------------------------------------
CSS = """
:root{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1e2328;background:#f4f4f1}
body{margin:0}
header{background:#22333d;color:#fff;padding:14px 22px}
header h1{margin:0 0 8px;font-size:20px;font-weight:600}
header .means{list-style:none;margin:0;padding:0;display:flex;flex-wrap:wrap;gap:4px 28px;font-size:15px}
header .means b{font-variant-numeric:tabular-nums}
header .sub{margin:8px 0 0;font-size:12px;color:#c5d2da}
main{padding:10px 22px}
section.set h2{font-size:18px;margin:18px 0 6px}
section.set .summary{margin:0 0 8px;font-size:14px}
.note{background:#fff3d1;border:1px solid #dfbf5e;border-radius:4px;padding:6px 10px;font-size:13px;margin:6px 0 10px}
.note ul{margin:4px 0 0;padding-left:20px}
table.gallery{border-collapse:collapse;background:#fff;box-shadow:0 1px 2px #0002}
table.gallery th,table.gallery td{border-bottom:1px solid #e3e3e0;padding:5px 7px;vertical-align:middle;text-align:left}
table.gallery thead th{position:sticky;top:0;background:#eceae4;z-index:2;font-size:13px;white-space:nowrap}
th button{font:inherit;font-weight:600;background:none;border:0;padding:2px 3px;cursor:pointer;color:#1a4f75}
th button:hover{text-decoration:underline}
th[aria-sort=ascending] button::after{content:" \\25B2"}
th[aria-sort=descending] button::after{content:" \\25BC"}
td.num{text-align:right;font-variant-numeric:tabular-nums;font-size:14px}
td.name{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:13px;max-width:14em;overflow-wrap:anywhere}
td.pic a{display:block;width:160px}
td.pic .missing{width:160px}
td.slider .missing{width:240px}
td.pic img{display:block;width:160px;height:auto;background:#ddd}
.missing{box-sizing:border-box;min-height:100px;padding:6px;display:flex;align-items:center;justify-content:center;
text-align:center;font-size:12px;color:#6b6b6b;border:1px dashed #b9b9b9;
background:repeating-linear-gradient(45deg,#efefef,#efefef 8px,#e6e6e6 8px,#e6e6e6 16px)}
.cmp-wrap{width:240px}
.cmp{position:relative;width:240px;line-height:0;overflow:hidden;background:#ddd}
.cmp img{display:block;width:100%;height:auto}
.cmp img.before{position:absolute;left:0;top:0;height:100%;clip-path:inset(0 50% 0 0)}
.cmp .divider{position:absolute;top:0;bottom:0;left:50%;width:2px;margin-left:-1px;background:#fff;
box-shadow:0 0 3px #000a;pointer-events:none}
.cmp-range{display:block;width:240px;margin:4px 0 0}
.cmp-labels{display:flex;justify-content:space-between;font-size:11px;color:#5c5c5c;width:240px}
footer{border-top:1px solid #cfcfca;padding:10px 22px 30px;font-size:13px;color:#333}
footer h2{font-size:15px;margin:10px 0 6px}
footer table.versions td{padding:1px 14px 1px 0;font-family:ui-monospace,Menlo,Consolas,monospace}
footer pre{background:#fff;border:1px solid #ddd;padding:8px;max-height:28em;overflow:auto;font-size:12px}
"""

SCRIPT = """
(function () {
  'use strict';
  var collator = new Intl.Collator(undefined, {numeric: true, sensitivity: 'base'});
  function sortBy(th) {
    var table = th.closest('table'), key = 'data-v' + th.getAttribute('data-key');
    var numeric = th.getAttribute('data-type') === 'num';
    var dir = th.getAttribute('aria-sort') === 'ascending' ? -1 : 1;
    table.querySelectorAll('thead th[data-key]').forEach(function (other) {
      other.setAttribute('aria-sort', 'none');
    });
    th.setAttribute('aria-sort', dir === 1 ? 'ascending' : 'descending');
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows).map(function (row, i) {
      var v = row.getAttribute(key);
      return {row: row, i: i, v: v === null || v === '' ? null : (numeric ? parseFloat(v) : v)};
    });
    rows.sort(function (a, b) {
      if (a.v === null || b.v === null) { return a.v === b.v ? a.i - b.i : (a.v === null ? 1 : -1); }
      var c = numeric ? a.v - b.v : collator.compare(a.v, b.v);
      return c ? dir * c : a.i - b.i;
    });
    var fragment = document.createDocumentFragment();
    rows.forEach(function (r) { fragment.appendChild(r.row); });
    body.appendChild(fragment);
  }
  function split(range) {
    var v = Math.max(0, Math.min(100, parseFloat(range.value) || 0));
    var cmp = range.parentNode.querySelector('.cmp');
    cmp.querySelector('img.before').style.clipPath = 'inset(0 ' + (100 - v) + '% 0 0)';
    cmp.querySelector('.divider').style.left = v + '%';
  }
  document.addEventListener('click', function (event) {
    var button = event.target.closest('th[data-key] button');
    if (button) { sortBy(button.closest('th')); }
  });
  document.addEventListener('input', function (event) {
    if (event.target.classList.contains('cmp-range')) { split(event.target); }
  });
})();
"""


def _href(path, page_dir):
    """A link from the page to ``path`` that works from file://: relative where it can be."""
    try:
        rel = os.path.relpath(os.path.abspath(path), os.path.abspath(page_dir))
    except ValueError:  # another drive (Windows)
        from pathlib import Path

        return Path(os.path.abspath(path)).as_uri()
    return urllib.parse.quote(rel.replace(os.sep, '/'))


def _format_metric(name, value):
    if not _finite(value):
        return ''
    return METRIC_FORMATS.get(name.lower(), '{:.4g}').format(float(value))


def _metric_label(name):
    return {'psnr': 'PSNR (dB)', 'ssim': 'SSIM'}.get(name.lower(), name)


def _means(entries, names):
    means = {}
    for name in names:
        values = [float(e.metrics[name]) for e in entries if _finite(e.metrics.get(name))]
        if values:
            means[name] = (sum(values) / len(values), len(values))
    return means


def _means_text(means, count):
    if not means:
        return f'{count} images'
    parts = []
    for name, (value, n) in means.items():
        part = f'{html.escape(_metric_label(name).replace(" (dB)", ""))} <b>{_format_metric(name, value)}</b>'
        part += ' dB' if name.lower() == 'psnr' else ''
        part += f' (of {n})' if n != count else ''
        parts.append(part)
    return ', '.join(parts) + f' &middot; {count} images'


class _SetPage:
    """The HTML of one set's section."""

    def __init__(self, set_name, entries, page_dir, thumbs, index):
        self.set_name, self.entries, self.page_dir, self.thumbs = set_name, entries, page_dir, thumbs
        self.index = index
        self.problems = []  # (entry name, role, path, why)
        names = []
        for e in entries:
            names += [n for n in e.metrics if n not in names]
        self.metric_names = names
        self.means = _means(entries, names)
        # Your own photos have no clear image: no column of placeholders for it.
        self.roles = [r for r in ROLES if r != 'clear' or any(e.clear is not None for e in entries)]

    def _resolve(self, path):
        if path is None:
            return None
        return path if os.path.isabs(path) else os.path.join(self.page_dir, path)

    def _picture(self, entry, role):
        """(cell HTML, (thumb href, w, h) or None)."""
        path = self._resolve(getattr(entry, role))
        label = f'{role} {entry.name}'
        if path is None:
            return f'<div class="missing">no {role} image</div>', None
        why = None
        if not os.path.isfile(path):
            why = 'missing'
        else:
            try:
                thumb, w, h = self.thumbs.get(path)
            except (OSError, ValueError) as err:
                why = f'unreadable: {err}'
        if why is not None:
            self.problems.append((entry.name, role, path, why))
            word = 'missing' if why == 'missing' else 'unreadable'
            return (f'<div class="missing" title="{html.escape(path)}">{role} image {word}</div>'), None
        src = _href(thumb, self.page_dir)
        cell = (f'<a href="{_href(path, self.page_dir)}" target="_blank" title="open the full {role} image">'
                f'<img src="{src}" width="{w}" height="{h}" loading="lazy" alt="{html.escape(label)}"></a>')
        return cell, (src, w, h)

    def _slider(self, entry, hazy, dehazed):
        if hazy is None or dehazed is None:
            return '<div class="missing">no slider: an image is missing</div>'
        name = html.escape(entry.name)
        return ('<div class="cmp-wrap"><div class="cmp">'
                f'<img class="after" src="{dehazed[0]}" width="{dehazed[1]}" height="{dehazed[2]}" loading="lazy" '
                f'alt="dehazed {name}">'
                f'<img class="before" src="{hazy[0]}" alt="hazy {name}" loading="lazy">'
                '<span class="divider"></span></div>'
                f'<input type="range" class="cmp-range" min="0" max="100" value="50" step="1" '
                f'aria-label="hazy/dehazed split of {name}">'
                '<div class="cmp-labels"><span>&#9664; hazy</span><span>dehazed &#9654;</span></div></div>')

    def _sort_key(self):
        """The default order: the first metric (PSNR where there is one) ascending, i.e. the
        worst images first; images without it last; by name without metrics."""
        name = 'psnr' if 'psnr' in self.metric_names else (self.metric_names[0] if self.metric_names else None)
        if name is None:
            return None, lambda e: _natural_key(e.name)
        return name, lambda e: ((0, float(e.metrics[name])) if _finite(e.metrics.get(name)) else (1, 0.0),
                                _natural_key(e.name))

    def render(self):
        sort_metric, key = self._sort_key()
        ordered = sorted(self.entries, key=key)
        sort_col = self.metric_names.index(sort_metric) + 1 if sort_metric else 0
        heads = ['<th data-key="0" data-type="text" aria-sort="{}" scope="col"><button type="button">image</button>'
                 '</th>'.format('ascending' if sort_col == 0 else 'none')]
        for i, name in enumerate(self.metric_names, 1):
            heads.append(f'<th data-key="{i}" data-type="num" aria-sort="{"ascending" if sort_col == i else "none"}" '
                         f'scope="col"><button type="button">{html.escape(_metric_label(name))}</button></th>')
        heads += [f'<th scope="col">{role}</th>' for role in self.roles] + ['<th scope="col">hazy &harr; dehazed</th>']
        rows = []
        for e in ordered:
            values = [e.metrics.get(n) for n in self.metric_names]
            attrs = f' data-v0="{html.escape(e.name)}"' + ''.join(
                f' data-v{i}="{float(v)!r}"' if _finite(v) else f' data-v{i}=""' for i, v in enumerate(values, 1))
            cells = [f'<td class="name">{html.escape(e.name)}</td>']
            cells += [f'<td class="num">{_format_metric(n, v)}</td>' for n, v in zip(self.metric_names, values)]
            pictures = {}
            for role in self.roles:
                cell, pictures[role] = self._picture(e, role)
                cells.append(f'<td class="pic {role}">{cell}</td>')
            cells.append(f'<td class="slider">{self._slider(e, pictures["hazy"], pictures["dehazed"])}</td>')
            rows.append(f'<tr{attrs}>' + ''.join(cells) + '</tr>')
        order = 'sorted by name'
        if sort_metric:
            worst = ' (worst)' if sort_metric.lower() in ('psnr', 'ssim') else ''
            order = f'sorted by {html.escape(_metric_label(sort_metric))}, lowest{worst} first'
        parts = [f'<section class="set" id="set-{self.index}" data-set="{html.escape(self.set_name)}">',
                 f'<h2>{html.escape(self.set_name)}</h2>',
                 f'<p class="summary">{_means_text(self.means, len(self.entries))}; {order}. '
                 'Click a column header to sort by it; click a picture for the full image.</p>']
        parts.append(self._note())
        parts += ['<table class="gallery"><thead><tr>' + ''.join(heads) + '</tr></thead><tbody>']
        parts += rows
        parts += ['</tbody></table></section>']
        return '\n'.join(p for p in parts if p)

    def _note(self):
        if not self.problems:
            return ''
        images = len({p[0] for p in self.problems})
        items = [f'<li>{html.escape(role)} of <code>{html.escape(name)}</code>: {html.escape(why)} '
                 f'(<code>{html.escape(path)}</code>)</li>' for name, role, path, why in self.problems[:MAX_NOTED]]
        more = len(self.problems) - MAX_NOTED
        if more > 0:
            items.append(f'<li>and {more} more</li>')
        return (f'<div class="note" role="note"><b>{len(self.problems)} image file(s) of {images} image(s) are missing '
                'or unreadable</b>; they are shown as grey placeholders.<ul>' + ''.join(items) + '</ul></div>')


def _footer(versions, option_file, option_text, page_dir, scored):
    rows = ''.join(f'<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>' for k, v in versions.items())
    parts = ['<footer>', '<h2>Versions</h2>',
             '<p>The libraries that decoded the images (OpenCV with its JPEG/PNG libraries, Pillow) and computed '
             'the results' + ('; the metrics CSVs record the same line.' if scored else '.') + '</p>',
             f'<table class="versions">{rows}</table>']
    if option_file or option_text:
        parts.append('<h2>Option file</h2>')
        if option_file:
            parts.append(f'<p><a href="{_href(option_file, page_dir)}"><code>{html.escape(option_file)}</code></a></p>')
        if option_text is None and option_file:
            try:
                with open(option_file, encoding='utf-8', errors='replace') as f:
                    option_text = f.read(200_000)
            except OSError as err:
                option_text = None
                parts.append(f'<p class="note">cannot read it: {html.escape(str(err))}</p>')
        if option_text is not None:
            parts.append(f'<details open><summary>content</summary><pre>{html.escape(option_text)}</pre></details>')
    parts.append(f'<p>Written {time.strftime("%Y-%m-%d %H:%M:%S")} by gunet_arch.tools.gallery.</p></footer>')
    return '\n'.join(parts)


def write_gallery(output_dir, entries, title='Dehazing results', set_name='images', option_file=None,
                  option_text=None, versions=None, subtitle=None, page_name=PAGE_NAME, thumb_size=THUMB_SIZE,
                  thumb_quality=THUMB_QUALITY):
    """Write ``output_dir/page_name`` and its thumbnails (``output_dir/gallery/<set>/thumbs/``);
    returns the page's path.

    ``entries``: a list of :class:`GalleryEntry` (or dicts of its fields, or ``(hazy, dehazed)``
    / ``(hazy, dehazed, clear)`` paths) for one set called ``set_name``, or ``{set name: list}``
    for several. Relative paths are relative to ``output_dir``. ``option_file`` (a path) and/or
    ``option_text`` go to the footer with ``versions`` (default: :func:`provenance.library_versions`);
    ``subtitle``, a line of text, under the title.
    """
    output_dir = os.path.abspath(output_dir)
    sets = entries if isinstance(entries, dict) else {set_name: entries}
    versions = provenance.library_versions() if versions is None else versions
    sections, header_means, scored = [], [], False
    for index, (name, items) in enumerate(sets.items()):
        items = [_entry(item, output_dir) for item in items]
        thumbs = Thumbnails(os.path.join(output_dir, GALLERY_DIR, _slug(name, 80), 'thumbs'), thumb_size, thumb_quality)
        section = _SetPage(name, items, output_dir, thumbs, index)
        sections.append(section.render())
        scored = scored or bool(section.means)
        thumbs.prune()
        header_means.append(f'<li><a href="#set-{index}" style="color:inherit">{html.escape(name)}</a>: '
                            f'{_means_text(section.means, len(items))}</li>')
    page = ['<!DOCTYPE html>', '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f'<title>{html.escape(title)}</title>', f'<style>{CSS}</style></head><body>',
            f'<header><h1>{html.escape(title)}</h1><ul class="means">{"".join(header_means)}</ul>',
            f'<p class="sub">{html.escape(subtitle)}</p>' if subtitle else '', '</header>',
            '<main>', *sections, '</main>', _footer(versions, option_file, option_text, output_dir, scored),
            f'<script>{SCRIPT}</script>', '</body></html>', '']
    path = os.path.join(output_dir, page_name)
    atomic_write_bytes(path, '\n'.join(page).encode('utf-8'))
    return path


# -- the test pipeline's gallery ------------------------------------------------------------------
def _encode_png(img):
    ok, buf = cv2.imencode('.png', img)
    if not ok:
        raise ValueError('PNG encoding failed')
    return buf.tobytes()


def _rel(path, root):
    return os.path.relpath(path, root).replace(os.sep, '/')


class TestSetGallery:
    """What ``GUNetModel``'s test leaves for the gallery of one set: the hazy and clear images it
    read (from folders or LMDB, as uint8 BGR arrays), saved as PNG under
    ``<results>/gallery/<set>/{hazy,clear}/`` (each clear image once, however many hazy images
    share it), the dehazed image's path (or the image, when the test does not save them), and
    at :meth:`finish` a ``manifest.json`` that :func:`write_results_gallery` reads."""

    def __init__(self, results_dir, set_name):
        self.results_dir, self.set_name = os.path.abspath(results_dir), set_name
        self.folder = os.path.join(self.results_dir, GALLERY_DIR, _slug(set_name, 80))
        self.entries = []
        self._clears = {}

    def _save(self, sub, stem, img):
        path = os.path.join(self.folder, sub, f'{stem}.png')
        _write_file(path, _encode_png(img))
        return _rel(path, self.results_dir)

    def add(self, name, hazy, dehazed, clear=None, clear_name=None):
        """``hazy``/``clear``: uint8 BGR arrays (``clear`` may be None); ``dehazed``: the path
        of the saved dehazed image, or the image itself to save here; ``clear_name``: the clear
        image's file name (its key when shared by several hazy images)."""
        hazy_rel = self._save('hazy', name, hazy)
        if isinstance(dehazed, np.ndarray):
            dehazed = self._save('dehazed', name, dehazed)
        elif dehazed is not None:
            dehazed = _rel(os.path.abspath(dehazed), self.results_dir)
        clear_rel = None
        if clear is not None:
            stem = os.path.splitext(os.path.basename(clear_name))[0] if clear_name else name
            key = (stem, clear.shape)
            clear_rel = self._clears.get(key)
            if clear_rel is None:
                taken = any(k[0] == stem for k in self._clears)
                clear_rel = self._save('clear', f'{stem}_{clear.shape[0]}x{clear.shape[1]}' if taken else stem, clear)
                self._clears[key] = clear_rel
        self.entries.append(GalleryEntry(name, hazy_rel, dehazed, clear_rel))

    def finish(self, rows=(), metric_types=None):
        """Attach the per-image metrics (``[(name, {metric: value})]``; ``metric_types``: the
        metric function of each, ``{'psnr': 'calculate_psnr_dehaze'}``) and write the manifest."""
        metrics = dict(rows)
        images = [{'name': e.name, 'hazy': e.hazy, 'dehazed': e.dehazed, 'clear': e.clear,
                   'metrics': {k: float(v) for k, v in metrics.get(e.name, {}).items()}} for e in self.entries]
        manifest = {'set': self.set_name, 'metric_types': dict(metric_types or {}), 'images': images}
        atomic_write_bytes(os.path.join(self.folder, 'manifest.json'), json.dumps(manifest, indent=1).encode())


def _find_dehazed(results_dir, set_name, names):
    """``{name: path}`` of the dehazed images in ``visualization/<set>/``, named
    ``<name>_<suffix>.<ext>`` with one suffix (val.suffix or the option name, which may hold
    underscores itself): the suffix most names share is taken. A name without a file gets the
    path it would have, shown as missing."""
    folder = os.path.join(results_dir, 'visualization', set_name)
    files = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
    suffixes = {}
    for name in names:
        for f in files:
            if f.startswith(f'{name}_'):
                suffixes[f[len(name):]] = suffixes.get(f[len(name):], 0) + 1
    suffix = max(suffixes, key=suffixes.get) if suffixes else '.png'
    return {name: f'visualization/{set_name}/{name}{suffix}' for name in names}


def collect_results(results_dir, metric_types=None):
    """``{set: [GalleryEntry]}`` of a results folder: each set's manifest (written by the test),
    else, for a set that has only a ``<set>_metrics.csv``, its images as far as they are there
    (the dehazed ones in ``visualization/<set>/``, hazy and clear in ``gallery/<set>/``). The
    manifests' metric functions are added to the dict ``metric_types`` when one is given."""
    results_dir = os.path.abspath(results_dir)
    sets = {}
    metric_types = {} if metric_types is None else metric_types
    gallery_root = os.path.join(results_dir, GALLERY_DIR)
    for set_name in sorted(os.listdir(gallery_root)) if os.path.isdir(gallery_root) else []:
        manifest = os.path.join(gallery_root, set_name, 'manifest.json')
        if not os.path.isfile(manifest):
            continue
        with open(manifest, encoding='utf-8') as f:
            data = json.load(f)
        metric_types.update(data.get('metric_types') or {})
        sets[data.get('set', set_name)] = [
            GalleryEntry(im['name'], im.get('hazy'), im.get('dehazed'), im.get('clear'), im.get('metrics') or {})
            for im in data.get('images', [])]
    for file_name in sorted(os.listdir(results_dir)):
        if not file_name.endswith('_metrics.csv'):
            continue
        set_name = file_name[:-len('_metrics.csv')]
        if set_name in sets:
            continue
        metrics = read_metrics_csv(os.path.join(results_dir, file_name))[0]
        dehazed = _find_dehazed(results_dir, set_name, list(metrics))
        sets[set_name] = [GalleryEntry(name, f'{GALLERY_DIR}/{_slug(set_name, 80)}/hazy/{name}.png', dehazed[name],
                                       None, values) for name, values in metrics.items()]
    return sets


def option_file_from_argv(argv=None):
    """The ``-opt`` file of this process's command line (BasicSR's train/test scripts), if any."""
    argv = sys.argv if argv is None else argv
    for i, arg in enumerate(argv):
        value = argv[i + 1] if arg == '-opt' and i + 1 < len(argv) else (arg[5:] if arg.startswith('-opt=') else None)
        if value and os.path.isfile(value):
            return os.path.abspath(value)
    return None


def options_text(opt):
    """Parsed options as YAML, for when the option file itself is not known."""
    import yaml

    return yaml.safe_dump(json.loads(json.dumps(opt, default=str)), sort_keys=False)


def write_results_gallery(results_dir, title=None, option_file=None, option_text=None, versions=None):
    """``results_dir/index.html`` over every set of a test's results folder; its path."""
    results_dir = os.path.abspath(results_dir)
    metric_types = {}
    sets = collect_results(results_dir, metric_types)
    title = title or f'gUNet test results: {os.path.basename(results_dir)}'
    return write_gallery(results_dir, sets, title=title, option_file=option_file, option_text=option_text,
                         versions=versions, subtitle=metrics_subtitle(metric_types))


PAPER_METRICS = {'calculate_psnr_dehaze', 'calculate_ssim_dehaze'}


def metrics_subtitle(metric_types):
    """What the numbers are: ``psnr: calculate_psnr_dehaze, ...`` and the protocol."""
    if not metric_types:
        return None
    text = 'Metrics: ' + ', '.join(f'{name} = {kind}' for name, kind in metric_types.items())
    if set(metric_types.values()) <= PAPER_METRICS:
        text += (' (the paper\'s protocol: RGB in [0, 1], whole image; SSIM after average pooling by '
                 'max(1, round(min(H, W)/256)))')
    return text + '.'
