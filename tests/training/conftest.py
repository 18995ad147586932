"""Fixtures for the training tests."""

import pytest
import torch


@pytest.fixture
def one_thread():
    """Run the test with one intra-op thread: on a shared 2-core machine, intra-op threads only wait on each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
