"""Every file topo-solve reads or writes goes through here.

* **Inputs** are read as bytes, never more than a size limit (one byte past it tells a file too
  large from one just at the limit), so ``/dev/zero`` or a huge file costs nothing; specs, domain
  XML, a spec's ``domain:`` file and standard input alike.  Bytes are not decoded here: what
  topo-solve writes back (an ``--in-place`` backup) is byte for byte what it read.
* **Outputs** are written atomically: a hidden temporary file in the target's own folder, written,
  ``fsync``-ed, given the mode (and, as root, the owner) of the file it replaces, renamed over the
  target (or hard-linked, which refuses an existing target, when replacing is not allowed), then the
  folder is ``fsync``-ed, so a crash or a kill leaves the old file or the new one, never a part.
  What the target is decides how: a regular file (or nothing yet) is replaced; a symbolic link is
  followed and its target replaced, the link kept; a character device or a pipe (``/dev/null``,
  ``/dev/stdout``) is written through, as a shell redirect would; anything else (a folder, a block
  device, a socket) is refused.  An existing path (a dangling link too) is replaced only with
  ``force``.
* **Temporary files** are named ``.NAME.topo-PID-N.tmp`` next to the target (hidden).  Only
  ``kill -9`` (or a power cut) can leave one behind; the next write into the same folder removes
  those whose process is gone (once per folder and process, so a batch pays one listing).
* **Locks**: :func:`locked_input` holds an advisory ``flock`` on a file while it is read,
  changed and replaced (``extend --in-place``): a second run waits, then reads the first run's
  result, so no change is lost; :func:`locked_folder` holds one on a folder for a whole batch.
* Every ``OSError`` becomes a :class:`~topo_solve.errors.FileError` (exit 2) that names the file.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from .errors import FileError, Finding, OutputExists, SpecError

__all__ = ["MAX_SPEC_BYTES", "MAX_DOMAIN_BYTES", "read_input", "decode_text", "write_output", "locked_input",
           "locked_folder"]

MAX_SPEC_BYTES = 1024 * 1024  # a spec of 10,000 device entries is about 600 KiB
MAX_DOMAIN_BYTES = 8 * 1024 * 1024  # a domain with thousands of devices is well under 1 MiB


def too_large(path: str, limit: int, what: str) -> SpecError:
    size = f"{limit // (1024 * 1024)} MiB" if limit >= 1024 * 1024 else f"{limit // 1024} KiB"
    return SpecError([Finding(path, None, "", f"larger than {size}; {what} is far smaller: check that this is "
                              "the right file")])


def _read_limited(fd: int, limit: int) -> bytes:
    chunks, left = [], limit + 1
    while left > 0:
        chunk = os.read(fd, min(left, 1024 * 1024))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_input(path: str, limit: int, what: str) -> bytes:
    """The bytes of ``path`` (``-``: standard input), at most ``limit``; SpecError (exit 2) otherwise.

    ``what`` names the kind of file in the message ("a spec", "a libvirt domain XML")."""
    shown = "<stdin>" if path == "-" else path
    try:
        if path == "-":
            data = _read_limited(sys.stdin.buffer.fileno(), limit)
        else:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0))
            try:
                if stat.S_ISDIR(os.fstat(fd).st_mode):
                    raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
                data = _read_limited(fd, limit)
            finally:
                os.close(fd)
    except OSError as exc:
        raise SpecError([Finding(shown, None, "", f"cannot read the file: {exc.strerror or exc}")]) from None
    except ValueError:  # os.open refuses a path with a NUL in it
        raise SpecError([Finding(repr(path)[1:-1], None, "", "cannot read the file: its name has a NUL character")]) \
            from None
    if len(data) > limit:
        raise too_large(shown, limit, what)
    return data


def decode_text(data: bytes, path: str) -> str:
    """UTF-8 bytes -> text, line endings and a byte order mark kept; SpecError with the line otherwise."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = data[:exc.start]
        line = before.count(b"\n") + 1
        column = len(before[before.rfind(b"\n") + 1:].decode("utf-8", "replace")) + 1
        raise SpecError([Finding(path, line, "", f"byte 0x{data[exc.start]:02x} is not UTF-8 ({exc.reason}); "
                                 "save the file as UTF-8", column)]) from None


# -- writing -------------------------------------------------------------------------------

# Paths that name one of this process's open files: written to that descriptor, as bash does
# for a redirect to /dev/stdout, so output appended to a file by `>>` is not truncated.
_OWN_FD = re.compile(r"/dev/(?:std(out|err)|fd/([0-9]+))|/proc/self/fd/([0-9]+)")


def _write_fd(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def check_output(path: str, *, force: bool) -> None:
    """Raise what :func:`write_output` would raise for ``path`` before writing anything (a folder, an
    existing file without ``force``, a missing folder), so a long run does not fail at its end."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        folder = os.path.dirname(path) or "."
        if not os.path.isdir(folder):
            raise FileError(path, os.strerror(errno.ENOENT)) from None
        return
    except OSError as exc:
        raise FileError(path, exc.strerror or str(exc)) from None
    try:
        tst = os.stat(path)
    except OSError:
        tst = None
    if tst is not None and (stat.S_ISCHR(tst.st_mode) or stat.S_ISFIFO(tst.st_mode)):
        return
    if tst is not None and not stat.S_ISREG(tst.st_mode):
        kind = "a folder" if stat.S_ISDIR(tst.st_mode) else _kind(tst.st_mode)
        raise FileError(path, f"it is {kind}; topo-solve writes regular files (and writes through to "
                              "character devices and pipes)")
    if not force:
        raise OutputExists(path)


def write_output(path: str, data: str | bytes, *, force: bool, identical_ok: bool = False) -> bool:
    """Write ``data`` to ``path`` as described in the module docstring; FileError or OutputExists otherwise.

    ``identical_ok``: a regular file that already holds exactly ``data`` is left alone, ``force`` or not
    (a re-run of a batch that was killed finds the files it wrote and goes on).  Returns whether
    anything was written."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    own = _OWN_FD.fullmatch(path)
    try:
        if own is not None:
            fd = {"out": 1, "err": 2}.get(own.group(1)) or int(own.group(2) or own.group(3))
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()  # what was printed before comes first
                except (OSError, ValueError):
                    pass
            _write_fd(fd, data)
            return True
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            st = None
        if identical_ok and st is not None and stat.S_ISREG(st.st_mode) and st.st_size == len(data) \
                and _holds(path, data):
            clean_stale_temps(os.path.dirname(path) or ".")  # a run killed after its rename left one
            return False
        target, tst = path, st
        if st is not None and stat.S_ISLNK(st.st_mode):
            target = os.path.realpath(path)  # replace what the link points to, keep the link
            try:
                tst = os.stat(target)
            except FileNotFoundError:
                tst = None  # a dangling link: its target is created (with force)
        if tst is not None and not stat.S_ISREG(tst.st_mode):
            if stat.S_ISCHR(tst.st_mode) or stat.S_ISFIFO(tst.st_mode):
                _write_through(target, data)  # as a shell redirect: nothing is replaced
                return True
            kind = "a folder" if stat.S_ISDIR(tst.st_mode) else _kind(tst.st_mode)
            raise FileError(path, f"it is {kind}; topo-solve writes regular files (and writes through to "
                                  "character devices and pipes)")
        if st is not None and not force:
            raise OutputExists(path)
        _replace(target, data, tst, force=force)
        return True
    except (FileError, OutputExists):
        raise
    except OSError as exc:
        raise FileError(path, exc.strerror or str(exc)) from None
    except ValueError:  # a NUL in the path
        raise FileError(repr(path)[1:-1], "its name has a NUL character") from None


def _holds(path: str, data: bytes) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(len(data) + 1) == data
    except OSError:
        return False


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISFIFO, "a pipe"),
                       (stat.S_ISCHR, "a character device")):
        if test(mode):
            return name
    return "not a regular file"


def _write_through(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0))
    try:
        _write_fd(fd, data)
    finally:
        os.close(fd)


_TEMPS = 0
_TEMP_NAME = re.compile(r"\..+\.topo-([0-9]+)-[0-9]+\.tmp")
_CLEANED: set[str] = set()  # folders this process has cleaned


def _temp_stem(name: str) -> str:
    return name[:200]  # .NAME.PID-N.tmp stays within NAME_MAX (255) for any NAME


def _new_temp(folder: str, name: str) -> tuple[int, str]:
    """Create ``folder/.NAME.topo-PID-N.tmp`` (mode 0666 less the umask, as any new file); never reuse a name."""
    global _TEMPS
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    while True:
        _TEMPS += 1
        tmp = os.path.join(folder, f".{_temp_stem(name)}.topo-{os.getpid()}-{_TEMPS}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:  # left behind by a killed run that had the same pid
            continue


def clean_stale_temps(folder: str) -> None:
    """Remove ``.NAME.topo-PID-N.tmp`` files in ``folder`` whose process no longer runs (a run killed
    with -9 left them); once per folder and process."""
    key = os.path.abspath(folder)
    if key in _CLEANED:
        return
    _CLEANED.add(key)
    try:
        entries = os.listdir(folder)
    except OSError:
        return
    for entry in entries:
        m = _TEMP_NAME.fullmatch(entry)
        if m is None:
            continue
        pid = int(m.group(1))
        if pid == os.getpid() or _alive(pid):
            continue
        try:
            os.unlink(os.path.join(folder, entry))
        except OSError:
            pass


def _alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie, killed but not yet reaped, does not)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[-1].split()[0] not in (b"Z", b"X")
    except FileNotFoundError:
        return False
    except OSError:
        pass  # no /proc: ask the kernel
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def _replace(target: str, data: bytes, old: os.stat_result | None, *, force: bool) -> None:
    folder, name = os.path.split(target)
    folder = folder or "."
    clean_stale_temps(folder)
    fd, tmp = _new_temp(folder, name)
    try:
        try:
            _write_fd(fd, data)
            if old is not None:  # the replaced file's mode and, where allowed, its owner
                os.fchmod(fd, stat.S_IMODE(old.st_mode))
                if os.geteuid() == 0 and (old.st_uid, old.st_gid) != (0, 0):
                    try:
                        os.fchown(fd, old.st_uid, old.st_gid)
                    except OSError:
                        pass
            os.fsync(fd)  # the data is on disk before the name points to it
        finally:
            os.close(fd)
        if force:
            os.replace(tmp, target)
        else:
            try:
                os.link(tmp, target)  # atomic, and refuses a path created meanwhile
            except FileExistsError:
                raise OutputExists(target) from None
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                    raise
                if os.path.lexists(target):  # a file system without hard links
                    raise OutputExists(target) from None
                os.replace(tmp, target)
        _fsync_folder(folder)  # the rename itself is on disk
    finally:
        if os.path.lexists(tmp):
            try:
                os.unlink(tmp)
            except OSError:
                pass


def _fsync_folder(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.EBADF, errno.ENOTSUP):  # folders some file systems cannot sync
            raise
    finally:
        os.close(fd)


# -- locks ---------------------------------------------------------------------------------

@contextmanager
def locked_input(path: str, limit: int, what: str) -> Iterator[bytes]:
    """Hold an exclusive advisory lock on the regular file ``path`` and yield its bytes (at most ``limit``).

    The file is replaced by rename while the lock is held, so a run that waited for the lock may hold
    the old file: it checks, once the lock is granted, that the path still names the file it locked,
    and otherwise locks the new one.  Two runs on one file thus take turns, the second reading the
    first's result."""
    import fcntl

    while True:
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0))
        except OSError as exc:
            raise SpecError([Finding(path, None, "", f"cannot read the file: {exc.strerror or exc}")]) from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise SpecError([Finding(path, None, "", f"--in-place replaces a regular file; this is "
                                         f"{'a folder' if stat.S_ISDIR(st.st_mode) else _kind(st.st_mode)}")])
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                now = os.stat(path)
            except FileNotFoundError:
                now = None
            if now is None or (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
                continue  # replaced while this run waited: lock the file that is there now
            try:
                data = _read_limited(fd, limit)
            except OSError as exc:
                raise SpecError([Finding(path, None, "", f"cannot read the file: {exc.strerror or exc}")]) from None
            if len(data) > limit:
                raise too_large(path, limit, what)
            yield data
            return
        finally:
            os.close(fd)  # releases the lock


@contextmanager
def locked_folder(folder: str, on_wait=None) -> Iterator[None]:
    """Hold an exclusive advisory lock on a folder (two batches into one OUTDIR take turns).

    ``on_wait()`` is called once if another process holds it."""
    import fcntl

    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise FileError(folder, exc.strerror or str(exc)) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
