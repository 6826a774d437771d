"""The same kind of MLP left in float32, with a batch of inputs: results stay float32."""

import torch
from torch import nn

torch.manual_seed(1)
net = nn.Sequential(nn.Linear(4, 6), nn.GELU(), nn.Linear(6, 4), nn.Softplus(), nn.Linear(4, 3))


def f(x):
    return net(x)


def inputs():
    return (torch.tensor([[0.2, -0.4, 0.7, 0.1], [0.5, 0.3, -0.2, -0.9]]),)


ORACLE = "autograd"
