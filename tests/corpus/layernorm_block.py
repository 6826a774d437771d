"""A pre-norm residual block, as in transformer MLPs: LayerNorm, Linear, GELU, Linear."""

import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, width, hidden):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.up = nn.Linear(width, hidden)
        self.act = nn.GELU()
        self.down = nn.Linear(hidden, width)

    def forward(self, x):
        return x + self.down(self.act(self.up(self.norm(x))))


torch.manual_seed(2)
block = Block(4, 6).double()
with torch.no_grad():  # a trained-looking norm, not the identity initialisation
    block.norm.weight.copy_(torch.linspace(0.5, 1.5, 4))
    block.norm.bias.copy_(torch.linspace(-0.1, 0.2, 4))


def f(x):
    return block(x)


def inputs():
    return (torch.tensor([[0.3, -1.2, 0.8, 0.1], [1.0, 0.2, -0.4, 0.6]], dtype=torch.float64),)


ORACLE = "autograd"
