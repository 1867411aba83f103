"""Train LPS (or another agent) on an OGBench task or a robot HDF5 dataset.

    python train.py --task cube-single --steps 100000
    python train.py --task cube-single --steps 100000 --online-steps 100000   # then fine-tune online
    accelerate launch train.py --task cube-single
    accelerate launch train.py --task robot --dataset data/my_robot.hdf5

Every config field is a flag; `python train.py --help` lists them with their defaults.

Exit status: 0 when the run reached --steps; 128 + the signal's number (143 for SIGTERM, 130 for SIGINT) when
a signal stopped it early after writing a checkpoint (continue with --resume); 1 or 2 on an error.
"""

import os
import signal
import sys

from visual_lps.runs.folder import RunFolder
from visual_lps.training.flags import parse_args
from visual_lps.training.online import online_summary
from visual_lps.training.trainer import train


def main(argv: list[str] | None = None) -> int:
    train_cfg, agent_cfg = parse_args(argv)
    outcome = train(train_cfg, agent_cfg)
    # Another process's signal stopped this one: the status of the signal schedulers send, SIGTERM.
    status = 128 + getattr(signal, outcome.stopped_by, signal.SIGTERM) if outcome.stopped_by else 0
    if int(os.environ.get("RANK", "0")) != 0:
        return status
    if outcome.stopped_by:
        print(f"stopped by {outcome.stopped_by} after step {outcome.step} (checkpoint written, exit status "
              f"{status}); continue with: accelerate launch train.py --resume --out {train_cfg.out}")
    if train_cfg.online_steps:
        print(online_summary(RunFolder(train_cfg.out).online))
    metrics = outcome.metrics
    if "eval/success_rate" in metrics:
        print(f"final success rate: {metrics['eval/success_rate']:.2%}")
    elif metrics:
        print("final offline metrics: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
    print(f"run folder: {train_cfg.out} (TensorBoard: tensorboard --logdir {train_cfg.out}/tb)")
    return status


if __name__ == "__main__":
    sys.exit(main())
