"""Hazy/clear pairs for training and validating dehazing networks with BasicSR."""
import os
import random

from basicsr.data.transforms import augment
from basicsr.utils import FileClient, get_root_logger, img2tensor
from basicsr.utils.registry import DATASET_REGISTRY
from torch.utils import data

from .image_codec import DEFAULT_MAX_PIXELS, centre_crop, decode_training_image, to_bgr, to_rgb_float
from .lmdb_store import LmdbFormatError, decode_entry, limit_problems, open_pairs, read_marker, read_value
from .pairing import (
    DATASET_PRESETS,
    PairingError,
    PairSizeError,
    pair_folders,
    pair_size_problem,
    printable,
    published_split,
    refused_images,
    select_split,
)


def edge_decay_start(size, crop, edge_decay):
    """Start of a random crop along one axis, as the official gUNet loader draws it: with
    probability ``edge_decay * crop / size`` the crop is snapped to either border (borders are
    otherwise under-sampled by uniform crops), else it starts uniformly at random."""
    if random.random() < crop / size * edge_decay:
        return 0 if random.randint(0, 1) == 0 else size - crop
    return random.randint(0, size - crop)


@DATASET_REGISTRY.register()
class PairedDehazeDataset(data.Dataset):
    """Hazy (``lq``) and clear (``gt``) image pairs from folders or from prepared LMDBs.

    Options (BasicSR's other dataset keys, e.g. ``name``, ``batch_size_per_gpu``, ``scale``, are
    accepted and ignored):
        dataroot_lq / dataroot_gt (str): hazy and clear folders, or ``hazy.lmdb`` / ``clear.lmdb``
            written by ``scripts/prepare_lmdb.py`` (or BasicSR LMDBs with identical keys).
        io_backend (dict): ``{type: disk}`` or ``{type: lmdb}``.
        dataset (str): the set the data comes from, as ``scripts/prepare_lmdb.py --dataset`` names
            it (``nh-haze``, ``o-haze``, ``its``, ...): its pairing rule for folders, and the
            numbering ``split`` refers to. For an LMDB it must agree with the set it was prepared from.
        split (str): ``train``, ``val``, ``test`` or ``trainval``: only the images of that part of
            the set's published split (NH-HAZE, Dense-HAZE, O-HAZE, I-HAZE; see
            ``pairing.PUBLISHED_SPLITS``), from folders holding the whole set or from an LMDB.
        pairing (str): ``prefix``, ``same_name`` or ``hazy_gt`` for folders; by default the
            ``dataset``'s rule, or detected from the names.
        skip_unpaired (bool): leave out hazy images without a clear partner (listed in the log)
            instead of failing. Default: False.
        phase (str): ``train`` takes random crops with augmentation; anything else does not.
        gt_size (int): training crop size.
        use_hflip, use_rot (bool): BasicSR's flip / rotation augmentation, same on both images.
        edge_decay (float): probability weight for snapping training crops to a border. Default 0.
        val_crop_size (int | None): centre crop outside training; None keeps the full image.
        max_pixels (int): images larger than this many pixels are refused before they are decoded
            (files: from their header; LMDBs: from meta_info, when the dataset is created). 0 for
            no limit. Default: 300 megapixels.

    A clear image larger than its hazy image in both dimensions (SOTS-indoor) is centre-cropped
    to the hazy size. Items: ``lq``, ``gt`` (float32 RGB CHW in [0, 1]), ``lq_path``, ``gt_path``
    (file paths; for LMDBs the names of the files the entries were made from).

    Images are untrusted input: files are recognised by content (PNG, JPEG, BMP, TIFF, WebP) and
    used as stored (no EXIF rotation); LMDB records are checked against their checksums on every
    read. A sample that fails any check raises an error naming it: it is never replaced by another.
    """

    def __init__(self, opt):
        super().__init__()
        self.opt = opt
        self.io_backend_opt = dict(opt['io_backend'])
        self.backend = self.io_backend_opt.pop('type')
        self.lq_root, self.gt_root = opt['dataroot_lq'], opt['dataroot_gt']
        self.phase = opt.get('phase', 'train')
        self.gt_size = opt.get('gt_size')
        self.edge_decay = float(opt.get('edge_decay', 0) or 0)
        self.val_crop_size = opt.get('val_crop_size')
        if self.phase == 'train' and not self.gt_size:
            raise ValueError("PairedDehazeDataset: 'gt_size' is required for phase 'train'")
        self.max_pixels = opt.get('max_pixels')
        self.max_pixels = DEFAULT_MAX_PIXELS if self.max_pixels is None else self.max_pixels
        if isinstance(self.max_pixels, bool) or not isinstance(self.max_pixels, int) or self.max_pixels < 0:
            raise ValueError(f'PairedDehazeDataset: max_pixels must be a whole number of pixels (0: no limit), '
                             f'got {self.max_pixels!r}')
        self.file_client = None
        self.dataset = opt.get('dataset')
        if self.dataset is not None and self.dataset not in DATASET_PRESETS:
            raise ValueError(f'PairedDehazeDataset: unknown dataset {self.dataset!r}; expected one of '
                             f'{", ".join(DATASET_PRESETS)}')
        split = opt.get('split')
        try:
            self.split = None if split is None else published_split(self.dataset, split)
        except ValueError as err:
            raise ValueError(f'PairedDehazeDataset: split {split!r} with dataset {self.dataset!r}: {err}') from None

        if self.backend == 'lmdb':
            self._check_lmdb_dataset()
            self.lmdb_pairs = open_pairs(self.lq_root, self.gt_root,
                                         log=lambda message: get_root_logger().warning(message))
            if self.split is not None:
                self.lmdb_pairs = select_split(self.lmdb_pairs, self.split, lambda p: p.hazy.name, self.lq_root)
            self._check_lmdb_sizes()
            self.paths = [(p.hazy.name, p.clear.name) for p in self.lmdb_pairs]
        elif self.backend == 'disk':
            for root in (self.lq_root, self.gt_root):
                if isinstance(root, str) and os.path.isfile(os.path.join(root, 'data.mdb')):
                    raise ValueError(f'{root} is an LMDB; read it with io_backend: {{type: lmdb}}')
            logger = get_root_logger()
            refused = list(dict.fromkeys(refused_images(self.lq_root) + refused_images(self.gt_root)))
            if refused:
                raise PairingError(f'{len(refused)} image files are refused:\n  ' + '\n  '.join(refused))
            rule = opt.get('pairing') or (DATASET_PRESETS[self.dataset].pairing if self.dataset else None)
            pairs, _ = pair_folders(self.lq_root, self.gt_root, rule, skip_unpaired=opt.get('skip_unpaired', False),
                                    log=logger.warning, split=self.split)
            self.paths = [(p.hazy_path, p.clear_path) for p in pairs]
        else:
            raise ValueError(f"PairedDehazeDataset: io_backend type must be 'disk' or 'lmdb', got {self.backend!r}")

    def _check_lmdb_dataset(self):
        """An LMDB prepared from another set than ``dataset`` says would be split by the wrong
        numbers (or is simply the wrong data): refused, naming both."""
        if self.dataset in (None, 'paired'):
            return
        try:
            marker = read_marker(self.lq_root)
        except LmdbFormatError:
            return  # open_pairs reports a bad marker in full
        prepared = (marker or {}).get('dataset')
        if prepared not in (None, 'paired', self.dataset):
            raise LmdbFormatError(f'{self.lq_root} was prepared from {prepared} (scripts/prepare_lmdb.py --dataset '
                                  f'{prepared}), but the dataset option says dataset: {self.dataset}')

    def _check_lmdb_sizes(self):
        """meta_info records every size, so size problems surface here rather than mid-training."""
        entries = {(self.lq_root, p.hazy.key): p.hazy for p in self.lmdb_pairs}
        entries.update({(self.gt_root, p.clear.key): p.clear for p in self.lmdb_pairs})
        too_large = [m for (db, _), e in entries.items() for m in limit_problems(db, [e], self.max_pixels)]
        if too_large:
            raise LmdbFormatError(f'{len(too_large)} images are refused before decoding: ' + '; '.join(too_large[:5]))
        problems = []
        for p in self.lmdb_pairs:
            hazy, clear = f'{self.lq_root}:{p.hazy.name}', f'{self.gt_root}:{p.clear.name}'
            problem = pair_size_problem(hazy, p.hazy.shape[:2], clear, p.clear.shape[:2])
            if problem is None:
                problem = self._too_small(hazy, p.hazy.shape[:2])
            if problem:
                problems.append(f'{problem} [keys {p.hazy.key!r} and {p.clear.key!r}]')
        if problems:
            raise PairSizeError(f'{len(problems)} problem pairs; first: ' + '; '.join(problems[:5]))

    def _too_small(self, name, hw):
        need = self.gt_size if self.phase == 'train' else self.val_crop_size
        if need and (hw[0] < need or hw[1] < need):
            which = 'gt_size' if self.phase == 'train' else 'val_crop_size'
            return f'Image {name} is {hw[0]}x{hw[1]} (HxW), smaller than {which} {need}'
        return None

    def __len__(self):
        return len(self.paths)

    def _load(self, index):
        if self.backend == 'lmdb':
            # Not FileClient: see lmdb_store.readonly_env for why handles are shared per process.
            pair = self.lmdb_pairs[index]
            hazy = decode_entry(read_value(self.lq_root, pair.hazy.key), pair.hazy, self.lq_root)
            clear = decode_entry(read_value(self.gt_root, pair.clear.key), pair.clear, self.gt_root)
            return hazy, clear
        if self.file_client is None:
            self.file_client = FileClient('disk', **self.io_backend_opt)
        lq_path, gt_path = self.paths[index]
        return (decode_training_image(self.file_client.get(lq_path), printable(lq_path), self.max_pixels),
                decode_training_image(self.file_client.get(gt_path), printable(gt_path), self.max_pixels))

    def __getitem__(self, index):
        lq_path, gt_path = self.paths[index]
        hazy, clear = self._load(index)
        h, w = hazy.shape[:2]
        if clear.shape[:2] != (h, w):
            problem = pair_size_problem(lq_path, (h, w), gt_path, clear.shape[:2])
            if problem:
                raise PairSizeError(problem)
            clear = centre_crop(clear, h, w)

        problem = self._too_small(lq_path, (h, w))
        if problem:
            raise ValueError(problem)
        if self.phase == 'train':
            size = self.gt_size
            top = edge_decay_start(h, size, self.edge_decay)
            left = edge_decay_start(w, size, self.edge_decay)
            # A copy of each crop: BasicSR's augment flips in place, and stored raw pixels are
            # read-only views of the database.
            hazy, clear = (to_bgr(img[top:top + size, left:left + size, ...].copy()) for img in (hazy, clear))
            hazy, clear = augment([hazy, clear], self.opt.get('use_hflip', False), self.opt.get('use_rot', False))
        elif self.val_crop_size:
            hazy, clear = (centre_crop(img, self.val_crop_size, self.val_crop_size) for img in (hazy, clear))

        lq, gt = img2tensor([to_rgb_float(hazy), to_rgb_float(clear)], bgr2rgb=False, float32=True)
        return {'lq': lq, 'gt': gt, 'lq_path': lq_path, 'gt_path': gt_path}
