"""Test-wide settings: one torch thread, here and in every process the tests start.

The tests run tiny models, for which threads only add overhead; and two multi-threaded processes
sharing a small machine (DDP tests, script runs) can run many times slower than single-threaded ones.
"""

import os

import torch

os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)
