"""Fixtures shared by the training tests."""
import pytest

import rnnfast as rf
from rnnfast import _threads


@pytest.fixture
def one_thread():
    """Tiny shapes: one kernel thread (restored afterwards)."""
    before = _threads._num_threads
    rf.set_num_threads(1)
    yield
    rf.set_num_threads(before)
