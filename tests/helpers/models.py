"""Small models whose layer inputs a test can write down by hand."""

import torch
from torch import nn


class MLP(nn.Module):
    """x (6) → fc1 (5) → ReLU → fc2 (3), seeded: fc1 sees x, fc2 sees relu(fc1(x))."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc1, self.fc2 = nn.Linear(6, 5), nn.Linear(5, 3)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))
