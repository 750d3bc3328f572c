import os

import pytest
import torch

# Two cores here: keep each test process from oversubscribing them.
torch.set_num_threads(int(os.environ.get("USAM_TEST_THREADS", "2")))
