import os
import signal

import pytest

from visual_lps.training.signals import StopRequest


def test_first_signal_requests_a_stop_second_acts_as_before():
    # Python's own SIGINT handler first, whatever earlier tests of this process left installed.
    outer = signal.signal(signal.SIGINT, signal.default_int_handler)
    previous = signal.getsignal(signal.SIGTERM)
    stop = StopRequest()
    try:
        assert not stop.should_stop(1)
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.should_stop(2) and stop.signal_name == "SIGINT"
        with pytest.raises(KeyboardInterrupt):  # Python's own SIGINT handler is back
            os.kill(os.getpid(), signal.SIGINT)
    finally:
        stop.restore()
        signal.signal(signal.SIGINT, outer)
    assert signal.getsignal(signal.SIGTERM) is previous
