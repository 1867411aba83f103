import os
import signal

import pytest

from visual_lps.faults import StopRequest


def test_first_signal_requests_a_stop_second_acts_as_before():
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
    assert signal.getsignal(signal.SIGTERM) is previous
