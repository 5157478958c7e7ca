import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """The CI machine has 2 shared cores: one intra-op thread is much faster than two fighting ones."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(n)
