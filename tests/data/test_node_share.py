"""One copy of the observations per node: local rank 0 loads, the other local processes map its pages."""

import numpy as np
import pytest

from visual_lps.data.node_share import NodeShare


def never_loaded() -> np.ndarray:
    raise AssertionError("a process other than local rank 0 must not read the dataset")


def test_first_process_loads_and_the_others_map_the_same_pages(tmp_path):
    first, other = NodeShare("run", 0, 2, root=tmp_path), NodeShare("run", 1, 2, root=tmp_path)
    values = np.arange(12, dtype=np.float32).reshape(3, 4)
    mine = first.array("train-front_image", lambda: values)
    theirs = other.array("train-front_image", never_loaded)
    assert np.array_equal(theirs, values) and theirs.dtype == np.float32
    mine[0, 0] = 99.0  # the same memory, not a copy
    assert theirs[0, 0] == 99.0
    assert other.follows and not first.follows
    assert other.holds("train-front_image") and not other.holds("valid-front_image")
    assert "one copy on this node" in other.describe()

    first.release()
    assert list(tmp_path.iterdir()) == []  # nothing left behind once every process has mapped it
    assert theirs[1, 1] == 5.0  # mappings outlive the names


def test_one_process_loads_directly_and_writes_nothing(tmp_path):
    share = NodeShare("run", 0, 1, root=tmp_path)
    values = np.ones(3)
    assert share.array("observations", lambda: values) is values
    assert list(tmp_path.iterdir()) == [] and share.describe() == ""


def test_a_process_that_finds_nothing_shared_says_so(tmp_path):
    with pytest.raises(RuntimeError, match="did not share 'observations'"):
        NodeShare("run", 1, 2, root=tmp_path).array("observations", never_loaded)


def test_a_failed_load_leaves_no_file(tmp_path):
    def broken() -> np.ndarray:
        raise ValueError("corrupt")

    with pytest.raises(ValueError, match="corrupt"):
        NodeShare("run", 0, 2, root=tmp_path).array("observations", broken)
    assert list(tmp_path.iterdir()) == []
