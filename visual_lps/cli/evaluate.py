"""Evaluate a trained agent in its OGBench single-task env; optionally write a video of the episodes.

    python tools/evaluate.py --checkpoint runs/cube-single-task1-lps-s0 --episodes 50 --video eval.mp4
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


from visual_lps.deploy.execution import MODES
from visual_lps.files import write_video_atomic


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="run folder (its latest checkpoint) or checkpoint folder")
    parser.add_argument("--episodes", type=int, default=50, help="evaluation episodes")
    parser.add_argument("--task-id", type=int, default=None, help="evaluate on another task id than trained on")
    parser.add_argument("--seed", type=int, default=0, help="seed of the evaluation episodes")
    parser.add_argument("--video", type=Path, default=None, help="write the episodes to this video (.mp4)")
    parser.add_argument("--video-size", type=int, default=256, help="video frame size of state tasks (pixels)")
    parser.add_argument("--max-episode-steps", type=int, default=None, help="override the task's time limit")
    parser.add_argument("--device", default="cpu", help="torch device to run the policy on")
    parser.add_argument("--execution", default="open-loop", choices=MODES,
                        help="how chunks run: to their end (open-loop, as trained), re-planned every --replan-every "
                             "steps, or temporally ensembled (ACT's exponential weights, --ensemble-decay)")
    parser.add_argument("--replan-every", type=int, default=1, help="steps between chunks with --execution replan")
    parser.add_argument("--ensemble-decay", type=float, default=0.01,
                        help="weight exp(-decay * i) of the i-th oldest chunk with --execution ensemble")
    args = parser.parse_args(argv)
    if args.replan_every < 1:
        parser.error("--replan-every must be at least 1")
    if args.ensemble_decay < 0:
        parser.error("--ensemble-decay must be at least 0")

    import torch

    from visual_lps.runs.checkpoints import CheckpointError, load_agent
    from visual_lps.envs.ogbench_env import evaluate, make_eval_env
    from visual_lps.deploy.execution import ChunkExecutor
    from visual_lps.deploy.policy import Policy
    from visual_lps.tasks import get_task

    if args.episodes < 1:
        sys.exit("error: --episodes must be at least 1")
    try:
        agent, train_cfg, _, _, ckpt = load_agent(args.checkpoint, args.device)
    except CheckpointError as e:
        sys.exit(f"error: --checkpoint {e}")
    task = get_task(train_cfg.task)
    if not task.has_simulator:
        sys.exit(f"error: {ckpt} was trained on a robot dataset, which has no simulator to evaluate in; its "
                 f"offline metrics on the held-out demos are in the run's TensorBoard logs (valid/*)")
    env_name = task.eval_env_name(args.task_id or train_cfg.task_id)
    # A visual policy's video shows its own camera frames; a state policy's, the env's rendered view.
    record = None if args.video is None else ("observation" if agent.encoders.first_encoder.is_image else "render")
    env = make_eval_env(env_name, render_size=args.video_size if record == "render" else None,
                        max_episode_steps=args.max_episode_steps)
    policy = Policy(agent, args.device)
    executor = ChunkExecutor(policy, args.execution, args.replan_every, args.ensemble_decay)
    with torch.inference_mode():
        result = evaluate(policy, env, args.episodes, seed=args.seed, record=record, progress=True, executor=executor)
    print(f"{ckpt}: {env_name} ({args.execution}): success rate {result.success_rate:.2%} over {args.episodes} episodes "
          f"(mean return {result.mean_return:.1f}, mean length {result.mean_length:.0f})")
    if args.video is not None:
        write_video_atomic(args.video, result.frames, fps=int(env.metadata.get("render_fps", 20)))
        print(f"video: {args.video} ({len(result.frames)} frames)")


if __name__ == "__main__":
    main()
