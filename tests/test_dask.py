"""Compiled functions on dask arrays: chunk by chunk, on a 2-process LocalCluster, bit for bit."""

import os

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

import symjac  # noqa: E402
from symjac.interop import dask_interop  # noqa: E402


def robertson(y):
    return np.stack(
        [-0.04 * y[0] + 1e4 * y[1] * y[2], 0.04 * y[0] - 1e4 * y[1] * y[2] - 3e7 * y[1] ** 2, 3e7 * y[1] ** 2]
    )


def scaled(y, k):
    return (y * k[0]).sin() * y.sum() + k[1]


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    # Workers get their own, initially empty, kernel cache: they must build from the spec.
    cache = str(tmp_path_factory.mktemp("worker-cache"))
    env = {
        "SYMJAC_CACHE_DIR": cache,
        "PYTHONPATH": os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")])),
    }
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, env=env
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client


def test_threads_scheduler_matches_local_batch():
    cf = symjac.compile(robertson, np.zeros(3))
    X = np.random.default_rng(0).uniform(0.1, 1.0, (1000, 3))
    result = cf(da.from_array(X, chunks=(300, 3)))
    lanes = symjac.backend.runtime.simd_lanes(cf.kernel.layout)
    assert isinstance(result, da.Array) and sum(result.chunks[0]) == 1000 and len(result.chunks[0]) > 2
    assert all(c % lanes == 0 for c in result.chunks[0][:-1])  # whole SIMD vectors per chunk
    assert np.array_equal(result.compute(scheduler="threads"), cf(X))


def test_cluster_matches_local_batch_bit_for_bit(client):
    cf = symjac.compile(robertson, np.zeros(3), value=True)
    X = np.random.default_rng(1).uniform(0.1, 1.0, (4, 500, 3))  # two batch dimensions
    value_d, jac_d = cf(da.from_array(X, chunks=(2, 200, 3)))
    value, jac = client.compute([value_d, jac_d], sync=True)
    expected_value, expected_jac = cf(X)
    assert value.dtype == expected_value.dtype and jac.shape == (4, 500, 3, 3)
    assert np.array_equal(value, expected_value) and np.array_equal(jac, expected_jac)
    # Each worker process built the function once, in its own process, and kept it.
    built = client.run(lambda: sorted(dask_interop._FUNCTIONS))
    assert len(built) == 2 and all(names == [cf._cache_name] for names in built.values())
    pids = client.run(os.getpid)
    assert os.getpid() not in pids.values()
    # A fresh worker-side function loads the kernel from the worker's disk cache.
    client.run(lambda: dask_interop._FUNCTIONS.clear())
    assert np.array_equal(client.compute(jac_d, sync=True), expected_jac)
    hits = client.run(lambda: [f.cache_hit for f in dask_interop._FUNCTIONS.values()])
    flags = [h for per_worker in hits.values() for h in per_worker]
    assert flags and all(flags)


def test_cluster_with_parameters_and_vectors(client):
    cf = symjac.compile(scaled, np.zeros(3), np.zeros(2), wrt=0, mode="vjp")
    rng = np.random.default_rng(2)
    Y, K, V = rng.random((600, 3)), rng.random((600, 2)), rng.random((600, 3))
    result = cf(da.from_array(Y, chunks=(250, 3)), K, v=da.from_array(V, chunks=(100, 3)))
    assert np.array_equal(client.compute(result, sync=True), cf(Y, K, v=V))


def test_errors():
    cf = symjac.compile(robertson, np.zeros(3))
    with pytest.raises(ValueError, match=r"argument 0 has shape \(10, 4\); expected a batch of \(3,\)"):
        cf(da.zeros((10, 4), chunks=5))
