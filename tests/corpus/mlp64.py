"""A small float64 MLP, nn.Sequential."""

import torch
from torch import nn

torch.manual_seed(0)
net = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 8), nn.SiLU(), nn.Linear(8, 2)).double()


def f(x):
    return net(x)


def inputs():
    return (torch.tensor([0.2, -0.4, 0.7], dtype=torch.float64),)


ORACLE = "autograd"
