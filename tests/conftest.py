"""Fixtures shared by the test modules."""

import pytest
import torch


@pytest.fixture(scope="module")
def single_thread():
    """One intra-op thread for a module: on two shared cores, threads only add contention for tiny tensors
    (and subprocesses the tests start run with one too, so floating point agrees bit for bit)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
