"""GUNetModel: BasicSR's SRModel with gUNet's training recipe.

On top of SRModel (checkpoints with params/params_ema, EMA, validation, loggers) it adds AdamW,
the WarmupCosineLR schedule, mixed precision, FrozenBN, SyncBN for small per-GPU batches,
skipping of NaN/Inf steps, CPU (gloo) DDP, crash-safe checkpoints, and validation/testing on
float outputs with a per-image CSV.
"""
import datetime
import errno
import os
import re
import warnings
from collections import OrderedDict
from os import path as osp

import torch
import torch.distributed as dist
from basicsr.metrics import calculate_metric
from basicsr.models.sr_model import SRModel
from basicsr.utils import get_root_logger, imwrite, tensor2img
from basicsr.utils.dist_util import master_only
from basicsr.utils.registry import MODEL_REGISTRY
from torch.nn.parallel import DataParallel, DistributedDataParallel
from tqdm import tqdm

from gunet_arch import compat
from gunet_arch.archs import checkpoints
from gunet_arch.archs.variants import network_config
from gunet_arch.atomic import atomic_path, atomic_torch_save
from gunet_arch.tools.metrics_csv import write_metrics_csv

from .amp import AmpSettings
from .cpu_allocator import keep_freed_memory
from .frozen_bn import bn_buffers, restore_bn_buffers, set_frozen_bn
from .lr_scheduler import LR_SCHEDULER_REGISTRY, build_scheduler
from .stop_signals import PREEMPTED_EXIT_CODE, StopSignals, resume_command
from .sync_bn import convert_sync_batchnorm

# Metrics that read float images in [0, 1]; every other metric gets BasicSR's uint8 images.
FLOAT_METRICS = ('calculate_psnr_dehaze', 'calculate_ssim_dehaze')
# How long the other ranks wait for rank 0's validation.
VALIDATION_TIMEOUT = datetime.timedelta(hours=24)
# The per-GPU batch below which BatchNorm statistics are too noisy without synchronisation.
SYNC_BN_BATCH = 16


def _network_signature(net_opt):
    """network_g options reduced to what decides the shapes of the weights (a resume may differ
    in the rest, e.g. channels_last)."""
    sig = {k: v for k, v in dict(net_opt).items() if k not in ('variant', 'channels_last')}
    if net_opt.get('type') == 'GUNet':
        sig.update(network_config(net_opt.get('variant', 't'), net_opt.get('base_dim'), net_opt.get('depths'),
                                  net_opt.get('kernel_size')))
    return sig


def _write_or_stop(write, path):
    """``write(path)`` (a safe write, ``gunet_arch.atomic``); one that fails (a full disk)
    leaves the previous files as they were and stops the run: training on without checkpoints
    would lose days at the next crash."""
    try:
        write(path)
    except (OSError, RuntimeError) as err:  # torch's zip writer reports a short write as RuntimeError
        message = (f'cannot write {path} ({getattr(err, "strerror", None) or err}); the previous checkpoints and '
                   'training states are intact. Training stops: free space, then continue with --auto_resume.')
        get_root_logger().error(message)
        raise OSError(getattr(err, 'errno', None) or errno.EIO, message) from err


@MODEL_REGISTRY.register()
class GUNetModel(SRModel):
    """gUNet training and testing through BasicSR (see the module docstring for what it adds)."""

    def __init__(self, opt):
        if opt.get('num_gpu', 0) != 0 and not torch.cuda.is_available():
            warnings.warn(f'num_gpu is {opt["num_gpu"]} but CUDA is not available: running on the CPU',
                          RuntimeWarning, stacklevel=2)
            opt['num_gpu'] = 0
        self.bad_steps = 0
        self.bad_steps_in_a_row = 0
        self.bn_frozen = False
        self.scaler = None
        self.stop_signals = None
        self._validation_group = None
        super().__init__(opt)

    # -- devices and distribution ---------------------------------------------------------------
    def _use_sync_bn(self):
        setting = self.opt.get('sync_bn', 'auto')
        if not self.opt['dist'] or not self.is_train:
            return False, 'not distributed training'
        if setting is False:
            return False, 'sync_bn is false'
        if setting is True:
            return True, 'sync_bn is true'
        batch = self.opt['datasets']['train']['batch_size_per_gpu']
        if batch < SYNC_BN_BATCH:
            return True, f'batch_size_per_gpu {batch} < {SYNC_BN_BATCH}'
        return False, f'batch_size_per_gpu {batch} >= {SYNC_BN_BATCH}'

    def model_to_device(self, net):
        """BasicSR's version, plus SyncBN, and DDP without ``device_ids`` on the CPU (BasicSR
        passes the current CUDA device, which fails without CUDA)."""
        net = net.to(self.device)
        if self.opt['dist']:
            use_sync, reason = self._use_sync_bn()
            if use_sync:
                net = convert_sync_batchnorm(net, self.device)
            get_root_logger().info(f'SyncBN: {"on" if use_sync else "off"} ({reason}).')
            kwargs = {'find_unused_parameters': self.opt.get('find_unused_parameters', False)}
            if self.device.type == 'cuda':
                kwargs['device_ids'] = [torch.cuda.current_device()]
            net = DistributedDataParallel(net, **kwargs)
        elif self.opt['num_gpu'] > 1:
            # Each GPU then normalises its own share of the batch; only DDP gets SyncBN.
            get_root_logger().warning('DataParallel over several GPUs: BatchNorm is not synchronised; '
                                      'launch with --launcher pytorch for SyncBN.')
            net = DataParallel(net)
        return net

    # -- optimisation setup ----------------------------------------------------------------------
    def init_training_settings(self):
        train_opt = self.opt['train']
        self.amp = AmpSettings(train_opt.get('amp'), self.device)
        self.scaler = self.amp.make_scaler()
        self.frozen_bn_iter = train_opt.get('frozen_bn_iter')
        self.max_bad_steps = int(train_opt.get('max_bad_steps') or 10)
        super().init_training_settings()
        logger = get_root_logger()
        logger.info(f'Mixed precision: {self.amp}. FrozenBN from iteration: {self.frozen_bn_iter}. '
                    f'Stop after {self.max_bad_steps} NaN/Inf steps in a row.')

    def get_optimizer(self, optim_type, params, lr, **kwargs):
        # basicsr 1.4.2 knows only Adam; gUNet trains with AdamW.
        if optim_type in ('AdamW', 'Adam') and 'fused' not in kwargs and 'foreach' not in kwargs:
            # One fused kernel over all parameters (same update, up to float rounding). PyTorch's
            # default on the CPU is a Python loop of ~10 small ops per parameter tensor: ~2,500
            # op calls per step for gUNet-S. train.optim_g.fused / foreach override this.
            kwargs['fused'] = self.device.type in ('cpu', 'cuda')
        if optim_type == 'AdamW':
            return torch.optim.AdamW(params, lr, **kwargs)
        if optim_type == 'Adam':
            return torch.optim.Adam(params, lr, **kwargs)
        return super().get_optimizer(optim_type, params, lr, **kwargs)

    def setup_schedulers(self):
        # BasicSR's setup_schedulers only knows its own types: ours come from our registry.
        sched_opt = dict(self.opt['train']['scheduler'])
        sched_type = sched_opt.pop('type')
        if sched_type not in LR_SCHEDULER_REGISTRY:
            return super().setup_schedulers()
        for optimizer in self.optimizers:
            self.schedulers.append(build_scheduler(sched_type, optimizer, **sched_opt))

    # -- training step ---------------------------------------------------------------------------
    def _apply_frozen_bn(self, current_iter):
        frozen = self.frozen_bn_iter is not None and current_iter >= self.frozen_bn_iter
        if frozen and not self.bn_frozen:
            get_root_logger().info(f'FrozenBN from iteration {current_iter}: BatchNorm uses its running statistics.')
        self.bn_frozen = frozen
        set_frozen_bn(self.net_g, frozen)

    def _training_loop_started(self):
        """Process-wide settings for a real training run (BasicSR's loop has started), never
        for a model that is only built (a notebook, a test) in a process that goes on to do
        other things: listen for stop signals, and on the CPU keep freed memory for reuse."""
        self.stop_signals = StopSignals().install()
        if self.device.type == 'cpu':
            get_root_logger().info(f'CPU allocator: {keep_freed_memory()}.')

    def _agree(self, loss):
        """``(finite, stop)``, the same on every process, in one all-reduce per iteration:
        whether the loss is finite everywhere (all must skip a bad step together) and whether
        any process received a stop signal (all must stop after the same iteration)."""
        if self.stop_signals is None and compat.current_epoch() is not None:
            self._training_loop_started()
        stop = self.stop_signals is not None and self.stop_signals.received is not None
        finite = torch.isfinite(loss.detach()).all().float()
        flags = torch.stack([finite, finite.new_tensor(0.0 if stop else 1.0)])
        if self.opt['dist']:
            dist.all_reduce(flags, op=dist.ReduceOp.MIN)
        finite, go_on = flags.tolist()
        return finite == 1.0, go_on == 0.0

    def _stop_after(self, current_iter):
        """Save this iteration's state and weights (as BasicSR's own save points do, plus
        net_g_latest.pth), then leave with PREEMPTED_EXIT_CODE on every rank together."""
        logger = get_root_logger()
        why = self.stop_signals.received if self.stop_signals and self.stop_signals.received else 'another rank'
        logger.warning(f'Stop requested ({why}): saving the state of iteration {current_iter}.')
        epoch = compat.current_epoch()
        self.save(epoch, current_iter)
        self.save(epoch, -1)
        if self.opt['dist']:
            dist.barrier()  # no rank leaves (and makes its launcher stop the others) before the save
        logger.warning(f'Training stopped after iteration {current_iter} of {self.opt["train"]["total_iter"]}; '
                       f'state and weights saved in {self.opt["path"]["experiments_root"]}. Continue with the same '
                       f'launch command and --auto_resume: {resume_command()}  (exit status {PREEMPTED_EXIT_CODE})')
        raise SystemExit(PREEMPTED_EXIT_CODE)

    def optimize_parameters(self, current_iter):
        self._apply_frozen_bn(current_iter)
        saved_bn = bn_buffers(self.net_g)
        self.optimizer_g.zero_grad(set_to_none=True)
        with self.amp.autocast():
            self.output = self.net_g(self.lq)
        output = self.output.float()

        l_total = 0
        loss_dict = OrderedDict()
        if self.cri_pix:
            l_pix = self.cri_pix(output, self.gt)
            l_total += l_pix
            loss_dict['l_pix'] = l_pix
        if self.cri_perceptual:
            l_percep, l_style = self.cri_perceptual(output, self.gt)
            if l_percep is not None:
                l_total += l_percep
                loss_dict['l_percep'] = l_percep
            if l_style is not None:
                l_total += l_style
                loss_dict['l_style'] = l_style

        finite, stop = self._agree(l_total)
        if finite:
            if self.scaler is not None:
                self.scaler.scale(l_total).backward()
                self.scaler.step(self.optimizer_g)  # skips the step itself on overflowing gradients
                self.scaler.update()
            else:
                l_total.backward()
                self.optimizer_g.step()
            self.bad_steps_in_a_row = 0
            if self.ema_decay > 0:
                self.model_ema(decay=self.ema_decay)
        else:
            self._skip_bad_step(current_iter, l_total, saved_bn)

        self.log_dict = self.reduce_loss_dict(loss_dict)
        if self.bad_steps:
            self.log_dict['bad_steps'] = self.bad_steps
        if stop:
            self._stop_after(current_iter)

    def _skip_bad_step(self, current_iter, loss, saved_bn):
        """No backward, no optimizer step, and the BatchNorm statistics the forward pass changed
        are put back: the step leaves no trace but its count. Every process takes this branch
        together, so DDP stays in step (it tolerates a forward pass without a backward)."""
        self.optimizer_g.zero_grad(set_to_none=True)
        with torch.no_grad():
            restore_bn_buffers(saved_bn)
        self.bad_steps += 1
        self.bad_steps_in_a_row += 1
        logger = get_root_logger()
        logger.warning(f'Iteration {current_iter}: loss is {loss.item()}; step skipped '
                       f'({self.bad_steps_in_a_row} in a row, {self.bad_steps} in all).')
        if self.bad_steps_in_a_row >= self.max_bad_steps:
            raise RuntimeError(
                f'Training stopped at iteration {current_iter}: {self.bad_steps_in_a_row} steps in a row had a '
                f'NaN/Inf loss (train.max_bad_steps = {self.max_bad_steps}). No weights were changed by those '
                f'steps; the last checkpoint in {self.opt["path"].get("models")} is intact. Check the data, '
                'lower the learning rate, or switch train.amp off or to bfloat16.')

    # -- inference and validation ------------------------------------------------------------------
    def test(self):
        """Full-size forward in fp32, clamped to [0, 1]. Uses the bare network: under DDP only
        rank 0 validates, and the DDP wrapper would wait for the other ranks.

        With ``val.tile`` (pixels; 0 or ~: whole images), an image larger than a tile runs in
        overlapping tiles of that size, sharing ``val.tile_overlap`` pixels (default 32), with
        the SK fusions' statistics gathered over the whole image first: the tiling of
        ``gunet_arch.tools.inference.run_tiled``, so multi-megapixel test photos fit in memory and
        score as the whole image does (within a few hundredths of a dB; see the README).
        """
        net = self.net_g_ema if hasattr(self, 'net_g_ema') else self.get_bare_model(self.net_g)
        val_opt = self.opt.get('val') or {}
        tile = val_opt.get('tile') or 0
        overlap = val_opt.get('tile_overlap')
        overlap = 32 if overlap is None else overlap
        was_training = net.training
        net.eval()
        with torch.no_grad():
            if tile and max(self.lq.shape[-2:]) > tile:
                from gunet_arch.tools.inference import run_tiled

                self.output = torch.cat([run_tiled(net, lq[None], tile, overlap) for lq in self.lq])
            else:
                self.output = net(self.lq).clamp_(0, 1)
        net.train(was_training)
        if net is not getattr(self, 'net_g_ema', None):
            set_frozen_bn(net, self.bn_frozen)

    def _image_metrics(self, output, gt):
        """Every val.metrics value of one image; ours on floats, BasicSR's on uint8 as usual."""
        results = OrderedDict()
        uint8 = None
        for name, metric_opt in self.opt['val']['metrics'].items():
            if metric_opt['type'] in FLOAT_METRICS:
                data = {'img': output.permute(1, 2, 0).numpy(), 'img2': gt.permute(1, 2, 0).numpy()}
            else:
                uint8 = uint8 or {'img': tensor2img([output]), 'img2': tensor2img([gt])}
                data = uint8
            results[name] = float(calculate_metric(data, metric_opt))
        return results

    def _save_path(self, img_name, dataset_name, current_iter):
        if self.opt['is_train']:
            return osp.join(self.opt['path']['visualization'], img_name, f'{img_name}_{current_iter}.png')
        suffix = self.opt['val'].get('suffix') or self.opt['name']
        return osp.join(self.opt['path']['visualization'], dataset_name, f'{img_name}_{suffix}.png')

    def validation(self, dataloader, current_iter, tb_logger, save_img=False):
        """Under DDP only rank 0 validates while the others wait for it in their next collective.
        That wait is bounded by dist_params.timeout, meant for dead ranks, and a long validation
        must not trip it: the others wait here instead, at a barrier of a group with no such
        bound (a rank that dies still ends it at once, its connections closing)."""
        super().validation(dataloader, current_iter, tb_logger, save_img)
        if self.opt['dist'] and self.is_train:
            if self._validation_group is None:
                self._validation_group = dist.new_group(backend='gloo', timeout=VALIDATION_TIMEOUT)
            dist.barrier(group=self._validation_group)

    def nondist_validation(self, dataloader, current_iter, tb_logger, save_img):
        dataset_name = dataloader.dataset.opt['name']
        metrics_opt = self.opt['val'].get('metrics') or {}
        with_metrics = bool(metrics_opt)
        if with_metrics:
            self._initialize_best_metric_results(dataset_name)
        rows = []
        gallery = None
        if not self.opt['is_train'] and self.opt['val'].get('gallery', True):
            # The results gallery (results/<name>/index.html) shows the hazy and clear images the
            # test read, from folders or LMDB: they are saved next to it as the test runs.
            from gunet_arch.tools.gallery import TestSetGallery

            gallery = TestSetGallery(self.opt['path']['results_root'], dataset_name)
        pbar = tqdm(total=len(dataloader), unit='image') if self.opt['val'].get('pbar', False) else None
        for val_data in dataloader:
            img_name = osp.splitext(osp.basename(val_data['lq_path'][0]))[0]
            self.feed_data(val_data)
            self.test()
            output = self.output.detach().float().cpu()[0]
            gt = self.gt.detach().float().cpu()[0] if hasattr(self, 'gt') else None
            dehazed = None
            if save_img:
                dehazed = self._save_path(img_name, dataset_name, current_iter)
                with atomic_path(dehazed) as tmp:
                    imwrite(tensor2img([output]), tmp)
            if gallery is not None:
                gt_path = val_data.get('gt_path')
                gallery.add(img_name, tensor2img([self.lq.detach().float().cpu()[0]]),
                            dehazed if dehazed is not None else tensor2img([output]),
                            clear=tensor2img([gt]) if gt is not None else None,
                            clear_name=gt_path[0] if gt_path else None)
            if with_metrics and gt is not None:
                rows.append((img_name, self._image_metrics(output, gt)))
            for name in ('lq', 'gt', 'output'):
                if hasattr(self, name):
                    delattr(self, name)
            if pbar is not None:
                pbar.update(1)
                pbar.set_description(f'Test {img_name}')
        if pbar is not None:
            pbar.close()
        if with_metrics and rows:
            self.metric_results = {name: sum(r[name] for _, r in rows) / len(rows) for name in metrics_opt}
            for name, value in self.metric_results.items():
                self._update_best_metric_result(dataset_name, name, value, current_iter)
            self._log_validation_metric_values(current_iter, dataset_name, tb_logger)
            if not self.opt['is_train']:
                self._write_metrics_csv(dataset_name, rows)
        if gallery is not None:
            from gunet_arch.tools.gallery import option_file_from_argv, options_text, write_results_gallery

            gallery.finish(rows, {name: m['type'] for name, m in metrics_opt.items()})
            option_file = option_file_from_argv()
            page = write_results_gallery(self.opt['path']['results_root'], title=f'gUNet test: {self.opt["name"]}',
                                         option_file=option_file,
                                         option_text=None if option_file else options_text(self.opt))
            get_root_logger().info(f'Results gallery: {page}')

    @master_only
    def _write_metrics_csv(self, dataset_name, rows):
        names = list(self.metric_results)
        path = osp.join(self.opt['path']['results_root'], f'{dataset_name}_metrics.csv')
        write_metrics_csv(path, names, rows, self.metric_results)
        get_root_logger().info(f'Per-image metrics of {dataset_name} ({len(rows)} images): {path}')

    # -- checkpoints --------------------------------------------------------------------------------
    @master_only
    def save_network(self, net, net_label, current_iter, param_key='params'):
        """BasicSR's format (``.pth``, or ``.safetensors`` with ``logger.save_format:
        safetensors``), written safely: a run killed mid-write never leaves a truncated
        checkpoint behind for --auto_resume to pick up."""
        if current_iter == -1:
            current_iter = 'latest'
        ext = '.safetensors' if self.opt['logger'].get('save_format') == 'safetensors' else '.pth'
        save_path = osp.join(self.opt['path']['models'], f'{net_label}_{current_iter}{ext}')
        nets = net if isinstance(net, list) else [net]
        keys = param_key if isinstance(param_key, list) else [param_key]
        if len(nets) != len(keys):
            raise ValueError('save_network: the numbers of networks and param keys differ')
        save_dict = {}
        for net_, key in zip(nets, keys):
            state_dict = checkpoints.strip_module_prefix(self.get_bare_model(net_).state_dict())
            save_dict[key] = OrderedDict((k, v.cpu()) for k, v in state_dict.items())
        _write_or_stop(lambda path: checkpoints.save_weights(save_dict, path), save_path)

    @master_only
    def save_training_state(self, epoch, current_iter):
        if current_iter == -1:
            return
        state = {
            'epoch': epoch,
            'iter': current_iter,
            'optimizers': [o.state_dict() for o in self.optimizers],
            'schedulers': [s.state_dict() for s in self.schedulers],
            'amp_scaler': self.scaler.state_dict() if self.scaler is not None else None,
            'bad_steps': self.bad_steps,
            'network_g': _network_signature(self.opt['network_g']),
        }
        _write_or_stop(lambda path: atomic_torch_save(state, path),
                       osp.join(self.opt['path']['training_states'], f'{current_iter}.state'))

    def save(self, epoch, current_iter):
        super().save(epoch, current_iter)
        if current_iter != -1:
            self._prune_checkpoints()

    @master_only
    def _prune_checkpoints(self):
        """``logger.keep_checkpoints: K`` keeps the newest K ``net_g_<iter>.pth`` and the newest
        K training states (default: all of them, as BasicSR does)."""
        keep = self.opt['logger'].get('keep_checkpoints')
        if not keep:
            return
        for folder, pattern in ((self.opt['path']['models'], r'net_g_(\d+)\.(pth|safetensors)'),
                                (self.opt['path']['training_states'], r'(\d+)\.state')):
            numbered = sorted((int(m.group(1)), name) for name in os.listdir(folder)
                              for m in [re.fullmatch(pattern, name)] if m)
            for _, name in numbered[:-keep]:
                os.remove(osp.join(folder, name))

    @master_only
    def _remove_partial_files(self):
        """A process killed while saving leaves its temporary file (``.<name>.*.partial.*``)
        behind; nothing reads it, and it is removed when the experiment resumes."""
        for folder in (self.opt['path']['models'], self.opt['path']['training_states']):
            for name in os.listdir(folder) if osp.isdir(folder) else []:
                if name.startswith('.') and '.partial' in name:
                    os.remove(osp.join(folder, name))

    def resume_training(self, resume_state):
        self._remove_partial_files()
        saved = resume_state.get('network_g')
        saved = _network_signature(saved) if saved is not None else None
        current = _network_signature(self.opt['network_g'])
        if saved is not None and saved != current:
            raise ValueError(f'The training state was saved by another network ({saved}); this option file '
                             f'builds {current}. Resume with the option file of that run, or start a new '
                             'experiment name.')
        try:
            super().resume_training(resume_state)
        except (AssertionError, ValueError, KeyError, RuntimeError) as err:
            raise ValueError(f'The training state does not fit this model\'s optimizer/scheduler ({err}); '
                             'it was probably saved by another network or training setup.') from err
        scaler_state = resume_state.get('amp_scaler')
        if self.scaler is not None and scaler_state:
            self.scaler.load_state_dict(scaler_state)
        elif scaler_state and self.scaler is None:
            get_root_logger().info('The training state has a float16 loss-scaler state; not needed here, ignored.')
        self.bad_steps = int(resume_state.get('bad_steps', 0))

    def load_network(self, net, load_path, strict=True, param_key='params'):
        """BasicSR's loader, with two additions: official gUNet checkpoints
        (``{'state_dict': {'module.…': …}}``) load as they are, and a strict load (always
        strict when resuming) fails with the first mismatching key before anything is loaded,
        instead of a partial load."""
        if self.opt['path'].get('resume_state'):
            strict = True
        logger = get_root_logger()
        checkpoint = checkpoints.read_checkpoint(load_path)
        state_dict = checkpoints.extract_state_dict(checkpoint, param_key=param_key, source=load_path, log=logger.info)
        bare = self.get_bare_model(net)
        logger.info(f'Loading {bare.__class__.__name__} model from {load_path}, with param key: [{param_key}].')
        if strict:
            source = f'{load_path} (network_g: {dict(self.opt["network_g"])})'
            checkpoints.check_state_dict(state_dict, bare, source=source)
        else:
            self._print_different_keys_loading(bare, state_dict, strict)
        bare.load_state_dict(state_dict, strict=strict)
