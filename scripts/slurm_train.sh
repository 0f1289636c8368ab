#!/bin/bash
# Train gUNet on a Slurm cluster: copy this file, adjust the #SBATCH lines, and submit it from the
# project checkout (it runs gunet_arch/train.py relative to the working directory):
#
#   OPT=options/train_gunet_s_its.yml sbatch scripts/slurm_train.sh [more train.py arguments]
#
# One training process per GPU: --ntasks-per-node is the number of GPUs per node, and
# --gres=gpu:N asks for those N GPUs. Nodes x GPUs per node is the number of processes, and each
# process loads datasets.train.batch_size_per_gpu images per iteration, so
#
#   total batch = nodes x GPUs per node x batch_size_per_gpu.
#
# The paper's recipe uses a total batch of 128 for gUNet-T and gUNet-S, 64 for gUNet-B and 32 for
# gUNet-D (4 GPUs x 32, 16 or 8, as the shipped options/train_*.yml are written). Keep that total:
# e.g. 2 nodes x 4 GPUs with gUNet-S means batch_size_per_gpu 128 / 8 = 16, set in the option
# file or with --force_yml datasets:train:batch_size_per_gpu=16. The header of each
# options/train_*.yml says how to rescale learning rate and iterations if you change the total
# instead. Below 16 images per GPU BatchNorm becomes SyncBN by itself (sync_bn: auto), as in the
# paper. --cpus-per-task should cover datasets.train.num_worker_per_gpu loader workers plus the
# training process itself.
#
# Surviving the cluster: --requeue lets Slurm put the job back in the queue after a node failure
# or preemption, and --auto_resume makes every start continue from the newest training state in
# experiments/<name>/training_states. 120 s before the time limit Slurm sends SIGUSR1 to the
# training processes: they finish the iteration they are in, save its state and exit with status
# 75, upon which this script requeues the job, and the next start resumes from exactly that
# iteration. SIGTERM (preemption, scancel) makes them save and exit the same way; then Slurm
# requeues a preempted job itself, and a cancelled one stays cancelled. The 120 s and the
# cluster's KillWait leave ample time to save gUNet's states (a few MB).
# MASTER_PORT comes from the job id (or dist_params.port), so several jobs can share a node.
#
#SBATCH --job-name=gunet
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=4
#SBATCH --gres=gpu:4
#SBATCH --cpus-per-task=5
#SBATCH --time=24:00:00
#SBATCH --requeue
#SBATCH --signal=USR1@120
#SBATCH --output=slurm-%x-%j.out
#SBATCH --open-mode=append

# Slurm >= 22.05: srun no longer takes --cpus-per-task over from the allocation by itself.
export SRUN_CPUS_PER_TASK=${SLURM_CPUS_PER_TASK:-1}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}

echo "slurm_train.sh: job ${SLURM_JOB_ID:-?} (restart ${SLURM_RESTART_COUNT:-0}) on ${SLURM_JOB_NODELIST:-?}," \
    "${SLURM_NTASKS:-?} processes, option file ${OPT:-options/train_gunet_s_its.yml}"

# Cancelled (scancel) or out of time: Slurm sends SIGTERM here too. Exit once srun is done, so that
# a run stopped for good is never requeued below.
trap 'exit 143' TERM
srun python -u gunet_arch/train.py -opt ${OPT:-options/train_gunet_s_its.yml} --launcher slurm --auto_resume "$@"
status=$?
if [ "$status" -eq 75 ]; then  # stopped on a signal, its state saved (gunet_arch/models/stop_signals.py)
    echo "slurm_train.sh: training stopped and saved its state: requeueing job $SLURM_JOB_ID"
    scontrol requeue "$SLURM_JOB_ID"
fi
exit "$status"
