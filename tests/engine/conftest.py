import pytest


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """The tiny models here do microsecond-sized ops; on a shared 2-core machine OpenMP's spinning
    threads make each of them take milliseconds. One thread keeps these tests fast and changes no
    result (every comparison here is within one process)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
