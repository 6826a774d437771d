"""Contractions spelled as einsum letters, one spelling for every road that contracts: the loop
kernels (:mod:`symjac.arrays.contractions`, :mod:`symjac.arrays.adjoints`), the sparse plans and
the NumPy rules (:mod:`symjac.arrays.forward`, :mod:`symjac.arrays.second`). Light on purpose:
the NumPy rules import it on a drop-in's first call, where the loop-kernel modules cost 11 ms."""

from __future__ import annotations

from .elementwise import Unsupported


def einsum_letters(spec: str, shapes) -> tuple[list, str, dict]:
    """``(operands' letters, the output's, letter -> extent)`` of an explicit einsum."""
    ins, out = spec.replace(" ", "").split("->")
    letters = ins.split(",")
    if any("." in s for s in letters) or "." in out:
        raise Unsupported("einsum with an ellipsis")
    return letters, out, extents(letters, shapes)


def matmul_letters(a_shape, b_shape) -> tuple[list, str, dict]:
    """``matmul`` as an einsum: ``(operands' letters, the output's, letter -> extent)``."""
    na, nb = len(a_shape), len(b_shape)
    batch = max(na, nb) - 2
    pool = iter("abcdefghopqrstuvwxyz")
    lead = [next(pool) for _ in range(max(batch, 0))]
    if na == 1 and nb == 1:
        la, lb, lo = "k", "k", ""
    elif na == 1:
        la, lb, lo = "k", "".join(lead[len(lead) - (nb - 2) :]) + "kn", "".join(lead) + "n"
    elif nb == 1:
        la, lb, lo = "".join(lead[len(lead) - (na - 2) :]) + "mk", "k", "".join(lead) + "m"
    else:
        la = "".join(lead[len(lead) - (na - 2) :]) + "mk"
        lb = "".join(lead[len(lead) - (nb - 2) :]) + "kn"
        lo = "".join(lead) + "mn"
    return [la, lb], lo, extents([la, lb], [a_shape, b_shape])


def extents(letters, shapes) -> dict:
    """Each letter's extent: the largest among the operands (a length-1 axis broadcasts)."""
    sizes = {}
    for shape, lets in zip(shapes, letters, strict=True):
        for c, k in zip(lets, shape, strict=True):
            sizes[c] = max(sizes.get(c, 1), k)
    return sizes


def reduce_letters(x_shape, axes, keepdims):
    """A reduction over ``axes`` as einsum letters: ``(operand's letters, axes, output's)``."""
    lets = "abcdefghijklmnopqrstuvwxyz"[: len(x_shape)]
    axes = tuple(a % len(x_shape) for a in axes) if axes is not None else tuple(range(len(x_shape)))
    out = "".join(c for k, c in enumerate(lets) if k not in axes)
    return lets, axes, out


def explicit(terms, out: str, ndims) -> tuple[list, str]:
    """``terms -> out`` with each ``...`` spelled as letters (the broadcast axes, right-aligned)."""
    if not any("..." in t for t in terms):
        return list(terms), out
    rank = max(n - len(t.replace("...", "")) for t, n in zip(terms, ndims, strict=True) if "..." in t)
    axes = "".join(free_letters("".join(terms) + out)[:rank])
    spelled = [
        t.replace("...", axes[rank - (n - len(t.replace("...", ""))) :]) if "..." in t else t
        for t, n in zip(terms, ndims, strict=True)
    ]
    return spelled, out.replace("...", axes)


def free_letters(used: str) -> list:
    """The einsum letters not in ``used``, lowercase from ``z`` down first."""
    return [c for c in "zyxwvutsrqponmlkjihgfedcbaZYXWVUTSRQPONMLKJIHGFEDCBA" if c not in used]
