import os
import sys

# tests import their shared helpers (_parity.py) as top-level modules.
sys.path.insert(0, os.path.dirname(__file__))

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture
def threads(request):
    """torch's intra-op thread count for one test, from indirect parametrization."""
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)
