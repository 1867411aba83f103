"""Chunk execution on synthetic chunk sequences: which chunk's action runs when."""

import numpy as np
import pytest

from visual_lps.deploy.execution import ChunkExecutor


class CountingPolicy:
    """Chunk k (the k-th call) holds actions 100 k + j for j < horizon: every action names its chunk and slot."""

    def __init__(self, horizon: int = 4):
        self.calls, self.horizon = 0, horizon

    def __call__(self, observation) -> np.ndarray:
        chunk = 100.0 * self.calls + np.arange(self.horizon)[:, None]
        self.calls += 1
        return chunk


def run(executor: ChunkExecutor, steps: int) -> list[float]:
    return [float(executor(None)[0]) for _ in range(steps)]


def test_open_loop_runs_every_chunk_to_its_end():
    policy = CountingPolicy()
    assert run(ChunkExecutor(policy), 10) == [0, 1, 2, 3, 100, 101, 102, 103, 200, 201]
    assert policy.calls == 3


def test_replan_asks_every_k_steps_and_drops_the_rest():
    policy = CountingPolicy()
    assert run(ChunkExecutor(policy, "replan", replan_every=2), 6) == [0, 1, 100, 101, 200, 201]
    assert run(ChunkExecutor(CountingPolicy(), "replan", replan_every=9), 6) == [0, 1, 2, 3, 100, 101]


def test_ensemble_averages_every_chunks_prediction_of_the_step_older_ones_weighing_more():
    policy, decay = CountingPolicy(horizon=3), 0.5
    actions = run(ChunkExecutor(policy, "ensemble", decay=decay), 4)
    w = np.exp(-decay * np.arange(3))
    assert actions[0] == 0  # one chunk so far
    assert actions[1] == pytest.approx((w[0] * 1 + w[1] * 100) / w[:2].sum())
    assert actions[2] == pytest.approx((w[0] * 2 + w[1] * 101 + w[2] * 200) / w.sum())
    # chunk 0 has no prediction for step 3: chunks 1, 2 and 3 remain
    assert actions[3] == pytest.approx((w[0] * 102 + w[1] * 201 + w[2] * 300) / w.sum())
    assert policy.calls == 4


def test_reset_forgets_the_chunks_of_the_last_episode():
    executor = ChunkExecutor(CountingPolicy())
    run(executor, 2)
    executor.reset()
    assert run(executor, 1) == [100]


@pytest.mark.parametrize("kwargs, message", [
    (dict(mode="sometimes"), "choose one of open-loop, replan, ensemble"),
    (dict(mode="replan", replan_every=0), "replan_every must be at least 1"),
    (dict(mode="ensemble", decay=-1.0), "decay must be at least 0"),
])
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ChunkExecutor(CountingPolicy(), **kwargs)


def test_the_control_clock_keeps_periods_and_counts_the_overrun_ones():
    import time

    from visual_lps.deploy.execution import ControlClock

    clock = ControlClock(100.0)
    start = time.perf_counter()
    for _ in range(3):
        clock.wait()
    assert 0.025 <= time.perf_counter() - start < 0.2 and clock.late == 0
    time.sleep(0.03)  # a step that took three periods
    clock.wait()
    assert clock.late == 1
    with pytest.raises(ValueError, match="control rate must be positive"):
        ControlClock(0)
