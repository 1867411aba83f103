import os
import signal

import pytest
import torch

from visual_lps.faults import NonFiniteWatch, StopRequest


def test_watch_reports_each_value_at_the_first_step_it_went_bad():
    watch = NonFiniteWatch()
    watch.update({"critic/loss": torch.tensor(1.0), "train/grad_norm": torch.tensor(2.0)}, step=1)
    watch.check()
    watch.update({"critic/loss": torch.tensor(1.0), "train/grad_norm": torch.tensor(float("inf"))}, step=2)
    watch.update({"critic/loss": torch.tensor(float("nan")), "train/grad_norm": torch.tensor(float("nan"))}, step=3)
    with pytest.raises(FloatingPointError, match="non-finite train/grad_norm at step 2, critic/loss at step 3"):
        watch.check()


def test_first_signal_requests_a_stop_second_acts_as_before():
    previous = signal.getsignal(signal.SIGTERM)
    stop = StopRequest()
    try:
        assert not stop.should_stop(1, torch.device("cpu"))
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.should_stop(2, torch.device("cpu")) and stop.signal_name == "SIGINT"
        with pytest.raises(KeyboardInterrupt):  # Python's own SIGINT handler is back
            os.kill(os.getpid(), signal.SIGINT)
    finally:
        stop.restore()
    assert signal.getsignal(signal.SIGTERM) is previous
