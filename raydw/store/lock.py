"""One sweep driver per store: `locks/driver.json`, created exclusively (a conditional PUT on object stores)."""
from __future__ import annotations

import json
import os
import time
import uuid

from raydw.errors import StoreError, StorePathError
from raydw.objectlock import ObjectLockError, create_if_absent


class StoreLocked(StoreError):
    pass


class StoreLock:
    """`locks/driver.json`, created exclusively: a second driver on the same store stops with a clear message.

    On object stores the lock is one conditional PUT (raydw.objectlock): of two drivers started together exactly
    one creates it; a lock left by a killed driver there is never taken over (it must be deleted by hand).

    Why one lock per store rather than per-cell claims: two drivers would otherwise both see a cell as missing
    and both run it (the rows would not corrupt, being whole-file atomic writes, but GPU-hours would be spent
    twice and the second write would silently replace the first). A lock left by a killed driver on this host is
    detected (its pid is gone) and taken over; one from another host must be removed by hand, as the message says.
    """

    def __init__(self, store: Store, what: str):
        self.store, self.what = store, what
        self.path = store.path("locks", "driver.json")

    def __enter__(self) -> "StoreLock":
        import socket

        me = {"pid": os.getpid(), "host": socket.gethostname(), "what": self.what, "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        try:
            self.store.fs.create_dir(self.store.path("locks"), recursive=True)
        except OSError as e:  # `locks` is a file, or the store cannot be written
            raise StorePathError(f"results store {self.store.uri}: cannot make its lock folder {self.store.path('locks')}: "
                                 f"{e}") from None
        if not self.store.local:  # object stores: create-if-absent (S3's conditional PUT), so exactly one driver wins
            holder = self._holder()
            try:
                made = holder is None and create_if_absent(self.store, ("locks", "driver.json"), json.dumps(me).encode())
            except ObjectLockError as e:
                raise StoreError(str(e)) from None
            if made:
                self.store.owner = True
                return self
            raise StoreLocked(self._refusal(holder or self._holder() or {}))
        # Local: every raydw process judges and takes the lock inside one flock()ed critical section
        # (locks/.guard; the kernel releases it when its holder dies), so a stale lock is taken over by exactly
        # one process: two cannot both read "stale", both remove it and both create their own.
        try:
            with self._guard():
                holder = self._holder()
                if holder is not None:
                    if not (holder.get("host") == me["host"] and isinstance(holder.get("pid"), int) and not _alive(holder["pid"])):
                        raise StoreLocked(self._refusal(holder))
                    # its driver was killed: keep the stale lock aside for the record, then create ours
                    os.replace(self.path, f"{self.path}.stale-{holder['pid']}")
                self._create(me)
        except OSError as e:  # a full or read-only disk: the lock cannot be written (ENOSPC, EROFS, EACCES)
            raise StoreError(f"results store {self.store.uri} is not writable: cannot write its lock "
                             f"{self.path} ({e.strerror or e})") from None
        self.store.owner = True
        return self

    def _create(self, me: dict) -> None:
        """Write the lock whole and create it exclusively: a temporary, then link(2), which fails if the name exists
        (so a reader never sees a half-written lock, and a killed writer never leaves an empty one)."""
        tmp = f"{self.path}.{uuid.uuid4().hex}.tmp"
        try:
            with open(tmp, "w") as f:  # on a full disk the write (or its close) fails: the temporary goes all the same
                json.dump(me, f)
            os.link(tmp, self.path)
        except FileExistsError:
            raise StoreLocked(self._refusal(self._holder() or {})) from None
        except OSError:  # a filesystem without hard links: create-exclusive, then write
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
        finally:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass

    def _guard(self):
        import contextlib
        import fcntl

        @contextlib.contextmanager
        def held():
            fd = os.open(self.store.path("locks", ".guard"), os.O_CREAT | os.O_RDWR, 0o644)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                except OSError:  # a filesystem without flock: the exclusive create alone still refuses a second driver
                    pass
                yield
            finally:
                os.close(fd)  # releases the flock
        return held()

    def _refusal(self, holder: dict) -> str:
        if "unreadable" in holder:
            return (f"results store {self.store.uri} has a lock file {self.path} that is not a raydw lock "
                    f"({holder['unreadable']}). If no raydw driver is running on this store, delete it")
        return (f"results store {self.store.uri} is in use by another raydw driver (pid {holder.get('pid')} on "
                f"{holder.get('host')}, {holder.get('what')}, since {holder.get('since')}). Wait for it to finish, or "
                f"if that process is gone, delete {self.path}")

    def __exit__(self, *exc) -> None:
        self.store.owner = False
        if not self.store.local:
            holder = self._holder()
            if holder and holder.get("pid") == os.getpid() and holder.get("host") == _host():
                self._remove()
            return
        with self._guard():
            holder = self._holder()
            if holder and holder.get("pid") == os.getpid() and holder.get("host") == _host():
                self._remove()

    def _holder(self) -> dict | None:
        """The lock's content; None if there is no lock; {"unreadable": why} for an empty or damaged one."""
        try:
            raw = self.store.read_bytes("locks", "driver.json")
        except FileNotFoundError:
            return None
        except OSError as e:
            return {"unreadable": f"cannot be read: {e}"}
        try:
            d = json.loads(raw)
        except ValueError:
            return {"unreadable": "empty" if not raw.strip() else f"not JSON: {raw[:40]!r}"}
        pid = d.get("pid") if isinstance(d, dict) else None
        if not isinstance(pid, int) or isinstance(pid, bool) or not 0 < pid < 2 ** 31:
            return {"unreadable": f"no valid pid in it: {raw[:60]!r}"}
        return d

    def _remove(self) -> None:
        try:
            self.store.fs.delete_file(self.path)
        except (FileNotFoundError, OSError):
            pass


def _host() -> str:
    import socket

    return socket.gethostname()


def _alive(pid) -> bool:
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        return True
    return True
