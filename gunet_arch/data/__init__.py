"""Paired dehazing data: folder/LMDB datasets, name rules, and LMDB preparation.
Importing this package registers ``PairedDehazeDataset`` with BasicSR's DATASET_REGISTRY."""
from .lmdb_writer import DATASET_PRESETS, prepare_lmdb, verify_lmdb  # noqa: F401
from .paired_dehaze_dataset import PairedDehazeDataset  # noqa: F401
from .pairing import pair_folders  # noqa: F401
