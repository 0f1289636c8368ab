"""Write options/train_gunet_{t,s,b,d}_{its,ots,haze4k,rshaze}.yml and the matching test files
from the paper's recipe (official gUNet configs), so the 32 files cannot drift apart.

    python scripts/make_option_files.py [--out options]
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The paper's numbers and the official experiment folders: one table, which the evaluation of the
# official checkpoints (scripts/evaluate_official.py) compares with.
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
    aug = 'true' if augment else 'false'
    val_crop_text = '~  # full images' if val_crop is None else f'{val_crop}  # centre crop, as the official config'
    return f"""\
# gUNet-{variant.upper()} on {desc}: the paper's recipe for {GPUS} GPUs.
# Total batch {total_batch} = {GPUS} GPUs x batch_size_per_gpu {per_gpu}. One epoch = {EPOCH_SAMPLES} samples
# = {iters_per_epoch} iterations; {EPOCHS} epochs = total_iter {total_iter}; warm-up {WARMUP_EPOCHS} epochs;
# FrozenBN for the last {FROZEN_BN_EPOCHS} epochs.
# To use G GPUs instead of {GPUS}: set batch_size_per_gpu to {total_batch} / G (same total batch; nothing
# else changes). If that does not fit in memory, use batch_size_per_gpu B, let k = B x G / {total_batch},
# multiply optim_g.lr and scheduler.eta_min by k, and divide total_iter, scheduler.total_iter,
# scheduler.warmup_iter, frozen_bn_iter, val_freq and save_checkpoint_freq by k.
# SyncBN switches itself on under distributed training when batch_size_per_gpu < 16 (sync_bn: auto).
#   {GPUS} GPUs: torchrun --nproc_per_node={GPUS} gunet_arch/train.py -opt options/{name}.yml --launcher pytorch
#   1 GPU:  python gunet_arch/train.py -opt options/{name}.yml --force_yml datasets:train:batch_size_per_gpu={total_batch}

name: {name}
model_type: GUNetModel
num_gpu: auto  # the GPUs this process sees (0 without CUDA: CPU)
manual_seed: 0
sync_bn: auto  # auto | true | false

datasets:
  train:
{lmdb_dataset(train_folder, train_folder, f'''    gt_size: 256
    edge_decay: 0.1  # snap crops to a border with probability 0.1 x crop / size
    use_hflip: {aug}
    use_rot: {aug}
    num_worker_per_gpu: 4
    batch_size_per_gpu: {per_gpu}
    dataset_enlarge_ratio: 1
    prefetch_mode: ~
''')}  val:
{lmdb_dataset(val_folder, val_folder, f'''    val_crop_size: {val_crop_text}
''')}
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
  val_freq: {eval_iter}  # every {EVAL_EPOCHS} epochs
  save_img: false
{METRICS}
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

name: {name}
model_type: GUNetModel
num_gpu: auto
manual_seed: 0

datasets:
  test:
{lmdb_dataset(val_folder, val_folder, '''    val_crop_size: ~
''')}
network_g:
  type: GUNet
  variant: {variant}

path:
  pretrain_network_g: experiments/train_gunet_{variant}_{key}/models/net_g_latest.pth
  param_key_g: params
  strict_load_g: true

val:
  save_img: true
  suffix: ~
{METRICS}"""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', default=os.path.join(os.path.dirname(__file__), os.pardir, 'options'))
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    for variant in RECIPE:
        for key, (_, _, _, _, suffix, _) in SETS.items():
            for name, text in ((f'train_gunet_{variant}_{key}.yml', train_file(variant, key)),
                               (f'test_gunet_{variant}_{suffix}.yml', test_file(variant, key))):
                with open(os.path.join(args.out, name), 'w') as f:
                    f.write(text)
    print(f'wrote {len(RECIPE) * len(SETS) * 2} option files to {os.path.normpath(args.out)}')


if __name__ == '__main__':
    main()
