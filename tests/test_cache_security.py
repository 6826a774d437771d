"""The disk cache runs only code its own user wrote: planted, foreign, shared, special and
broken entries are refused (and rebuilt), never executed or waited on."""

import hashlib
import hmac
import json
import os
import stat
import struct
import threading
import time

import numpy as np
import pytest

import symjac
from symjac import cli
from symjac.backend import diskcache


def f(x):
    return (x.sin() * x).sum() * x


def g(x):
    return x.exp() * 3.0


X = np.array([0.3, -1.2, 2.0])


def expected(x=X):
    s = (np.sin(x) * x).sum()
    return s * np.eye(3) + np.outer(x, np.sin(x) + x * np.cos(x))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("SYMJAC_CACHE_DIR", str(folder))
    monkeypatch.delenv("SYMJAC_CACHE_MAX_BYTES", raising=False)
    monkeypatch.setattr(diskcache, "_warned", set())
    return folder


def entries(folder):
    return sorted(p for p in folder.iterdir() if p.name.endswith(".kernel"))


def main_entry(folder):
    (path,) = [p for p in entries(folder) if "-" not in p.stem]
    return path


def compile_f():
    cf = symjac.compile(f, np.zeros(3))
    np.testing.assert_allclose(cf(X), expected(), rtol=1e-13)
    return cf


def test_modes_are_private_whatever_the_umask(cache):
    old = os.umask(0)
    try:
        cf = compile_f()
        cf(np.tile(X, (8, 1)))  # the SIMD entry too
    finally:
        os.umask(old)
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    files = list(cache.iterdir())
    assert {p.name for p in files} >= {"key"} and len(entries(cache)) == 2
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in files)
    assert (cache / "key").stat().st_size == diskcache.KEY_BYTES


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"mode": "hessian"},
        {"mode": "jvp"},
        {"mode": "vjp"},
        {"mode": "hvp"},
        {"sparse": "csr"},
        {"sparse": "csc", "value": True},
    ],
)
def test_every_kind_of_entry_passes_its_own_checks(cache, kwargs):
    func = (lambda x: (x.sin() * x).sum()) if kwargs.get("mode") in ("hessian", "hvp") else f
    first = symjac.compile(func, np.zeros(3), **kwargs)
    again = symjac.compile(func, np.zeros(3), **kwargs)
    assert not first.cache_hit and again.cache_hit
    args = {"v": np.ones(3)} if kwargs.get("mode") in ("jvp", "vjp", "hvp") else {}
    a, b = first(X, **args), again(X, **args)
    if kwargs.get("sparse"):
        a, b = (a[1], b[1]) if kwargs.get("value") else (a, b)
        a, b = a.toarray(), b.toarray()
    np.testing.assert_array_equal(a, b)


def test_batch_entry_is_reused(cache):
    compile_f()(np.tile(X, (8, 1)))
    cf = compile_f()
    built = []
    original = symjac.backend.runtime.compile_simd_object
    symjac.backend.runtime.compile_simd_object = lambda *a: built.append(1) or original(*a)
    try:
        out = cf(np.tile(X, (8, 1)))
    finally:
        symjac.backend.runtime.compile_simd_object = original
    assert cf.cache_hit and not built
    np.testing.assert_allclose(out, np.broadcast_to(expected(), (8, 3, 3)), rtol=1e-13)


def plant(path, meta, obj, secret=None):
    """Write an entry as an attacker would: right name and layout, checksum without our key."""
    body = json.dumps(dict(meta, key=path.stem)).encode()
    payload = struct.pack("<Q", len(body)) + body + obj
    digest = (
        hashlib.sha256(payload).digest() if secret is None else hmac.new(secret, payload, "sha256").digest()
    )
    path.write_bytes(diskcache.MAGIC + digest + payload)


def test_planted_entry_is_rejected_and_rebuilt(cache):
    compile_f()
    path = main_entry(cache)
    meta, _ = diskcache.load(path.stem)
    # Object code of another function, with a valid unkeyed checksum (or another user's key).
    other = symjac.compile(g, np.zeros(3), cache=False).kernel.object_code
    for secret in (None, os.urandom(32)):
        plant(path, meta, other, secret)
        cf = compile_f()  # asserts the right numbers
        assert not cf.cache_hit
        assert diskcache.load(path.stem)[1] == cf.kernel.object_code  # rebuilt in place
    assert compile_f().cache_hit


def test_old_format_entry_is_rejected(cache):
    compile_f()
    path = main_entry(cache)
    data = path.read_bytes()
    payload = data[len(diskcache.MAGIC) + 32 :]
    path.write_bytes(b"SYMJAC1\n" + hashlib.sha256(payload).digest() + payload)
    assert not compile_f().cache_hit


def test_kernels_of_an_earlier_format_are_never_loaded(cache, monkeypatch):
    """FORMAT 5's batch loops zero each point's results; FORMAT 4's expected zeroed buffers, so
    its entries (main and SIMD) must not serve a batch into a dirty out=: another key, a rebuild."""
    X8 = np.tile(X, (8, 1))
    with monkeypatch.context() as old_format:
        old_format.setattr(diskcache, "FORMAT", 4)
        symjac.compile(g, np.zeros(3))(X8)
    old = set(entries(cache))
    assert len(old) == 2  # the kernel and its SIMD batch kernel
    cf = symjac.compile(g, np.zeros(3))
    assert not cf.cache_hit
    want = np.broadcast_to(np.diag(3 * np.exp(X)), (8, 3, 3))
    np.testing.assert_allclose(cf(X8, out=np.full((8, 3, 3), np.nan)), want, rtol=1e-15)
    assert len(set(entries(cache)) - old) == 2
    assert symjac.compile(g, np.zeros(3)).cache_hit


def test_kernels_that_other_code_built_are_never_loaded(cache, monkeypatch):
    """The key holds a digest of symjac's source: after an upgrade or a local change, a kernel
    built by the old code (whatever bug it had) is rebuilt, not loaded."""
    assert len(diskcache.code_digest()) == 64
    with monkeypatch.context() as old_code:
        old_code.setattr(diskcache, "code_digest", lambda: "0" * 64)
        compile_f()
        assert compile_f().cache_hit
    old = set(entries(cache))
    assert not compile_f().cache_hit
    assert len(set(entries(cache)) - old) == 1
    assert compile_f().cache_hit


def refused_folder(cache, tweak):
    cache.mkdir(mode=0o700)
    tweak(cache)
    with pytest.warns(diskcache.CacheWarning, match="not using the kernel cache"):
        cf = compile_f()
    assert not cf.cache_hit
    assert not any(cache.iterdir())  # nothing written there, nothing read
    assert not compile_f().cache_hit


def test_foreign_owned_folder_is_refused(cache, monkeypatch):
    if os.getuid() == 0:
        refused_folder(cache, lambda d: os.chown(d, 12345, 12345))
    else:
        uid = os.getuid()
        monkeypatch.setattr(os, "getuid", lambda: uid + 1)
        refused_folder(cache, lambda d: None)


@pytest.mark.parametrize("mode", [0o770, 0o707, 0o777])
def test_shared_writable_folder_is_refused(cache, mode):
    refused_folder(cache, lambda d: os.chmod(d, mode))


def test_shared_key_is_refused(cache):
    compile_f()
    os.chmod(cache / "key", 0o644)
    with pytest.warns(diskcache.CacheWarning, match="key"):
        assert not compile_f().cache_hit


def test_foreign_entry_is_not_trusted(cache):
    compile_f()
    path = main_entry(cache)
    os.chmod(path, 0o666)
    assert not compile_f().cache_hit
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # replaced by our own
    if os.getuid() == 0:
        os.chown(path, 12345, 12345)
        assert not compile_f().cache_hit
        assert path.stat().st_uid == 0


def with_timeout(fn, seconds=60):
    result = []
    worker = threading.Thread(target=lambda: result.append(fn()), daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), "the cache blocked"
    return result[0]


def test_fifo_entry_does_not_hang(cache):
    compile_f()
    path = main_entry(cache)
    path.unlink()
    os.mkfifo(path, 0o600)
    cf = with_timeout(compile_f)
    assert not cf.cache_hit
    assert stat.S_ISREG(path.stat().st_mode)  # replaced by a real entry


def test_symlink_entry_is_refused(cache):
    compile_f()
    path = main_entry(cache)
    path.unlink()
    path.symlink_to("/dev/zero")
    cf = with_timeout(compile_f)
    assert not cf.cache_hit
    assert not path.is_symlink() and compile_f().cache_hit


def test_symlink_to_a_valid_entry_is_refused(cache, tmp_path):
    compile_f()
    path = main_entry(cache)
    target = tmp_path / "elsewhere.kernel"
    path.rename(target)
    path.symlink_to(target)
    assert not compile_f().cache_hit


def test_oversized_entry_is_refused_unread(cache, monkeypatch):
    compile_f()
    monkeypatch.setattr(diskcache, "MAX_ENTRY_BYTES", 100)
    assert not compile_f().cache_hit


@pytest.mark.parametrize("keep", [0, 8, 40, -1])
def test_truncated_entry_is_rebuilt(cache, keep):
    compile_f()
    path = main_entry(cache)
    data = path.read_bytes()
    path.write_bytes(data[:keep])
    assert not compile_f().cache_hit
    assert path.read_bytes() != data[:keep] and compile_f().cache_hit


def restore_with(cache, change):
    """Re-sign the main entry (with our key) after ``change`` edits its metadata or code."""
    compile_f()
    path = main_entry(cache)
    meta, obj = diskcache.load(path.stem)
    meta, obj = change(dict(meta), obj)
    diskcache.store(path.stem, meta, obj)
    assert diskcache.load(path.stem) is not None  # well signed: only the schema can reject it
    cf = compile_f()
    assert not cf.cache_hit
    return cf


def set_layout(**changes):
    return lambda meta, obj: (dict(meta, layout=dict(meta["layout"], **changes)), obj)


@pytest.mark.parametrize(
    "change",
    [
        set_layout(n64="9"),
        set_layout(n64=2),  # too small for the result
        set_layout(n64=-1),
        set_layout(in_shapes=[[4]]),
        set_layout(in_shapes=[[3.0]]),
        set_layout(slots=[[2, 0, [3, 3]]]),
        set_layout(compute="float16"),
        set_layout(full=1),
        lambda meta, obj: ({k: v for k, v in meta.items() if k != "layout"}, obj),
        lambda meta, obj: ({k: v for k, v in meta.items() if k != "statements"}, obj),
        lambda meta, obj: (dict(meta, nest=[1, 2]), obj),
        lambda meta, obj: (dict(meta, layout=[]), obj),
        lambda meta, obj: (dict(meta, v_shapes=[[3]]), obj),
    ],
)
def test_bad_metadata_is_rejected(cache, change):
    restore_with(cache, change)


def set_pattern(**changes):
    return lambda meta, obj: (dict(meta, pattern=dict(meta["pattern"], **changes)), obj)


@pytest.mark.parametrize(
    "change",
    [
        set_pattern(indices=[0, 1, 3, 0, 1, 2, 0, 1, 2]),  # a column past the last
        set_pattern(indices=[0, 1, 2, 0, 1, 2, 0, 1, -2]),
        set_pattern(indices=[0, 1, 2, 0, 1.0, 2, 0, 1, 2]),
        set_pattern(indices=[0, 1, 2, 0, 1, 2, 0, 1, 2**70]),
        set_pattern(indices=[0, 1, 2, 0, [1], 2, 0, 1, 2]),
        set_pattern(indices=[0, 1, 2, 0, None, 2, 0, 1, 2]),
        set_pattern(indices=[0, 1, 2, 0, 1, 2, 0, 1]),  # one entry fewer than indptr says
        set_pattern(indices="012012012"),
        set_pattern(indptr=[0, 6, 3, 9]),  # rows that end before they start
        set_pattern(indptr=[1, 3, 6, 9]),
        set_pattern(indptr=[0, 3, 6]),
        set_pattern(indptr=[True, 3, 6, 9]),
        set_pattern(indptr=[[0, 3], [6, 9]]),
        set_pattern(kind="csc"),
    ],
)
def test_bad_sparsity_patterns_are_rejected(cache, change):
    """Every way a cached pattern can be malformed is refused and the kernel rebuilt."""

    def compile_sparse():
        cf = symjac.compile(f, np.zeros(3), sparse="csr")
        np.testing.assert_allclose(cf(X).toarray(), expected(), rtol=1e-13)
        return cf

    compile_sparse()
    path = main_entry(cache)
    meta, obj = diskcache.load(path.stem)
    assert meta["pattern"]["indices"] == [0, 1, 2] * 3 and meta["pattern"]["indptr"] == [0, 3, 6, 9]
    meta, obj = change(dict(meta), obj)
    diskcache.store(path.stem, meta, obj)
    assert diskcache.load(path.stem) is not None  # well signed: only the schema can reject it
    assert not compile_sparse().cache_hit
    assert compile_sparse().cache_hit  # and the rebuilt entry is good


def test_object_code_with_other_symbols_is_rejected(cache):
    cf = symjac.compile(f, np.zeros(3), cache=False)
    cf(np.tile(X, (8, 1)))
    simd_code = cf.kernel._simd_source()[0]
    restore_with(cache, lambda meta, obj: (meta, simd_code))
    restore_with(cache, lambda meta, obj: (meta, b"\x7fELF\x02\x01" + obj[6:40]))


@pytest.mark.parametrize("lanes", [0, -4, 3, "4", None])
def test_bad_lanes_are_rejected(cache, lanes):
    batch = np.tile(X, (8, 1))
    compile_f()(batch)
    (path,) = [p for p in entries(cache) if p.stem.endswith("-simd")]
    meta, obj = diskcache.load(path.stem)
    assert obj and meta["lanes"] >= 1
    diskcache.store(path.stem, dict(meta, lanes=lanes), obj)
    cf = compile_f()
    assert cf.cache_hit
    np.testing.assert_allclose(cf(batch), np.broadcast_to(expected(), (8, 3, 3)), rtol=1e-13)
    assert diskcache.load(path.stem)[0]["lanes"] == meta["lanes"]  # rebuilt


def test_least_recently_used_entries_are_evicted(cache, monkeypatch):
    funcs = [lambda x, k=k: x.sin() * (k + 1.5) for k in range(4)]
    for fn in funcs[:2]:
        symjac.compile(fn, np.zeros(3))
    sizes = [p.stat().st_size for p in entries(cache)]
    monkeypatch.setenv("SYMJAC_CACHE_MAX_BYTES", str(sum(sizes) + max(sizes) // 2))
    old = time.time() - 100
    for p in entries(cache):
        os.utime(p, (old, old))
    assert symjac.compile(funcs[0], np.zeros(3)).cache_hit  # a hit counts as a use
    symjac.compile(funcs[2], np.zeros(3))  # over the limit: funcs[1], least recently used, goes
    assert symjac.compile(funcs[0], np.zeros(3)).cache_hit
    assert symjac.compile(funcs[2], np.zeros(3)).cache_hit
    assert not symjac.compile(funcs[1], np.zeros(3)).cache_hit
    assert sum(p.stat().st_size for p in entries(cache)) <= sum(sizes) + max(sizes) // 2


def test_orphaned_temporary_files_are_removed(cache):
    compile_f()
    stale, fresh = cache / "a.123.tmp", cache / "b.456.tmp"
    stale.write_bytes(b"x")
    fresh.write_bytes(b"x")
    old = time.time() - 2 * diskcache.TMP_AGE_S
    os.utime(stale, (old, old))
    symjac.compile(g, np.zeros(3))  # any write tidies up
    assert not stale.exists() and fresh.exists()


def test_cli_cache_info_and_clear(cache, capsys):
    compile_f()
    symjac.compile(g, np.zeros(3))
    assert cli.main(["cache", "info"]) == 0
    out = capsys.readouterr().out
    assert str(cache) in out and "entries: 2" in out and "in use" in out
    assert diskcache.info()["bytes"] == sum(p.stat().st_size for p in entries(cache))
    assert cli.main(["cache", "clear"]) == 0
    assert "removed 2 files" in capsys.readouterr().out
    assert not entries(cache) and not compile_f().cache_hit


def test_entry_names_cannot_escape_the_folder(cache):
    with pytest.raises(ValueError, match="invalid entry name"):
        diskcache.load("../../etc/passwd")
