"""Comparison helpers: symjac results against torch.autograd.functional."""

from __future__ import annotations

import numpy as np

TOL = {np.float64: dict(rtol=1e-9, atol=1e-10), np.float32: dict(rtol=2e-4, atol=2e-5)}


def leaves(x):
    """The tensors of a nested result (tuples and lists of tensors), in order."""
    if isinstance(x, (tuple, list)):
        return [t for el in x for t in leaves(el)]
    return [x]


def to_torch(x):
    import torch

    if isinstance(x, tuple):
        return tuple(to_torch(e) for e in x)
    return torch.from_numpy(np.array(x))


def assert_same(ours, theirs, dtype, path="result", expect_torch=None):
    """Same nesting, types, shapes, dtypes and values (theirs is torch's result)."""
    import torch

    if isinstance(theirs, (tuple, list)):
        assert isinstance(ours, tuple), f"{path}: expected a tuple, got {type(ours).__name__}"
        assert len(ours) == len(theirs), f"{path}: length {len(ours)} != {len(theirs)}"
        for k, (a, b) in enumerate(zip(ours, theirs)):
            assert_same(a, b, dtype, f"{path}[{k}]", expect_torch)
        return
    assert isinstance(theirs, torch.Tensor)
    if expect_torch is True:
        assert isinstance(ours, torch.Tensor), f"{path}: expected a torch.Tensor, got {type(ours)}"
        assert ours.dtype == theirs.dtype, f"{path}: dtype {ours.dtype} != {theirs.dtype}"
        ours = ours.numpy()
    elif expect_torch is False:
        assert isinstance(ours, np.ndarray), f"{path}: expected a numpy.ndarray, got {type(ours)}"
        assert str(ours.dtype) == str(theirs.dtype).replace("torch.", ""), (
            f"{path}: dtype {ours.dtype} != {theirs.dtype}"
        )
    theirs = theirs.detach().numpy()
    assert ours.shape == theirs.shape, f"{path}: shape {ours.shape} != {theirs.shape}"
    np.testing.assert_allclose(ours, theirs, err_msg=path, **TOL[dtype])
