"""symjac.compile: the same results as symjac.jacobian, batches, modes, sparse results, the disk
cache, pickling and C export."""

import os
import pathlib
import pickle
import subprocess
import sys
import textwrap
from dataclasses import replace

import numpy as np
import pytest
from cases import CASES, numpy_ns

import symjac
from symjac import compiled
from symjac.backend import diskcache, vecmath

ROOT = pathlib.Path(__file__).parent.parent


def _same(a, b, rtol=1e-12, atol=1e-14):
    if isinstance(b, tuple):
        assert isinstance(a, tuple) and len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _same(x, y, rtol, atol)
        return
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape and a.dtype == b.dtype, (a.shape, b.shape, a.dtype, b.dtype)
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_matches_jacobian(case, dtype, rng):
    f = case.fn(numpy_ns(dtype))
    inputs = case.inputs(rng, dtype)
    args = inputs if isinstance(inputs, tuple) else (inputs,)
    cf = symjac.compile(f, *args, wrt=(0,) if isinstance(inputs, tuple) and len(args) == 1 else None)
    tol = dict(rtol=1e-12, atol=1e-14) if dtype == np.float64 else dict(rtol=2e-6, atol=1e-6)
    _same(cf(*args), symjac.jacobian(f, inputs), **tol)


@pytest.mark.parametrize("n", [1, 7, 4099])
def test_batches_match_points(n, rng):
    f = lambda x, y: (np.tanh(x @ np.array([[1.0, 2.0], [0.5, -1.0]])) * y, (x * y).sum())  # noqa: E731
    X, Y = rng.standard_normal((n, 2)), rng.standard_normal((n, 2))
    cf = symjac.compile(f, X[0], Y[0])
    J = cf(X, Y)
    for k in sorted({0, n // 2, n - 1}):
        _same(tuple(tuple(b[k] for b in row) for row in J), symjac.jacobian(f, (X[k], Y[k])))
    assert J[0][0].shape == (n, 2, 2) and J[1][1].shape == (n, 2)


def test_multidimensional_batches(rng):
    f = lambda x: x.exp().sum(dim=1)  # noqa: E731
    cf = symjac.compile(f, np.zeros((2, 2)))
    X = rng.standard_normal((3, 4, 2, 2))
    J = cf(X)
    assert J.shape == (3, 4, 2, 2, 2)
    _same(J[2, 1], symjac.jacobian(f, X[2, 1]))
    with pytest.raises(ValueError, match="argument 0 has shape"):
        cf(np.zeros((2, 3)))


def test_value_and_jacobian_from_one_kernel(rng):
    f = lambda x: np.sin(x) * x.sum()  # noqa: E731
    x = rng.standard_normal(4)
    value, J = symjac.compile(f, x, value=True)(x)
    _same(value, f(x))
    _same(J, symjac.jacobian(f, x))


def test_runtime_parameters_are_not_differentiated_and_never_recompile(rng, monkeypatch):
    def rhs(x, p):  # damped oscillator with runtime mass, stiffness, damping
        m, k, c = p[0], p[1], p[2]
        return np.stack([x[1], (-k * x[0] - c * x[1]) / m])

    cf = symjac.compile(rhs, np.zeros(2), np.ones(3), wrt=0)
    for p in ([1.0, 4.0, 0.1], [2.0, 9.0, 0.5]):
        p = np.array(p)
        J = cf(np.array([0.3, -0.2]), p)
        _same(J, np.array([[0.0, 1.0], [-p[1] / p[0], -p[2] / p[0]]]))
    Jp = symjac.compile(rhs, np.zeros(2), np.ones(3), wrt=(0, 1))(
        np.array([0.3, -0.2]), np.array([1.0, 4.0, 0.1])
    )
    assert isinstance(Jp, tuple) and Jp[1].shape == (2, 3)


def test_modes_match_the_functional_api(rng):
    f = lambda x: (x.sin() * x.sum()).exp().sum()  # noqa: E731
    g = lambda x: x.sin() * x.sum()  # noqa: E731
    x, v = rng.standard_normal(3), rng.standard_normal(3)
    _same(symjac.compile(f, x, mode="hessian")(x), symjac.hessian(f, x))
    _same(symjac.compile(f, x, mode="hvp")(x, v=v), symjac.hvp(f, x, v)[1])
    _same(symjac.compile(g, x, mode="jvp")(x, v=v), symjac.jvp(g, x, v)[1])
    _same(symjac.compile(g, x, mode="vjp")(x, v=v), symjac.vjp(g, x, v)[1])
    V = rng.standard_normal((5, 3))
    X = rng.standard_normal((5, 3))
    batch = symjac.compile(g, x, mode="jvp")(X, v=V)
    _same(batch[3], symjac.jvp(g, X[3], V[3])[1])
    with pytest.raises(TypeError, match="pass the vector as v="):
        symjac.compile(g, x, mode="jvp")(x)
    with pytest.raises(ValueError, match="mode must be one of"):
        symjac.compile(g, x, mode="nope")


def test_out_argument(rng):
    f = lambda x: x**2 * x[0]  # noqa: E731
    x = rng.standard_normal(3)
    cf = symjac.compile(f, x)
    out = np.full((3, 3), 99.0)  # dirty: zeros must be written too
    result = cf(x, out=out)
    assert result is out
    _same(out, symjac.jacobian(f, x))
    with pytest.raises(ValueError, match="C-contiguous float64 array of shape"):
        cf(x, out=np.zeros((3, 4)))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_out_argument_for_batches(rng, dtype):
    f = lambda x: np.concatenate([x**2 * x[0], np.sin(x[:1])])  # noqa: E731
    X = rng.standard_normal((7, 3)).astype(dtype)
    cf = symjac.compile(f, X[0])
    out = np.full((7, 4, 3), 99.0, dtype=dtype)  # dirty: zeros must be written too
    assert cf(X, out=out) is out
    np.testing.assert_array_equal(out, cf(X))
    ulps = dict(rtol=4 * np.finfo(dtype).eps, atol=0)  # vector math may round cos differently
    for k in range(7):
        np.testing.assert_allclose(out[k], cf(X[k]), **ulps)
    big = rng.standard_normal((5000, 3)).astype(dtype)  # the SIMD kernel and its scalar tail
    out = np.empty((5000, 4, 3), dtype=dtype)
    np.testing.assert_array_equal(cf(big, out=out), cf(big))
    with pytest.raises(ValueError, match=r"C-contiguous .* array of shape \(7, 4, 3\)"):
        cf(X, out=np.zeros((7, 3, 4), dtype=dtype))
    with pytest.raises(ValueError, match="C-contiguous"):
        cf(X, out=np.zeros((4, 3, 7), dtype=dtype).transpose(2, 0, 1))
    with pytest.raises(TypeError, match="exactly one result array"):
        symjac.compile(f, X[0], value=True)(X, out=np.zeros((7, 4, 3), dtype=dtype))


def _chain(s, cat=np.concatenate):
    """A mass-spring chain (benchmarks/problems.py): 48 of its Jacobian's 400 entries are nonzero."""
    x, v = s[:10], s[10:]
    stretch = x[1:] - x[:-1] - 1.0
    force = stretch + 0.1 * stretch**3
    return cat([v, cat([force[:1], force[1:] - force[:-1], -force[-1:]]) - 0.05 * v])


W_LOOPS = np.random.default_rng(7).standard_normal((5, 4))
# name: (function, example input); every result has structural zeros, except the loop road's,
# whose kernels store every element (the sparse-loops road's dense Jacobian: its pattern only).
DIRTY_CASES = {
    "chain": (_chain, np.linspace(0.1, 1.0, 20)),
    "exp_reducer": (lambda x: x.exp().sum(dim=1), np.linspace(0.1, 1.0, 12).reshape(3, 4)),
    "float32": (
        lambda x: np.concatenate([x**2 * x[0], np.sin(x[:1])]),
        np.linspace(0.1, 1.0, 5, dtype=np.float32),
    ),
    "loops": (lambda x: np.tanh(W_LOOPS @ x) * x[0], np.linspace(0.1, 1.0, 4)),
    "sparse-loops": (_chain, np.linspace(0.1, 1.0, 20)),
}
BATCH_SIZES = [1, 2, 4 * vecmath.lanes("float64") + 3, 4 * vecmath.lanes("float32") + 5, 5003]


def _dirty(shape, dtype, kind, rng):
    if kind == "random":
        return (rng.standard_normal(shape) * 1e6).astype(dtype)
    return np.full(shape, {"nan": np.nan, "huge": 1e300 if dtype == np.float64 else 3e38}[kind], dtype=dtype)


def _dirty_case(name):
    f, x = DIRTY_CASES[name]
    cf = symjac.compile(f, x, cache=False, expand="arrays" if name == "loops" else "auto")
    if name == "sparse-loops":  # whatever the cost model would choose
        cf = compiled.CompiledFunction(replace(cf.spec, road=name), cache=False)
    assert cf.kernel.layout.full == (name == "loops")  # the others' batch loops zero their results
    return cf, x


@pytest.mark.parametrize("kind", ["nan", "huge", "random"])
@pytest.mark.parametrize("name", DIRTY_CASES)
def test_out_holding_garbage_gives_a_fresh_calls_result(name, kind, rng):
    """Whatever a caller left in out=, every entry is written: zeros too (no stale numbers)."""
    cf, x = _dirty_case(name)
    if name == "exp_reducer" and vecmath.lanes("float64") > 1:
        assert cf.kernel.simd()[1] > 1  # SIMD lanes, then the scalar kernel for the rest
    for n in BATCH_SIZES:  # whole vectors of points and a scalar rest, or only the rest
        X = (x + rng.uniform(0, 0.5, (n, *x.shape))).astype(x.dtype)
        fresh = cf(X)
        out = _dirty(fresh.shape, fresh.dtype, kind, rng)
        assert cf(X, out=out) is out
        np.testing.assert_array_equal(out, fresh)
        for k in sorted({0, n // 2, n - 1}):  # the single-point kernel, on zeroed buffers
            np.testing.assert_allclose(out[k], cf(X[k]), rtol=4 * np.finfo(x.dtype).eps, atol=0)
    one = _dirty(fresh.shape[1:], fresh.dtype, kind, rng)
    assert cf(X[0], out=one) is one
    np.testing.assert_array_equal(one, cf(X[0]))


def test_batch_out_of_any_layout_and_batch_shape(rng):
    """One NumPy input with out= skips the general call path; strided, Fortran-ordered,
    float32 and list inputs and nested batch shapes give what it gives."""
    cf, x = _dirty_case("exp_reducer")
    X = x + rng.uniform(0, 0.5, (2, 9, 3, 4))
    want = cf(X)
    for arg in (X, np.asfortranarray(X), X[:, ::-1][:, ::-1], X.astype(np.float32), X.tolist()):
        out = np.full(want.shape, np.nan)
        assert cf(arg, out=out) is out
        np.testing.assert_allclose(out, want, rtol=1e-6 if arg is not X else 0, atol=0)
    with pytest.raises(ValueError, match=r"C-contiguous float64 array of shape \(2, 9, 3, 3, 4\)"):
        cf(X, out=np.empty((18, 3, 3, 4)))
    with pytest.raises(ValueError, match="writeable"):
        frozen = np.empty(want.shape)
        frozen.flags.writeable = False
        cf(X, out=frozen)


@pytest.mark.parametrize("name", ["exp_reducer", "sparse-loops"])
def test_single_out_of_any_layout(name, rng):
    """One point into out= goes straight to the kernel where it can; read-only, strided and
    float32 points take the general path, and a bad out= is named there."""
    cf, x = _dirty_case(name)
    point = (x + rng.uniform(0, 0.5, x.shape)).astype(x.dtype)
    want = cf(point)
    frozen = point.copy()
    frozen.flags.writeable = False
    wide = np.repeat(point, 2).reshape(*point.shape, 2)[..., 0]
    for arg in (point, frozen, wide, point.astype(np.float32), point.tolist()):
        out = np.full(want.shape, np.nan)
        assert cf(arg, out=out) is out
        np.testing.assert_allclose(out, want, rtol=1e-6 if arg is not point else 0, atol=0)
    with pytest.raises(ValueError, match="C-contiguous float64 array of shape"):
        cf(point, out=np.asfortranarray(np.empty(want.shape)) if want.ndim > 1 else np.empty(want.size + 1))
    with pytest.raises(ValueError, match="writeable"):
        frozen_out = np.empty(want.shape)
        frozen_out.flags.writeable = False
        cf(point, out=frozen_out)


@pytest.mark.parametrize("name", ["chain", "exp_reducer"])
def test_threaded_batches_into_garbage_equal_one_thread(name, rng, monkeypatch):
    from symjac import compiled

    monkeypatch.setattr(compiled, "THREAD_WORK", 0)
    cf, x = _dirty_case(name)
    X = x + rng.uniform(0, 0.5, (4 * 1024 + 5, *x.shape))
    cf._threads = 1
    one = cf(X)
    cf._threads = 2
    cf.kernel._threads_pay = True  # split however fast the machine's threads are
    out = np.full_like(one, np.nan)
    np.testing.assert_array_equal(cf(X, out=out), one)
    np.testing.assert_array_equal(cf(X), one)


def test_garbage_batches_match_torch_autograd(rng):
    torch = pytest.importorskip("torch")
    cf, x = _dirty_case("chain")
    X = x + rng.uniform(0, 0.5, (37, 20))
    out = np.full((37, 20, 20), np.nan)
    cf(X, out=out)
    for k in (0, 17, 36):
        J = torch.autograd.functional.jacobian(lambda s: _chain(s, torch.cat), torch.from_numpy(X[k]))
        np.testing.assert_allclose(out[k], J.numpy(), rtol=1e-13, atol=1e-15)


def test_sparse_results(rng):
    scipy = pytest.importorskip("scipy")
    n = 12

    def chain(x):
        stretch = x[1:] - x[:-1]
        return np.concatenate([stretch[:1], stretch[1:] ** 3 - stretch[:-1], -stretch[-1:]])

    x = rng.standard_normal(n)
    dense = symjac.jacobian(chain, x)
    for kind in ("csr", "csc"):
        cf = symjac.compile(chain, x, sparse=kind)
        m = cf(x)
        assert isinstance(m, scipy.sparse.csr_matrix if kind == "csr" else scipy.sparse.csc_matrix)
        _same(m.toarray(), dense)
    m = symjac.compile(chain, x, sparse="csr")(x)
    scratch = symjac.compile(chain, x, sparse="csr")(x)
    scratch.indices[0] = 3  # each result owns its pattern: a structural change corrupts no other
    scratch.eliminate_zeros()
    m2 = symjac.compile(chain, x, sparse="csr")(x + 1.0)
    _same((m2 + m).toarray(), symjac.jacobian(chain, x + 1.0) + dense)
    pattern = symjac.compile(chain, x).sparsity()
    assert np.array_equal(pattern.toarray() != 0, dense != 0)


def test_pickle_round_trip(rng):
    f = lambda x, y: (x * y.exp(), x.sum())  # noqa: E731
    x, y = rng.standard_normal(3), rng.standard_normal(3)
    cf = symjac.compile(f, x, y, value=True)
    again = pickle.loads(pickle.dumps(cf))
    _same(again(x, y), cf(x, y))


def test_cache_hit_across_processes_and_corrupt_entries(tmp_path):
    script = textwrap.dedent(
        """
        import sys, time, numpy as np, symjac
        f = lambda x: (x.sin() * x.cumsum(0)).exp()
        start = time.perf_counter()
        cf = symjac.compile(f, np.zeros(6))
        elapsed = time.perf_counter() - start
        J = cf(np.linspace(0, 1, 6))
        assert np.allclose(J, symjac.jacobian(f, np.linspace(0, 1, 6), expand="arrays"))
        print(cf.cache_hit, elapsed)
        """
    )
    env = dict(os.environ, SYMJAC_CACHE_DIR=str(tmp_path), PYTHONPATH=str(ROOT))

    def run():
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
        )
        assert done.returncode == 0, done.stderr
        hit, elapsed = done.stdout.split()
        return hit == "True", float(elapsed)

    assert run()[0] is False
    hit, elapsed = run()
    assert hit is True
    (entry,) = tmp_path.glob("*.kernel")
    data = bytearray(entry.read_bytes())
    data[len(data) // 2] ^= 0xFF  # corrupt one byte of the object code
    entry.write_bytes(bytes(data))
    assert run()[0] is False  # rebuilt, not trusted
    assert run()[0] is True  # and cached again
    entry.write_bytes(b"garbage")
    assert run()[0] is False


def test_foreign_entry_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("SYMJAC_CACHE_DIR", str(tmp_path))
    diskcache.store("a" * 64, {"x": 1}, b"obj")
    (tmp_path / f"{'a' * 64}.kernel").rename(tmp_path / f"{'b' * 64}.kernel")
    assert diskcache.load("b" * 64) is None and not (tmp_path / f"{'b' * 64}.kernel").exists()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_exported_c_compiles_and_agrees(tmp_path, dtype, rng):
    import ctypes

    f = lambda x: np.stack(
        [
            np.where(x[0] > 0, np.sqrt(np.abs(x[0])), x[1]),
            np.maximum(x[1], x[2]) * np.exp(x[0]),  # noqa: E731
            np.tanh(x).sum() ** 2,
            np.floor(x[2]) * x[1],
        ]
    )
    x = np.array([0.3, -0.7, 0.2], dtype=dtype)
    cf = symjac.compile(f, x)
    c_path, h_path = cf.write_c(tmp_path, "jac")
    assert "void jac(" in h_path.read_text() and "#include <math.h>" in c_path.read_text()
    lib = ctypes.CDLL(str(cf.build_shared_library(tmp_path / "libjac.so", "jac")))
    out64, out32 = np.zeros(12), np.zeros(12, dtype=np.float32)
    lib.jac(
        x.ctypes.data_as(ctypes.c_void_p),
        out64.ctypes.data_as(ctypes.c_void_p),
        out32.ctypes.data_as(ctypes.c_void_p),
    )
    got = out64 if dtype == np.float64 else out32
    np.testing.assert_allclose(got.reshape(4, 3), cf(x), rtol=1e-6 if dtype == np.float32 else 1e-14)


def test_introspection(rng):
    cf = symjac.compile(lambda x: x.exp() * 2, np.zeros(3))
    assert cf.address and "symjac_kernel" in cf.ir and "symjac_kernel" in cf.assembly()
    scipy = pytest.importorskip("scipy")
    assert isinstance(cf.low_level_callable(), scipy.LowLevelCallable)


def test_torch_inputs_give_torch_results():
    torch = pytest.importorskip("torch")
    f = lambda x: x.exp().sum(dim=1)  # noqa: E731
    cf = symjac.compile(f, torch.zeros(2, 2, dtype=torch.float64))
    x = torch.rand(2, 2, dtype=torch.float64)
    J = cf(x)
    assert isinstance(J, torch.Tensor)
    torch.testing.assert_close(J, torch.autograd.functional.jacobian(f, x))


def test_graph_hash_survives_pickling_into_another_process():
    # String hashes differ between processes: an unpickled graph must hash as a fresh one there.
    from symjac import functional

    graph = functional._Call(lambda a: a.sin() * 2, (np.zeros(3),), False, "t").graph
    code = (
        "import pickle, sys, numpy as np; from symjac import functional; "
        "g = pickle.loads(sys.stdin.buffer.read()); "
        "fresh = functional._Call(lambda a: a.sin() * 2, (np.zeros(3),), False, 't').graph; "
        "print(g == fresh and hash(g) == hash(fresh))"
    )
    env = dict(os.environ, PYTHONHASHSEED="12345")
    data = pickle.dumps(graph)
    out = subprocess.run([sys.executable, "-c", code], input=data, capture_output=True, env=env, check=True)
    assert out.stdout.strip() == b"True"
