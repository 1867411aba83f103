"""Train LPS (or another agent) on an OGBench task.

    python train.py --task cube-single --steps 100000
    accelerate launch train.py --task cube-single

Every config field is a flag; `python train.py --help` lists them with their defaults.
"""

from visual_lps.trainer import parse_args, train


def main() -> None:
    train_cfg, agent_cfg = parse_args()
    metrics = train(train_cfg, agent_cfg)
    if metrics:
        print(f"final success rate: {metrics['eval/success_rate']:.2%}")
    print(f"run folder: {train_cfg.out} (TensorBoard: tensorboard --logdir {train_cfg.out}/tb)")


if __name__ == "__main__":
    main()
