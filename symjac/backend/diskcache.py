"""The persistent kernel cache: object code on disk, so a second process skips all symbolic work.

A cache entry is native code that this process will run, so the cache trusts only what its own
user wrote (docs/security.md):

- The cache folder is created ``0700`` and its files ``0600``, whatever the umask. A folder or
  entry that another user owns, or that group or others may write, is refused with one warning
  and the process compiles without caching (pip and ccache refuse such folders too).
- An entry is ``MAGIC | HMAC-SHA256(key, payload) | payload``, payload = JSON metadata + object
  code, keyed by a random per-user secret kept in the folder (``key``, mode ``0600``): an entry
  planted by someone who cannot read that key is rejected even where the folder is shared by
  mistake. No pickle: reading an entry never runs code.
- Entries are opened without following links and without blocking (a FIFO never hangs), only as
  regular files, and read up to a size bound. The metadata is checked by the caller's schema and
  the object code must define exactly the expected symbols before it is linked.
- Entries are keyed by the computation, the CPU, LLVM and a digest of symjac's own source, so
  a kernel built by other code (an upgrade, a local change) is never loaded.
- Any entry that fails a check is deleted and rebuilt. Writes go to a temporary file renamed
  into place, so concurrent processes never see half an entry; orphaned temporary files are
  removed, and the least recently used entries are evicted past ``SYMJAC_CACHE_MAX_BYTES``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import json
import os
import pathlib
import re
import stat
import struct
import sys
import time
import warnings

import llvmlite
import llvmlite.binding as llvm

from . import vecmath

MAGIC = b"SYMJAC2\n"
FORMAT = 5  # 5: batch loops zero their outputs (4's expect zeroed buffers)
KEY_FILE = "key"
KEY_BYTES = 32
MAX_ENTRY_BYTES = 256 << 20  # an entry larger than this is refused unread
DEFAULT_MAX_BYTES = 1 << 30  # total size past which least recently used entries are evicted
TMP_AGE_S = 600  # a temporary file this old belongs to a writer that died
_NAME = re.compile(r"[0-9a-f]{64}(-[a-z]+)?")
# Owner checks, O_NOFOLLOW and descriptor-relative access are POSIX; elsewhere (Windows) the
# cache is not used rather than used unchecked.
_POSIX = hasattr(os, "getuid") and hasattr(os, "O_NOFOLLOW") and os.open in os.supports_dir_fd
_ELF = sys.platform.startswith(("linux", "freebsd"))  # where LLVM's host object code is ELF
_warned: set = set()


class CacheWarning(UserWarning):
    """The kernel cache was not used (unsafe folder or key); compiling goes on without it."""


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


def max_bytes() -> int:
    """The cache's size limit: ``$SYMJAC_CACHE_MAX_BYTES`` (default 1 GiB)."""
    text = os.environ.get("SYMJAC_CACHE_MAX_BYTES", "")
    try:
        return max(int(text), 0) if text else DEFAULT_MAX_BYTES
    except ValueError:
        _warn("size", f"SYMJAC_CACHE_MAX_BYTES must be a number of bytes, got {text!r}; using 1 GiB")
        return DEFAULT_MAX_BYTES


@functools.cache
def code_digest() -> str:
    """SHA-256 of symjac's own source files: a kernel that other code built (another release,
    a local change) has another key, so it is never loaded, whatever FORMAT says. About 3 ms,
    once per process."""
    root = pathlib.Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def key(canonical: str) -> str:
    """The entry name for a canonical description of the computation, on this CPU and LLVM, by
    this code."""
    machine = (
        FORMAT,
        code_digest(),
        llvmlite.__version__,
        llvm.llvm_version_info,
        llvm.get_process_triple(),
        llvm.get_host_cpu_name(),
        llvm.get_host_cpu_features().flatten(),
        vecmath.abi_tag(),
    )
    return hashlib.sha256(repr((machine, canonical)).encode()).hexdigest()


def _warn(reason: str, message: str) -> None:
    if reason not in _warned:  # one line per problem and process, not one per compile
        _warned.add(reason)
        warnings.warn(f"symjac: {message}", CacheWarning, stacklevel=4)


def _unsafe(st: os.stat_result, what: str, path) -> str | None:
    """Why ``st`` (of a folder or file of the cache) must not be trusted, or None."""
    uid = os.getuid()
    if st.st_uid != uid:
        return f"{what} {path} is owned by uid {st.st_uid}, not by you (uid {uid})"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"{what} {path} is writable by other users (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


@contextlib.contextmanager
def _folder(create: bool):
    """A file descriptor of the cache folder after its checks, or None (folder refused or absent).

    Every later access is relative to this descriptor, so a folder swapped after the check
    is never used.
    """
    root = cache_dir()
    if not _POSIX:
        yield None
        return
    if create:
        try:
            root.parent.mkdir(parents=True, exist_ok=True)
            os.mkdir(root, 0o700)
            os.chmod(root, 0o700)  # the umask may have taken bits away (never adds any)
        except FileExistsError:
            pass
        except OSError:
            yield None  # a read-only disk only skips caching
            return
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        yield None
        return
    try:
        why = _unsafe(os.fstat(fd), "the kernel cache folder", root)
        if why:
            _warn(
                f"folder {root}",
                f"{why}; not using the kernel cache (set SYMJAC_CACHE_DIR to a folder of your own)",
            )
            yield None
        else:
            yield fd
    finally:
        os.close(fd)


def _open_regular(name: str, dir_fd: int, limit: int) -> tuple[int, os.stat_result]:
    """An fd and stat of the regular file ``name``: no links followed, no blocking on a FIFO."""
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError("not a regular file")
        if st.st_size > limit:
            raise ValueError(f"larger than {limit} bytes")
        return fd, st
    except BaseException:
        os.close(fd)
        raise


def _read(fd: int, size: int) -> bytes:
    chunks, left = [], size + 1  # one byte more: a file that grew since fstat is refused
    while left > 0:
        chunk = os.read(fd, left)
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    data = b"".join(chunks)
    if len(data) != size:
        raise ValueError("size changed while reading")
    return data


def _secret(dir_fd: int) -> bytes | None:
    """This user's HMAC key, created on first use (random, ``0600``, published atomically)."""
    for _ in range(2):
        try:
            fd, st = _open_regular(KEY_FILE, dir_fd, KEY_BYTES)
        except FileNotFoundError:
            _create_secret(dir_fd)
            continue
        except (OSError, ValueError) as e:
            _warn("key", f"the kernel cache key {cache_dir() / KEY_FILE} is unusable ({e}); not using it")
            return None
        try:
            why = _unsafe(st, "the kernel cache key", cache_dir() / KEY_FILE)
            if why is None and stat.S_IMODE(st.st_mode) & 0o077:
                why = f"the kernel cache key {cache_dir() / KEY_FILE} is readable by other users"
            if why:
                _warn("key", f"{why}; not using the kernel cache")
                return None
            secret = _read(fd, st.st_size)
        except (OSError, ValueError):
            return None
        finally:
            os.close(fd)
        if len(secret) == KEY_BYTES:
            return secret
        with contextlib.suppress(OSError):
            os.unlink(KEY_FILE, dir_fd=dir_fd)  # a short key (a full disk while writing): a new one
    return None


def _create(name: str, dir_fd: int) -> int:
    """A new private file (``0600`` whatever the umask), open for writing."""
    fd = os.open(
        name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd
    )
    try:
        os.fchmod(fd, 0o600)
    except OSError:
        os.close(fd)
        raise
    return fd


def _create_secret(dir_fd: int) -> None:
    # Written whole under a private name, then linked into place: link() fails if the key
    # exists, so concurrent first uses agree on one key and none reads a half-written one.
    tmp = f"key.{os.getpid()}.{os.urandom(6).hex()}.tmp"
    try:
        fd = _create(tmp, dir_fd)
        try:
            os.write(fd, os.urandom(KEY_BYTES))
        finally:
            os.close(fd)
        with contextlib.suppress(FileExistsError):
            os.link(tmp, KEY_FILE, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)


def _entry(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ValueError(f"diskcache: invalid entry name {name!r}")
    return f"{name}.kernel"


def _discard(entry: str, dir_fd: int) -> None:
    with contextlib.suppress(OSError):
        st = os.stat(entry, dir_fd=dir_fd, follow_symlinks=False)
        if st.st_uid == os.getuid():
            os.unlink(entry, dir_fd=dir_fd)


def load(name: str, check=None, symbols=()) -> tuple[dict, bytes] | None:
    """(metadata, object code) of a valid entry, or None (a broken entry is removed).

    Args:
        check: called with the metadata and the object code; raises ValueError to reject them.
        symbols: the global symbols the object code must define (no more, no fewer), if any.
    """
    entry = _entry(name)
    with _folder(create=False) as dir_fd:
        if dir_fd is None:
            return None
        try:
            fd, st = _open_regular(entry, dir_fd, MAX_ENTRY_BYTES)
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            _discard(entry, dir_fd)  # a FIFO, a link, a device, an oversized file
            return None
        try:
            if _unsafe(st, "", "") or stat.S_IMODE(st.st_mode) & 0o077:
                raise ValueError("foreign or shared entry")
            data = _read(fd, st.st_size)
            secret = _secret(dir_fd)
            if secret is None:
                return None
            meta, obj = _unpack(data, secret, name)
            if check is not None:
                check(meta, obj)
            if symbols and obj and _ELF and defined_symbols(obj) != set(symbols):
                raise ValueError("object code defines other symbols than expected")
        except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError, struct.error):
            _discard(entry, dir_fd)
            return None
        finally:
            os.close(fd)
        with contextlib.suppress(OSError):
            os.utime(entry, dir_fd=dir_fd)  # recently used: evicted last
        return meta, obj


def _unpack(data: bytes, secret: bytes, name: str) -> tuple[dict, bytes]:
    if data[: len(MAGIC)] != MAGIC:
        raise ValueError("bad magic")
    digest, payload = data[len(MAGIC) : len(MAGIC) + 32], data[len(MAGIC) + 32 :]
    if not hmac.compare_digest(hmac.new(secret, payload, hashlib.sha256).digest(), digest):
        raise ValueError("not written with this user's key")
    (meta_len,) = struct.unpack("<Q", payload[:8])
    if meta_len > len(payload) - 8:
        raise ValueError("truncated metadata")
    meta = json.loads(payload[8 : 8 + meta_len])
    if not isinstance(meta, dict) or meta.get("key") != name:
        raise ValueError("foreign entry")
    return meta, payload[8 + meta_len :]


def _listed(value):
    """NumPy arrays in metadata (a sparse kernel's pattern) as JSON lists."""
    if callable(getattr(value, "tolist", None)):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} in cache metadata")


def store(name: str, meta: dict, obj: bytes) -> None:
    """Write an entry atomically; a failure to write (read-only disk) only skips caching."""
    entry = _entry(name)
    body = json.dumps(dict(meta, key=name), default=_listed).encode()
    payload = struct.pack("<Q", len(body)) + body + obj
    with _folder(create=True) as dir_fd:
        if dir_fd is None:
            return
        secret = _secret(dir_fd)
        if secret is None:
            return
        data = MAGIC + hmac.new(secret, payload, hashlib.sha256).digest() + payload
        tmp = f"{name}.{os.getpid()}.{os.urandom(6).hex()}.tmp"
        try:
            fd = _create(tmp, dir_fd)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
            os.replace(tmp, entry, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dir_fd)
            return
        _tidy(dir_fd, max_bytes(), keep=entry)


def _files(dir_fd: int) -> list[tuple[str, os.stat_result]]:
    """(name, lstat) of this user's regular files in the folder."""
    found = []
    for name in os.listdir(dir_fd):
        with contextlib.suppress(OSError):
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            if stat.S_ISREG(st.st_mode) and st.st_uid == os.getuid():
                found.append((name, st))
    return found


def _tidy(dir_fd: int, limit: int, keep: str = "") -> None:
    """Remove orphaned temporary files, then least recently used entries past ``limit`` bytes."""
    now = time.time()
    entries, total = [], 0
    for name, st in _files(dir_fd):
        if name.endswith(".tmp"):
            if now - st.st_mtime > TMP_AGE_S:
                with contextlib.suppress(OSError):
                    os.unlink(name, dir_fd=dir_fd)
        elif name.endswith(".kernel"):
            entries.append((st.st_mtime, name, st.st_size))
            total += st.st_size
    for _, name, size in sorted(entries):
        if total <= limit:
            break
        if name != keep:
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=dir_fd)
                total -= size


def info() -> dict:
    """The cache folder, its entries and their total size, the size limit, and whether it is used."""
    result = {"path": str(cache_dir()), "entries": 0, "bytes": 0, "max_bytes": max_bytes(), "usable": False}
    with _folder(create=False) as dir_fd:
        if dir_fd is not None:
            kernels = [st.st_size for name, st in _files(dir_fd) if name.endswith(".kernel")]
            result.update(entries=len(kernels), bytes=sum(kernels), usable=True)
    return result


def clear() -> int:
    """Delete every entry and temporary file of the cache (not its key); returns how many."""
    removed = 0
    with _folder(create=False) as dir_fd:
        if dir_fd is None:
            return 0
        for name, _ in _files(dir_fd):
            if name.endswith((".kernel", ".tmp")):
                with contextlib.suppress(OSError):
                    os.unlink(name, dir_fd=dir_fd)
                    removed += 1
    return removed


def defined_symbols(obj: bytes) -> set[str]:
    """The global symbols an ELF object file defines, read from its symbol table.

    Parsed here, bounds-checked: llvmlite's ``ObjectFileRef`` crashes the process on malformed
    object code. Raises ValueError for anything but well-formed 64-bit little-endian ELF.
    """
    return _global_symbols(obj, defined=True)


def undefined_symbols(obj: bytes) -> set[str]:
    """The global symbols an ELF object file uses but does not define (resolved when loading)."""
    return _global_symbols(obj, defined=False)


def _global_symbols(obj: bytes, defined: bool) -> set[str]:
    if obj[:4] != b"\x7fELF" or obj[4:6] != b"\x02\x01":
        raise ValueError("not a 64-bit little-endian ELF object")

    def section(index: int) -> tuple[int, bytes, int]:  # (type, contents, link)
        (shoff,) = struct.unpack_from("<Q", obj, 0x28)
        shentsize, shnum = struct.unpack_from("<HH", obj, 0x3A)
        if index >= shnum or shentsize < 64:
            raise ValueError("bad section index")
        kind, _, _, offset, size, link = struct.unpack_from("<IQQQQI", obj, shoff + index * shentsize + 4)
        if offset + size > len(obj):
            raise ValueError("section outside the file")
        return kind, obj[offset : offset + size], link

    shnum = struct.unpack_from("<H", obj, 0x3C)[0]
    tables = [section(k) for k in range(shnum) if section(k)[0] == 2]  # SHT_SYMTAB
    if len(tables) != 1:
        raise ValueError("no single symbol table")
    _, symtab, link = tables[0]
    strtab = section(link)[1]
    names = set()
    for offset in range(24, len(symtab) - 23, 24):  # Elf64_Sym; entry 0 is the null symbol
        st_name, st_info, _, st_shndx = struct.unpack_from("<IBBH", symtab, offset)
        if st_info >> 4 in (1, 2) and (st_shndx != 0) == defined:  # STB_GLOBAL / STB_WEAK
            end = strtab.index(b"\0", st_name)
            names.add(strtab[st_name:end].decode())
    return names
