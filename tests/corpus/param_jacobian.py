"""Jacobian of a network's output with respect to its weights, through torch.func.functional_call."""

import torch
from torch import nn
from torch.func import functional_call

torch.manual_seed(3)
net = nn.Sequential(nn.Linear(2, 5), nn.Tanh(), nn.Linear(5, 1)).double()
names = [name for name, _ in net.named_parameters()]
x = torch.tensor([[0.5, -0.3], [0.1, 0.8], [-0.6, 0.2]], dtype=torch.float64)


def f(*params):
    return functional_call(net, dict(zip(names, params, strict=True)), (x,)).squeeze(-1)


def inputs():
    return tuple(p.detach().clone() for p in net.parameters())


ORACLE = "autograd"
