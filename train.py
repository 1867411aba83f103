"""Train LPS (or another agent) on an OGBench task or a robot HDF5 dataset.

    python train.py --task cube-single --steps 100000
    accelerate launch train.py --task cube-single
    accelerate launch train.py --task robot --dataset data/my_robot.hdf5

Every config field is a flag; `python train.py --help` lists them with their defaults.
"""

import os

from visual_lps.trainer import parse_args, train


def main() -> None:
    train_cfg, agent_cfg = parse_args()
    outcome = train(train_cfg, agent_cfg)
    if int(os.environ.get("RANK", "0")) != 0:
        return
    if outcome.stopped_by:
        print(f"stopped by {outcome.stopped_by} after step {outcome.step} (checkpoint written); continue with: "
              f"accelerate launch train.py --resume --out {train_cfg.out}")
    metrics = outcome.metrics
    if "eval/success_rate" in metrics:
        print(f"final success rate: {metrics['eval/success_rate']:.2%}")
    elif metrics:
        print("final offline metrics: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
    print(f"run folder: {train_cfg.out} (TensorBoard: tensorboard --logdir {train_cfg.out}/tb)")


if __name__ == "__main__":
    main()
