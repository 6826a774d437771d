"""The persistent kernel cache: object code on disk, so a second process skips all symbolic work.

An entry is ``MAGIC | sha256(payload) | payload`` with payload = JSON metadata + object code.
No pickle: reading a cache file never runs code. An entry whose checksum, key or format does not
match is deleted and rebuilt, never trusted. Writes go to a temporary file in the same folder and
are renamed into place, so concurrent processes never see half an entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import struct
import tempfile

import llvmlite
import llvmlite.binding as llvm

from . import vecmath

MAGIC = b"SYMJAC1\n"
FORMAT = 3


def cache_dir() -> pathlib.Path:
    """``$SYMJAC_CACHE_DIR``, else the platform's user cache folder (``~/.cache/symjac``)."""
    env = os.environ.get("SYMJAC_CACHE_DIR")
    if env:
        return pathlib.Path(env)
    try:
        import platformdirs

        return pathlib.Path(platformdirs.user_cache_dir("symjac"))
    except ImportError:
        return pathlib.Path(os.environ.get("XDG_CACHE_HOME", pathlib.Path.home() / ".cache")) / "symjac"


def key(canonical: str) -> str:
    """The entry name for a canonical description of the computation, on this CPU and LLVM."""
    machine = (
        FORMAT,
        llvmlite.__version__,
        llvm.llvm_version_info,
        llvm.get_process_triple(),
        llvm.get_host_cpu_name(),
        llvm.get_host_cpu_features().flatten(),
        vecmath.abi_tag(),
    )
    return hashlib.sha256(repr((machine, canonical)).encode()).hexdigest()


def load(name: str) -> tuple[dict, bytes] | None:
    """(metadata, object code) of a valid entry, or None (a broken entry is removed)."""
    path = cache_dir() / f"{name}.kernel"
    try:
        data = path.read_bytes()
    except OSError:
        return None
    try:
        if data[: len(MAGIC)] != MAGIC:
            raise ValueError("bad magic")
        digest, payload = data[len(MAGIC) : len(MAGIC) + 32], data[len(MAGIC) + 32 :]
        if hashlib.sha256(payload).digest() != digest:
            raise ValueError("checksum mismatch")
        (meta_len,) = struct.unpack("<Q", payload[:8])
        meta = json.loads(payload[8 : 8 + meta_len])
        if meta.get("key") != name:
            raise ValueError("foreign entry")
        return meta, payload[8 + meta_len :]
    except (ValueError, KeyError, struct.error, UnicodeDecodeError):
        try:
            path.unlink()
        except OSError:
            pass
        return None


def store(name: str, meta: dict, obj: bytes) -> None:
    """Write an entry atomically; a failure to write (read-only disk) only skips caching."""
    folder = cache_dir()
    meta = dict(meta, key=name)
    body = json.dumps(meta).encode()
    payload = struct.pack("<Q", len(body)) + body + obj
    data = MAGIC + hashlib.sha256(payload).digest() + payload
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, folder / f"{name}.kernel")
    except OSError:
        pass
