"""Idiomatic model files, written as practitioners write them (issue 13's corpus).

Each module defines ``f`` (the function to differentiate), ``inputs()`` (one example point, a
tuple), and ``ORACLE``: "autograd" when torch.autograd can differentiate ``f`` itself, "fd"
(central finite differences) when it cannot (NumPy code, or torch.tensor literals, which
autograd does not see through). ``tests/test_corpus.py`` runs every model through jacobian,
compile (one point and a batch) and symbolic.
"""

MODELS = (
    "dh_zeros",
    "dh_zeros_torch",
    "dh_tensor_literals",
    "quadrotor",
    "nbody",
    "spring_chain",
    "kinetics",
    "mlp64",
    "mlp32",
    "layernorm_block",
    "param_jacobian",
    "custom_modules",
)
