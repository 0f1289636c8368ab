"""Write options/train_gunet_{t,s,b,d}_{its,ots,haze4k,rshaze}.yml and the matching test files
from the paper's recipe (official gUNet configs), and the gUNet-S files of RESIDE-6K and the real-haze
sets (NH-HAZE, Dense-HAZE, O-HAZE, I-HAZE) with that recipe scaled to their size, so the 42 files
cannot drift apart.

    python scripts/make_option_files.py [--out options]
"""
import argparse
import os
import sys
from collections import namedtuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The paper's numbers and the official experiment folders: one table, which the evaluation of the
# official checkpoints (scripts/evaluate_official.py) compares with.
from gunet_arch.data.pairing import published_split  # noqa: E402
from gunet_arch.tools.evaluate_official import OFFICIAL_EXP, paper_text  # noqa: E402

EPOCH_SAMPLES = 16384  # the official "epoch": 16,384 random crops
EPOCHS = 1000
WARMUP_EPOCHS = 50
FROZEN_BN_EPOCHS = 200  # the last 200 epochs
EVAL_EPOCHS = 10
GPUS = 4
RECIPE = {  # the paper's training recipe per variant: total batch over 4 GPUs, peak lr
    't': (128, 1.6e-3),
    's': (128, 1.6e-3),
    'b': (64, 8e-4),
    'd': (32, 4e-4),
}
# train set -> (train folder, val folder, val_crop_size, flip/rot, test option suffix, paper)
SETS = {
    'its': ('ITS', 'SOTS-indoor', None, True, 'sots_indoor', 'RESIDE ITS, validated on SOTS-indoor'),
    'ots': ('OTS', 'SOTS-outdoor', 256, False, 'sots_outdoor', 'RESIDE OTS, validated on SOTS-outdoor'),
    'haze4k': ('Haze4K-train', 'Haze4K-test', 400, True, 'haze4k', 'Haze4K'),
    'rshaze': ('RS-Haze-train', 'RS-Haze-test', None, True, 'rshaze', 'RS-Haze'),
}
# The paper's ITS training, the yardstick the other sets' schedules are scaled from: 13,990 hazy
# images of 620x460, 1000 epochs of 16,384 random 256x256 crops.
ITS_IMAGES = 13990
ITS_PIXELS = ITS_IMAGES * 620 * 460
CROP_PIXELS = 256 * 256
# Warm-up and FrozenBN keep the paper's shares of any schedule: 50 and the last 200 of 1000 epochs.
WARMUP_SHARE, FROZEN_BN_SHARE = 0.05, 0.2
# Validations (and checkpoints) per run for the scaled schedules.
EVALS_PER_RUN = 20
# RESIDE-6K and the real-haze sets: gUNet-S files (the generator makes any variant of RECIPE).
REAL_VARIANTS = ('s', )
# The small real-haze sets train on one GPU with batch 16: BatchNorm then normalises over 16 crops,
# the per-GPU batch below which the paper's recipe resorts to SyncBN.
REAL_BATCH = 16
# 8,192 random crops (512 iterations of batch 16) per training photo: on NH-HAZE's and Dense-HAZE's
# 1600x1200 photos that covers every pixel as often as the paper's run covers ITS's.
CROPS_PER_PHOTO = 8192
RealSet = namedtuple('RealSet', ['title', 'dataset', 'train_folder', 'test_folder', 'train_split', 'test_split',
                                 'train_images', 'about', 'tile'])
REAL_SETS = {
    'reside6k': RealSet('RESIDE-6K', 'reside-6k', 'RESIDE-6K-train', 'RESIDE-6K-test', None, None, 6000,
                        "DehazeFormer's mix of RESIDE indoor and outdoor pairs: 6,000 train / 1,000 test", None),
    'nh_haze': RealSet('NH-HAZE', 'nh-haze', 'NH-HAZE-trainval', 'NH-HAZE-test', 'trainval', 'test', 50,
                       'NTIRE 2020, real non-homogeneous haze, 55 photos of 1600x1200', None),
    'dense_haze': RealSet('Dense-HAZE', 'dense-haze', 'Dense-HAZE-trainval', 'Dense-HAZE-test', 'trainval', 'test',
                          50, 'NTIRE 2019, real dense haze, 55 photos of 1600x1200', None),
    'o_haze': RealSet('O-HAZE', 'o-haze', 'O-HAZE-trainval', 'O-HAZE-test', 'trainval', 'test', 40,
                      'NTIRE 2018, real outdoor haze, 45 photos of several megapixels', (2048, 64)),
    'i_haze': RealSet('I-HAZE', 'i-haze', 'I-HAZE-trainval', 'I-HAZE-test', 'trainval', 'test', 30,
                      'NTIRE 2018, real indoor haze, 35 photos of several megapixels', (2048, 64)),
}
METRICS = """\
  metrics:
    psnr:  # paper protocol: RGB floats in [0, 1], whole image
      type: calculate_psnr_dehaze
      crop_border: 0
    ssim:  # paper protocol: average-pooled to ~256 px, Gaussian window 11, sigma 1.5
      type: calculate_ssim_dehaze
      crop_border: 0
"""


def lmdb_dataset(name, folder, phase_keys):
    return (f"    name: {name}\n"
            f"    type: PairedDehazeDataset\n"
            f"    dataroot_lq: datasets/{folder}/hazy.lmdb\n"
            f"    dataroot_gt: datasets/{folder}/clear.lmdb\n"
            f"    io_backend:\n"
            f"      type: lmdb\n{phase_keys}")


def fmt(x):
    return f'!!float {x:g}'


def sci(x):
    """1.6e-3 rather than 0.0016 in header text."""
    mantissa, exponent = f'{x:e}'.split('e')
    return f'{float(mantissa):g}e{int(exponent)}'


def train_body(name, variant, datasets, lr, total_iter, warmup_iter, frozen_iter, eval_iter, eval_note, val_extra=''):
    """Everything of a training file below its header comment."""
    return f"""
name: {name}
model_type: GUNetModel
num_gpu: auto  # the GPUs this process sees (0 without CUDA: CPU)
manual_seed: 0
sync_bn: auto  # auto | true | false

datasets:
{datasets}
network_g:
  type: GUNet
  variant: {variant}

path:
  pretrain_network_g: ~
  strict_load_g: true
  resume_state: ~

train:
  optim_g:
    type: AdamW
    lr: {fmt(lr)}
    weight_decay: 0.01
    betas: [0.9, 0.999]
  scheduler:
    type: WarmupCosineLR
    total_iter: {total_iter}
    warmup_iter: {warmup_iter}  # linear from eta_min to lr
    eta_min: {fmt(lr / 100)}
    weight_decay_min: 0  # weight decay follows a cosine to 0, as in the official training
  total_iter: {total_iter}
  warmup_iter: -1  # BasicSR's own warm-up stays off: the scheduler warms up
  frozen_bn_iter: {frozen_iter}
  amp:
    enabled: true
    dtype: float16  # bfloat16 needs no loss scaling; float16 falls back to bfloat16 without CUDA
  max_bad_steps: 10  # stop after this many NaN/Inf losses in a row
  ema_decay: 0
  pixel_opt:
    type: L1Loss
    loss_weight: 1.0
    reduction: mean

val:
  val_freq: {eval_iter}  # {eval_note}
  save_img: false
{val_extra}{METRICS}
logger:
  print_freq: 100
  save_checkpoint_freq: {eval_iter}
  use_tb_logger: true
  wandb:
    project: ~
    resume_id: ~

dist_params:
  timeout: 300  # seconds a collective waits for a silent rank: a dead rank ends the job this soon
  # port: 29500  # --launcher slurm derives it from the job id, so jobs sharing a node do not collide
"""


def train_keys(per_gpu, augment, extra=''):
    aug = 'true' if augment else 'false'
    return f'''{extra}    gt_size: 256
    edge_decay: 0.1  # snap crops to a border with probability 0.1 x crop / size
    use_hflip: {aug}
    use_rot: {aug}
    num_worker_per_gpu: 4
    batch_size_per_gpu: {per_gpu}
    dataset_enlarge_ratio: 1
    prefetch_mode: ~
'''


def train_file(variant, key):
    total_batch, lr = RECIPE[variant]
    per_gpu = total_batch // GPUS
    iters_per_epoch = EPOCH_SAMPLES // total_batch
    total_iter = EPOCHS * iters_per_epoch
    warmup_iter = WARMUP_EPOCHS * iters_per_epoch
    frozen_iter = (EPOCHS - FROZEN_BN_EPOCHS) * iters_per_epoch
    eval_iter = EVAL_EPOCHS * iters_per_epoch
    train_folder, val_folder, val_crop, augment, _, desc = SETS[key]
    name = f'train_gunet_{variant}_{key}'
    val_crop_text = '~  # full images' if val_crop is None else f'{val_crop}  # centre crop, as the official config'
    datasets = (f"  train:\n{lmdb_dataset(train_folder, train_folder, train_keys(per_gpu, augment))}"
                f"  val:\n{lmdb_dataset(val_folder, val_folder, f'    val_crop_size: {val_crop_text}{chr(10)}')}")
    return f"""\
# gUNet-{variant.upper()} on {desc}: the paper's recipe for {GPUS} GPUs.
# Total batch {total_batch} = {GPUS} GPUs x batch_size_per_gpu {per_gpu}. One epoch = {EPOCH_SAMPLES} samples
# = {iters_per_epoch} iterations; {EPOCHS} epochs = total_iter {total_iter}; warm-up {WARMUP_EPOCHS} epochs;
# FrozenBN for the last {FROZEN_BN_EPOCHS} epochs.
{gpu_scaling(total_batch, per_gpu, name)}""" + train_body(name, variant, datasets, lr, total_iter, warmup_iter, frozen_iter,
                                                        eval_iter, f'every {EVAL_EPOCHS} epochs')


def gpu_scaling(total_batch, per_gpu, name, gpus=GPUS):
    """How to run a file on another number of GPUs than it was written for."""
    if gpus == 1:
        return f"""\
# On G GPUs: batch_size_per_gpu {total_batch} / G keeps the total batch (nothing else changes; SyncBN
# switches itself on under distributed training when batch_size_per_gpu < 16, sync_bn: auto).
#   python gunet_arch/train.py -opt options/{name}.yml
#   torchrun --nproc_per_node=2 gunet_arch/train.py -opt options/{name}.yml --launcher pytorch \\
#       --force_yml datasets:train:batch_size_per_gpu={total_batch // 2}
"""
    return f"""\
# To use G GPUs instead of {gpus}: set batch_size_per_gpu to {total_batch} / G (same total batch; nothing
# else changes). If that does not fit in memory, use batch_size_per_gpu B, let k = B x G / {total_batch},
# multiply optim_g.lr and scheduler.eta_min by k, and divide total_iter, scheduler.total_iter,
# scheduler.warmup_iter, frozen_bn_iter, val_freq and save_checkpoint_freq by k.
# SyncBN switches itself on under distributed training when batch_size_per_gpu < 16 (sync_bn: auto).
#   {gpus} GPUs: torchrun --nproc_per_node={gpus} gunet_arch/train.py -opt options/{name}.yml --launcher pytorch
#   1 GPU:  python gunet_arch/train.py -opt options/{name}.yml --force_yml datasets:train:batch_size_per_gpu={total_batch}
"""


def test_file(variant, key):
    _, val_folder, _, _, suffix, desc = SETS[key]
    name = f'test_gunet_{variant}_{suffix}'
    return f"""\
# Test gUNet-{variant.upper()} trained on {desc.split(',')[0]}: {val_folder}, full images
# (paper: {paper_text(variant, key)} PSNR / SSIM).
#   python gunet_arch/test.py -opt options/{name}.yml
# Dehazed images go to results/{name}/visualization/, per-image PSNR/SSIM and their means
# to results/{name}/{val_folder}_metrics.csv. pretrain_network_g may also be an official gUNet
# checkpoint (e.g. saved_models/{OFFICIAL_EXP[key]}/gunet_{variant}.pth); it loads as it is.
""" + test_body(name, variant, lmdb_dataset(val_folder, val_folder, '''    val_crop_size: ~
'''), f'experiments/train_gunet_{variant}_{key}/models/net_g_latest.pth')


def test_body(name, variant, dataset, weights, val_extra=''):
    return f"""
name: {name}
model_type: GUNetModel
num_gpu: auto
manual_seed: 0

datasets:
  test:
{dataset}
network_g:
  type: GUNet
  variant: {variant}

path:
  pretrain_network_g: {weights}
  param_key_g: params
  strict_load_g: true

val:
  save_img: true
  suffix: ~
{val_extra}{METRICS}"""


# -- RESIDE-6K and the real-haze sets -------------------------------------------------------------
def real_schedule(variant, key):
    """(GPUs, total batch, lr, total_iter, warm-up, FrozenBN start, validation interval) of a set,
    and the header lines that say how they follow from the paper's recipe."""
    total_batch, lr = RECIPE[variant]
    real = REAL_SETS[key]
    if real.train_split is None:  # RESIDE-6K: ITS-sized images, the paper's batch; epochs by image count
        epochs = round(EPOCHS * real.train_images / ITS_IMAGES, -1)
        iters_per_epoch = EPOCH_SAMPLES // total_batch
        total_iter = int(epochs) * iters_per_epoch
        gpus = GPUS
        why = f"""\
# The paper's recipe (total batch {total_batch} on {GPUS} GPUs, lr {sci(lr)}, epochs of {EPOCH_SAMPLES:,} crops), with the
# number of epochs scaled to the set's size: each training image is cropped as often as in the paper's
# {EPOCHS} epochs on ITS's {ITS_IMAGES:,} images of about the same size, {EPOCHS} x {real.train_images:,} / {ITS_IMAGES:,}
# = {EPOCHS * real.train_images / ITS_IMAGES:.0f}, rounded to {int(epochs)} epochs = {total_iter:,} iterations."""
    else:  # small sets of photos: one GPU, batch 16, a fixed number of crops per photo
        gpus, crops = 1, CROPS_PER_PHOTO * real.train_images
        lr = lr * REAL_BATCH / total_batch
        total_iter = crops // REAL_BATCH
        its_cover = EPOCHS * EPOCH_SAMPLES * CROP_PIXELS / ITS_PIXELS
        photo_cover = CROPS_PER_PHOTO * CROP_PIXELS / (1600 * 1200)
        lr_text = f'{sci(RECIPE[variant][1])} x {REAL_BATCH} / {total_batch} = {sci(lr)}'
        why = f"""\
# The paper's recipe scaled to {real.train_images} photos (it trains {EPOCHS} epochs of {EPOCH_SAMPLES:,} crops, batch
# {total_batch} on {GPUS} GPUs, on ITS's {ITS_IMAGES:,} images of 620x460):
# - one GPU, batch {REAL_BATCH}: BatchNorm normalises over {REAL_BATCH} crops, the per-GPU batch below which the paper's
#   recipe needs SyncBN; lr scaled with the batch, {lr_text};
# - {CROPS_PER_PHOTO:,} random 256x256 crops ({CROPS_PER_PHOTO // REAL_BATCH} iterations) per training photo: {total_iter:,} iterations.
#   The paper's run covers every ITS pixel {its_cover:.0f} times; {CROPS_PER_PHOTO:,} crops cover a 1600x1200 photo
#   {photo_cover:.0f} times (larger photos fewer times: more data, not more steps)."""
    warmup_iter = round(total_iter * WARMUP_SHARE)
    frozen_iter = total_iter - round(total_iter * FROZEN_BN_SHARE)
    eval_iter = total_iter // EVALS_PER_RUN
    why += f"""
# - warm-up over the first {WARMUP_SHARE:.0%} ({warmup_iter:,} iterations), FrozenBN for the last {FROZEN_BN_SHARE:.0%} (from {frozen_iter:,}):
#   the paper's {WARMUP_EPOCHS} and {FROZEN_BN_EPOCHS} of {EPOCHS} epochs."""
    return gpus, (total_batch if gpus == GPUS else REAL_BATCH), lr, total_iter, warmup_iter, frozen_iter, eval_iter, why


def images_of(real, split):
    """'images 1-50' for a part of a set's published split."""
    chosen = published_split(real.dataset, split)
    return f'images {chosen.first}-{chosen.last}'


def real_keys(real, split):
    lines = f'    dataset: {real.dataset}  # checked against the set the LMDB was prepared from\n'
    if split:
        lines += f'    split: {split}  # {images_of(real, split)} of the published split\n'
    return lines


def tile_keys(real):
    if real.tile is None:
        return '''  tile: ~  # whole images (gUNet-S: about 1 KiB per pixel, 2 GiB for 1600x1200); set 1024 on a smaller GPU
'''
    tile, overlap = real.tile
    return f'''  tile: {tile}  # full resolution in {tile}x{tile} tiles (about 4 GiB each for gUNet-S), whole-image statistics
  tile_overlap: {overlap}
'''


def seeds_text(variant, key):
    real = REAL_SETS[key]
    train, test = f'train_gunet_{variant}_{key}', f'test_gunet_{variant}_{key}'
    return f"""\
# Scores {'on 5 test photos ' if real.test_split else ''}move with the seed: train several seeds and report mean +- std.
#   for seed in 0 1 2; do
#     python gunet_arch/train.py -opt options/{train}.yml --force_yml manual_seed=$seed name={train}_seed$seed
#     python gunet_arch/test.py -opt options/{test}.yml --force_yml name={test}_seed$seed \\
#         path:pretrain_network_g=experiments/{train}_seed$seed/models/net_g_latest.pth
#   done
#   python scripts/summarize_seeds.py results/{test}_seed*
"""


def real_train_file(variant, key):
    real = REAL_SETS[key]
    gpus, total_batch, lr, total_iter, warmup_iter, frozen_iter, eval_iter, why = real_schedule(variant, key)
    name = f'train_gunet_{variant}_{key}'
    per_gpu = total_batch // gpus
    if real.train_split:
        parts = (f'trained on {images_of(real, real.train_split)} (the published train and val parts), tested on\n'
                 f'# {images_of(real, real.test_split)} (the test part)')
        val_note = """
# Validation runs on the test images at full size, to show progress only: report the test of the last
# checkpoint (net_g_latest.pth, which the test file loads), never the best validation, which would be
# chosen on the test images."""
    else:
        parts = 'trained on train/, tested on test/'
        val_note = """
# Validation runs on the test images at full size, as the official configs validate; the test file
# loads the last checkpoint (net_g_latest.pth)."""
    datasets = (f"  train:\n{lmdb_dataset(real.train_folder, real.train_folder, train_keys(per_gpu, True, real_keys(real, real.train_split)))}"
                f"  val:\n{lmdb_dataset(real.test_folder, real.test_folder, real_keys(real, real.test_split) + '    val_crop_size: ~  # full images' + chr(10))}")
    header = f"""\
# gUNet-{variant.upper()} on {real.title} ({real.about}):
# {parts} (options/test_gunet_{variant}_{key}.yml).
{why}{val_note}
{gpu_scaling(total_batch, per_gpu, name, gpus)}{seeds_text(variant, key)}"""
    return header + train_body(name, variant, datasets, lr, total_iter, warmup_iter, frozen_iter, eval_iter,
                               f'{EVALS_PER_RUN} times per run', tile_keys(real))


def real_test_file(variant, key):
    real = REAL_SETS[key]
    name = f'test_gunet_{variant}_{key}'
    what = f'{images_of(real, real.test_split)} (the published test part)' if real.test_split else 'its test/ folder'
    tiles = (f'in {real.tile[0]}x{real.tile[0]} tiles whose SK fusions use whole-image statistics (as scripts/inference.py\n'
             '# tiles; within a few hundredths of a dB of one whole-image pass)' if real.tile else 'in one piece')
    header = f"""\
# Test gUNet-{variant.upper()} trained on {real.title} on {what}, at full resolution,
# {tiles}.
#   python gunet_arch/test.py -opt options/{name}.yml
# Dehazed images go to results/{name}/visualization/, per-image PSNR/SSIM and their means
# to results/{name}/{real.test_folder}_metrics.csv. Several seeds: see options/train_gunet_{variant}_{key}.yml.
"""
    dataset = lmdb_dataset(real.test_folder, real.test_folder, real_keys(real, real.test_split) + '''    val_crop_size: ~
''')
    return header + test_body(name, variant, dataset, f'experiments/train_gunet_{variant}_{key}/models/net_g_latest.pth',
                              tile_keys(real))


def option_files():
    """File name -> text of every generated option file."""
    files = {}
    for variant in RECIPE:
        for key, (_, _, _, _, suffix, _) in SETS.items():
            files[f'train_gunet_{variant}_{key}.yml'] = train_file(variant, key)
            files[f'test_gunet_{variant}_{suffix}.yml'] = test_file(variant, key)
    for variant in REAL_VARIANTS:
        for key in REAL_SETS:
            files[f'train_gunet_{variant}_{key}.yml'] = real_train_file(variant, key)
            files[f'test_gunet_{variant}_{key}.yml'] = real_test_file(variant, key)
    return files


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', default=os.path.join(os.path.dirname(__file__), os.pardir, 'options'))
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    files = option_files()
    for name, text in files.items():
        with open(os.path.join(args.out, name), 'w') as f:
            f.write(text)
    print(f'wrote {len(files)} option files to {os.path.normpath(args.out)}')


if __name__ == '__main__':
    main()
