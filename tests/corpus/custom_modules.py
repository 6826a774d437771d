"""A custom module with ModuleList, ModuleDict, RMSNorm, Bilinear and an isinstance check."""

import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(3, 4), nn.Linear(4, 4)])
        self.acts = nn.ModuleDict({"first": nn.Tanh(), "second": nn.SiLU()})
        self.norm = nn.RMSNorm(4)
        self.mix = nn.Bilinear(4, 3, 2)

    def forward(self, x):
        if not isinstance(x, torch.Tensor):
            x = torch.as_tensor(x)
        h = self.acts["first"](self.layers[0](x))
        h = self.acts["second"](self.layers[1](h))
        return self.mix(self.norm(h), x)


torch.manual_seed(4)
net = Net().double()


def f(x):
    return net(x)


def inputs():
    return (torch.tensor([0.4, -0.2, 0.9], dtype=torch.float64),)


ORACLE = "autograd"
