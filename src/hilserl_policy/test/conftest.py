"""Tests use tiny networks: one torch thread is faster for them and immune to a busy CPU."""

import torch

torch.set_num_threads(1)
