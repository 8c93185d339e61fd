"""The in-memory filesystem of the virtual handset.

One tree of :class:`Node` objects with Unix modes, owners, SELinux labels and mtimes, plus a
mount table: a tmpfs or bind mount over a directory shadows what is below it until it is
unmounted or the phone reboots, as on a real kernel. Every operation takes the caller's
:class:`Cred` and fails with the ``OSError`` subclass a phone would give (``PermissionError``
for ``EACCES``, ``OSError(EROFS)`` on a read-only mount, ...).

:class:`DeviceFS` is the :class:`~vhandset.interface.VirtualFS` the ADB sync service
uses; it acts with adbd's credentials.
"""

from __future__ import annotations

import errno
import itertools
import os
import posixpath
import stat as statmod
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from vhandset.interface import FileStat

S_IFDIR = statmod.S_IFDIR
S_IFREG = statmod.S_IFREG
S_IFLNK = statmod.S_IFLNK

SYSTEM_IMAGE_MTIME = 1230768000  # 2009-01-01 00:00 UTC, the mtime of files in Android images
DEFAULT_LABEL = "u:object_r:system_file:s0"
MAX_SYMLINKS = 40

AID_ROOT = 0
AID_SYSTEM = 1000
AID_SHELL = 2000
AID_SDCARD_RW = 1015


@dataclass(frozen=True, slots=True)
class Cred:
    """Who performs a filesystem operation."""

    uid: int
    gid: int
    groups: frozenset[int] = frozenset()
    kernel: bool = False  # bypasses permissions and read-only mounts (building the image)

    @property
    def is_root(self) -> bool:
        return self.uid == 0 or self.kernel

    def in_group(self, gid: int) -> bool:
        return gid == self.gid or gid in self.groups


KERNEL = Cred(0, 0, kernel=True)


class Node:
    """A file, directory or symlink. A node is shared by every path that reaches it."""

    __slots__ = (
        "children",
        "data",
        "dynamic",
        "gid",
        "ino",
        "label",
        "mode",
        "mtime",
        "target",
        "uid",
    )

    _inodes = itertools.count(1000)

    def __init__(
        self,
        mode: int,
        uid: int = 0,
        gid: int = 0,
        mtime: int = SYSTEM_IMAGE_MTIME,
        label: str = DEFAULT_LABEL,
    ) -> None:
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.mtime = mtime
        self.label = label
        self.ino = next(Node._inodes)
        self.data = bytearray()
        self.children: dict[str, Node] | None = {} if statmod.S_ISDIR(mode) else None
        self.target = ""
        self.dynamic: Callable[[], bytes] | None = None

    @property
    def is_dir(self) -> bool:
        return statmod.S_ISDIR(self.mode)

    @property
    def is_link(self) -> bool:
        return statmod.S_ISLNK(self.mode)

    @property
    def is_file(self) -> bool:
        return statmod.S_ISREG(self.mode)

    @property
    def size(self) -> int:
        if self.is_dir:
            return 3488 if self.children and len(self.children) > 40 else 4096
        if self.is_link:
            return len(self.target)
        if self.dynamic is not None:
            return 0  # as /proc files report
        return len(self.data)

    @property
    def nlink(self) -> int:
        if self.is_dir and self.children is not None:
            return 2 + sum(1 for c in self.children.values() if c.is_dir)
        return 1

    def content(self) -> bytes:
        if self.dynamic is not None:
            return self.dynamic()
        return bytes(self.data)


@dataclass(slots=True)
class Mount:
    source: str
    target: str
    fstype: str
    options: str
    root: Node
    boot: bool = False
    boot_options: str = ""
    # sdcardfs/fuse-style forced ownership: (uid, gid, file mode, dir mode)
    force: tuple[int, int, int, int] | None = None

    @property
    def ro(self) -> bool:
        return "ro" in self.options.split(",")


@dataclass(frozen=True, slots=True)
class StatResult:
    mode: int
    uid: int
    gid: int
    size: int
    mtime: int
    ino: int
    nlink: int
    label: str
    target: str = ""
    dev: int = 0xFD00

    def file_stat(self) -> FileStat:
        return FileStat(mode=self.mode, size=self.size, mtime=self.mtime)


def _err(code: int, path: str) -> OSError:
    # OSError(errno, ...) constructs the matching subclass (FileNotFoundError, ...).
    return OSError(code, os.strerror(code), path)


def _now(cred: Cred) -> int:
    """Files made while building the image carry the image date, later ones the clock."""
    return SYSTEM_IMAGE_MTIME if cred.kernel else int(time.time())


def normpath(path: str, cwd: str = "/") -> str:
    """Absolute, lexically normalised path (``..`` is resolved without following links)."""
    if not path.startswith("/"):
        path = posixpath.join(cwd, path)
    out = posixpath.normpath(path)
    return "/" + out.lstrip("/") if out.startswith("//") else out


class MemoryFS:
    """The phone's filesystem: a node tree plus a mount table. Thread-safe under ``lock``."""

    def __init__(self, lock: threading.RLock | None = None) -> None:
        self.lock = lock or threading.RLock()
        self.root = Node(S_IFDIR | 0o755)
        self._mounts: list[Mount] = [
            Mount("/dev/block/dm-0", "/", "ext4", "ro,seclabel,relatime", self.root, boot=True)
        ]
        self._mounts[0].boot_options = self._mounts[0].options

    # ---- path resolution -------------------------------------------------------------------

    def _mounted(self, path: str, node: Node) -> Node:
        for mnt in reversed(self._mounts):
            if mnt.target == path:
                return mnt.root
        return node

    def mount_of(self, path: str) -> Mount:
        """The mount a canonical ``path`` lives on (the innermost, most recent one)."""
        best: Mount | None = None
        for mnt in self._mounts:
            t = mnt.target
            if t == "/" or path == t or path.startswith(t + "/"):
                if best is None or len(t) >= len(best.target):
                    best = mnt
        assert best is not None
        return best

    def _walk(self, path: str, cred: Cred, follow: bool = True) -> tuple[Node, str]:
        """Resolve ``path`` to its node and canonical path (symlinks resolved)."""
        path = normpath(path)
        for _ in range(MAX_SYMLINKS):
            parts = [p for p in path.split("/") if p]
            node = self._mounted("/", self.root)
            cur = "/"
            restarted = False
            for i, comp in enumerate(parts):
                if not node.is_dir or node.children is None:
                    raise _err(errno.ENOTDIR, path)
                if not self._may(node, cred, 0o1):
                    raise _err(errno.EACCES, path)
                child = node.children.get(comp)
                if child is None:
                    raise _err(errno.ENOENT, path)
                nxt = posixpath.join(cur, comp)
                child = self._mounted(nxt, child)
                last = i == len(parts) - 1
                if child.is_link and (follow or not last):
                    target = child.target
                    base = target if target.startswith("/") else posixpath.join(cur, target)
                    path = normpath("/".join([base, *parts[i + 1 :]]))
                    restarted = True
                    break
                node, cur = child, nxt
            if not restarted:
                return node, cur
        raise _err(errno.ELOOP, path)

    def _parent(self, path: str, cred: Cred) -> tuple[Node, str, str]:
        path = normpath(path)
        if path == "/":
            raise _err(errno.EBUSY, path)
        head, name = posixpath.split(path)
        parent, canon = self._walk(head, cred)
        if not parent.is_dir or parent.children is None:
            raise _err(errno.ENOTDIR, path)
        return parent, canon, name

    @staticmethod
    def _may(node: Node, cred: Cred, bits: int) -> bool:
        """Whether ``cred`` has permission ``bits`` (4 r, 2 w, 1 x) on ``node``."""
        if cred.is_root:
            return not (bits & 0o1) or node.is_dir or bool(node.mode & 0o111)
        if cred.uid == node.uid:
            have = (node.mode >> 6) & 7
        elif cred.in_group(node.gid):
            have = (node.mode >> 3) & 7
        else:
            have = node.mode & 7
        return have & bits == bits

    def _check_writable_dir(self, parent: Node, canon: str, cred: Cred, path: str) -> Mount:
        mnt = self.mount_of(canon)
        if mnt.ro and not cred.kernel:
            raise _err(errno.EROFS, path)
        if not self._may(parent, cred, 0o3):
            raise _err(errno.EACCES, path)
        return mnt

    # ---- queries ---------------------------------------------------------------------------

    def resolve(self, path: str, cred: Cred = KERNEL, follow: bool = True) -> str:
        """The canonical path of ``path``."""
        with self.lock:
            return self._walk(path, cred, follow)[1]

    def stat(self, path: str, cred: Cred = KERNEL, follow: bool = True) -> StatResult:
        with self.lock:
            node, _ = self._walk(path, cred, follow)
            return StatResult(
                mode=node.mode,
                uid=node.uid,
                gid=node.gid,
                size=node.size,
                mtime=node.mtime,
                ino=node.ino,
                nlink=node.nlink,
                label=node.label,
                target=node.target,
            )

    def exists(self, path: str, cred: Cred = KERNEL, follow: bool = True) -> bool:
        try:
            self.stat(path, cred, follow)
        except OSError:
            return False
        return True

    def is_dir(self, path: str, cred: Cred = KERNEL) -> bool:
        try:
            return statmod.S_ISDIR(self.stat(path, cred).mode)
        except OSError:
            return False

    def listdir(self, path: str, cred: Cred = KERNEL) -> list[str]:
        with self.lock:
            node, _ = self._walk(path, cred)
            if not node.is_dir or node.children is None:
                raise _err(errno.ENOTDIR, path)
            if not self._may(node, cred, 0o4):
                raise _err(errno.EACCES, path)
            return sorted(node.children)

    def read(self, path: str, cred: Cred = KERNEL) -> bytes:
        with self.lock:
            node, _ = self._walk(path, cred)
            if node.is_dir:
                raise _err(errno.EISDIR, path)
            if not self._may(node, cred, 0o4):
                raise _err(errno.EACCES, path)
            return node.content()

    def access(self, path: str, cred: Cred, bits: int) -> bool:
        """``access(2)``: may ``cred`` read (4), write (2) or execute (1) ``path``."""
        with self.lock:
            try:
                node, canon = self._walk(path, cred)
            except OSError:
                return False
            if bits & 0o2 and self.mount_of(canon).ro and not cred.kernel:
                return False
            return self._may(node, cred, bits)

    # ---- changes ---------------------------------------------------------------------------

    def write(
        self,
        path: str,
        data: bytes,
        cred: Cred = KERNEL,
        *,
        append: bool = False,
        mode: int = 0o644,
        mtime: int | None = None,
    ) -> None:
        """Create or replace (or append to) a regular file; ``mode`` applies when creating."""
        with self.lock:
            now = _now(cred) if mtime is None else mtime
            try:
                node, canon = self._walk(path, cred)
            except FileNotFoundError:
                node = None
            if node is not None:
                if node.is_dir:
                    raise _err(errno.EISDIR, path)
                if node.dynamic is not None and not cred.kernel:
                    raise _err(errno.EACCES, path)
                if self.mount_of(canon).ro and not cred.kernel:
                    raise _err(errno.EROFS, path)
                if not self._may(node, cred, 0o2):
                    raise _err(errno.EACCES, path)
                if not append:
                    node.data = bytearray()
                node.data += data
                node.mtime = now
                return
            parent, pcanon, name = self._parent(path, cred)
            mnt = self._check_writable_dir(parent, pcanon, cred, path)
            new = Node(S_IFREG | (mode & 0o7777), cred.uid, cred.gid, now, parent.label)
            if mnt.force:
                new.uid, new.gid, new.mode = mnt.force[0], mnt.force[1], S_IFREG | mnt.force[2]
            new.data = bytearray(data)
            assert parent.children is not None
            parent.children[name] = new
            parent.mtime = now

    def mkdir(
        self,
        path: str,
        cred: Cred = KERNEL,
        mode: int = 0o755,
        *,
        parents: bool = False,
        mtime: int | None = None,
    ) -> None:
        with self.lock:
            path = normpath(path)
            if parents:
                head = posixpath.dirname(path)
                if head != path and not self.exists(head, cred):
                    self.mkdir(head, cred, 0o755 if mode & 0o700 else mode, parents=True)
                if self.exists(path, cred):
                    if not self.is_dir(path, cred):
                        raise _err(errno.EEXIST, path)
                    return
            parent, pcanon, name = self._parent(path, cred)
            assert parent.children is not None
            if name in parent.children:
                raise _err(errno.EEXIST, path)
            mnt = self._check_writable_dir(parent, pcanon, cred, path)
            now = _now(cred) if mtime is None else mtime
            new = Node(S_IFDIR | (mode & 0o7777), cred.uid, cred.gid, now, parent.label)
            if mnt.force:
                new.uid, new.gid, new.mode = mnt.force[0], mnt.force[1], S_IFDIR | mnt.force[3]
            parent.children[name] = new
            parent.mtime = now

    def symlink(self, target: str, path: str, cred: Cred = KERNEL) -> None:
        with self.lock:
            parent, pcanon, name = self._parent(path, cred)
            assert parent.children is not None
            if name in parent.children:
                raise _err(errno.EEXIST, path)
            self._check_writable_dir(parent, pcanon, cred, path)
            mode = 0o644 if cred.kernel else 0o777  # image symlinks carry fs_config's 0644
            link = Node(S_IFLNK | mode, cred.uid, cred.gid, _now(cred), parent.label)
            link.target = target
            parent.children[name] = link

    def dynamic(self, path: str, producer: Callable[[], bytes], mode: int = 0o444) -> None:
        """A file whose content is computed at each read (``/proc`` style); built as kernel."""
        with self.lock:
            self.mkdir(posixpath.dirname(normpath(path)), KERNEL, parents=True)
            self.write(path, b"", KERNEL, mode=mode)
            node, _ = self._walk(path, KERNEL)
            node.dynamic = producer

    def _removable(self, path: str, cred: Cred) -> tuple[Node, str, Node]:
        parent, pcanon, name = self._parent(path, cred)
        assert parent.children is not None
        node = parent.children.get(name)
        if node is None:
            raise _err(errno.ENOENT, path)
        if any(m.target == posixpath.join(pcanon, name) for m in self._mounts):
            raise _err(errno.EBUSY, path)
        self._check_writable_dir(parent, pcanon, cred, path)
        return parent, name, node

    def unlink(self, path: str, cred: Cred = KERNEL) -> None:
        with self.lock:
            parent, name, node = self._removable(path, cred)
            if node.is_dir:
                raise _err(errno.EISDIR, path)
            assert parent.children is not None
            del parent.children[name]
            parent.mtime = int(time.time())

    def rmdir(self, path: str, cred: Cred = KERNEL) -> None:
        with self.lock:
            parent, name, node = self._removable(path, cred)
            if not node.is_dir:
                raise _err(errno.ENOTDIR, path)
            if node.children:
                raise _err(errno.ENOTEMPTY, path)
            assert parent.children is not None
            del parent.children[name]
            parent.mtime = int(time.time())

    def rename(self, src: str, dst: str, cred: Cred = KERNEL) -> None:
        with self.lock:
            sparent, sname, node = self._removable(src, cred)
            dparent, dcanon, dname = self._parent(dst, cred)
            scanon = self.resolve(posixpath.dirname(normpath(src)), cred)
            if self.mount_of(scanon) is not self.mount_of(dcanon):
                raise _err(errno.EXDEV, dst)
            self._check_writable_dir(dparent, dcanon, cred, dst)
            assert dparent.children is not None and sparent.children is not None
            existing = dparent.children.get(dname)
            if existing is not None and existing.is_dir and not node.is_dir:
                raise _err(errno.EISDIR, dst)
            del sparent.children[sname]
            dparent.children[dname] = node

    def _owned(self, path: str, cred: Cred, follow: bool = True) -> Node:
        node, canon = self._walk(path, cred, follow)
        mnt = self.mount_of(canon)
        if mnt.ro and not cred.kernel:
            raise _err(errno.EROFS, path)
        if mnt.force and not cred.kernel:
            raise _err(errno.EPERM, path)
        return node

    def chmod(self, path: str, mode: int, cred: Cred = KERNEL) -> None:
        with self.lock:
            node = self._owned(path, cred)
            if not cred.is_root and cred.uid != node.uid:
                raise _err(errno.EPERM, path)
            node.mode = (node.mode & ~0o7777) | (mode & 0o7777)

    def chown(
        self, path: str, uid: int, gid: int, cred: Cred = KERNEL, follow: bool = True
    ) -> None:
        """``uid``/``gid`` of -1 keep the current value. Only root may give files away."""
        with self.lock:
            node = self._owned(path, cred, follow)
            if not cred.is_root:
                raise _err(errno.EPERM, path)
            if uid >= 0:
                node.uid = uid
            if gid >= 0:
                node.gid = gid

    def chcon(self, path: str, label: str, cred: Cred = KERNEL) -> None:
        with self.lock:
            node = self._owned(path, cred)
            if not cred.is_root and cred.uid != node.uid:
                raise _err(errno.EPERM, path)
            node.label = label

    def utime(self, path: str, mtime: int, cred: Cred = KERNEL) -> None:
        with self.lock:
            node = self._owned(path, cred)
            if not cred.is_root and cred.uid != node.uid and not self._may(node, cred, 0o2):
                raise _err(errno.EACCES, path)
            node.mtime = mtime

    def set_owner(self, path: str, uid: int, gid: int, mode: int, label: str | None = None) -> None:
        """Set ownership, mode and label while building the image (no checks)."""
        with self.lock:
            node, _ = self._walk(path, KERNEL, follow=False)
            node.uid, node.gid = uid, gid
            node.mode = (node.mode & ~0o7777) | (mode & 0o7777)
            if label is not None:
                node.label = label

    def walk_files(self, path: str, cred: Cred = KERNEL) -> Iterator[str]:
        """Every regular file under ``path`` (depth first, sorted), as paths below ``path``."""
        for name in self.listdir(path, cred):
            full = posixpath.join(path, name)
            st = self.stat(full, cred, follow=False)
            if statmod.S_ISDIR(st.mode):
                yield from self.walk_files(full, cred)
            elif statmod.S_ISREG(st.mode):
                yield full

    # ---- mounts ----------------------------------------------------------------------------

    def mounts(self) -> list[Mount]:
        with self.lock:
            return list(self._mounts)

    def proc_mounts(self) -> bytes:
        """``/proc/mounts``: ``source target fstype options 0 0`` per line, in mount order."""
        with self.lock:
            return "".join(
                f"{m.source} {m.target} {m.fstype} {m.options} 0 0\n" for m in self._mounts
            ).encode()

    def mount_boot(
        self,
        source: str,
        target: str,
        fstype: str,
        options: str,
        *,
        mode: int = 0o755,
        uid: int = 0,
        gid: int = 0,
        label: str = DEFAULT_LABEL,
        force: tuple[int, int, int, int] | None = None,
    ) -> None:
        """A mount that exists from boot (``/data``, ``/proc``, an APEX, ...)."""
        with self.lock:
            self.mkdir(target, KERNEL, parents=True)
            root = Node(S_IFDIR | mode, uid, gid, SYSTEM_IMAGE_MTIME, label)
            canon = self.resolve(target)
            self._mounts.append(Mount(source, canon, fstype, options, root, True, options, force))

    def mount_tmpfs(
        self, target: str, cred: Cred, *, source: str = "tmpfs", options: str = ""
    ) -> None:
        with self.lock:
            if not cred.is_root:
                raise _err(errno.EPERM, target)
            node, canon = self._walk(target, cred)
            if not node.is_dir:
                raise _err(errno.ENOTDIR, target)
            mode = 0o1777
            for opt in options.split(","):
                if opt.startswith("mode="):
                    mode = int(opt[5:], 8)
            root = Node(S_IFDIR | mode, 0, 0, int(time.time()), "u:object_r:tmpfs:s0")
            opts = ",".join(o for o in ["rw", "seclabel", "relatime", *options.split(",")] if o)
            self._mounts.append(Mount(source, canon, "tmpfs", opts, root))

    def mount_bind(self, src: str, target: str, cred: Cred) -> None:
        with self.lock:
            if not cred.is_root:
                raise _err(errno.EPERM, target)
            snode, scanon = self._walk(src, cred)
            tnode, tcanon = self._walk(target, cred)
            if snode.is_dir != tnode.is_dir:
                raise _err(errno.ENOTDIR if not snode.is_dir else errno.EISDIR, target)
            smnt = self.mount_of(scanon)
            self._mounts.append(Mount(smnt.source, tcanon, smnt.fstype, smnt.options, snode))

    def umount(self, target: str, cred: Cred) -> None:
        with self.lock:
            if not cred.is_root:
                raise _err(errno.EPERM, target)
            canon = self.resolve(target, cred)
            for i in range(len(self._mounts) - 1, -1, -1):
                mnt = self._mounts[i]
                if mnt.target == canon:
                    if mnt.boot:
                        raise _err(errno.EBUSY, target)
                    if any(m.target.startswith(canon + "/") for m in self._mounts[i + 1 :]):
                        raise _err(errno.EBUSY, target)
                    del self._mounts[i]
                    return
            raise _err(errno.EINVAL, target)

    def remount(self, target: str, cred: Cred, *, ro: bool) -> Mount:
        """Flip a mount between ``ro`` and ``rw``; ``target`` must be a mount point."""
        with self.lock:
            if not cred.is_root:
                raise _err(errno.EPERM, target)
            canon = self.resolve(target, cred)
            for mnt in reversed(self._mounts):
                if mnt.target == canon:
                    opts = [o for o in mnt.options.split(",") if o not in ("ro", "rw")]
                    mnt.options = ",".join(["ro" if ro else "rw", *opts])
                    return mnt
            raise _err(errno.EINVAL, target)

    def reset_mounts(self) -> None:
        """What a reboot does: runtime mounts vanish and boot mounts get their boot options."""
        with self.lock:
            self._mounts = [m for m in self._mounts if m.boot]
            for mnt in self._mounts:
                mnt.options = mnt.boot_options or mnt.options


@dataclass(slots=True)
class DeviceFS:
    """The :class:`VirtualFS` that adbd's sync service sees, acting as adbd (shell or root).

    ``stat`` follows symlinks; ``listdir`` describes entries as ``lstat`` does and leaves out
    ``.`` and ``..``. ``write`` creates missing parent directories as adbd does for a push.
    """

    fs: MemoryFS
    cred: Callable[[], Cred]

    def stat(self, path: str) -> FileStat | None:
        try:
            return self.fs.stat(path, self.cred()).file_stat()
        except OSError:
            return None

    def listdir(self, path: str) -> list[tuple[str, FileStat]] | None:
        cred = self.cred()
        with self.fs.lock:
            try:
                names = self.fs.listdir(path, cred)
            except OSError:
                return None
            out = []
            for name in names:
                try:
                    st = self.fs.stat(posixpath.join(path, name), cred, follow=False)
                except OSError:
                    continue
                out.append((name, st.file_stat()))
            return out

    def read(self, path: str) -> bytes:
        return self.fs.read(path, self.cred())

    def write(self, path: str, data: bytes, mode: int, mtime: int) -> None:
        cred = self.cred()
        with self.fs.lock:
            parent = posixpath.dirname(normpath(path))
            if not self.fs.exists(parent, cred):
                self.fs.mkdir(parent, cred, 0o775, parents=True)
            existed = self.fs.exists(path, cred)
            self.fs.write(path, data, cred, mode=mode & 0o7777, mtime=mtime)
            if existed and mode & 0o7777:
                try:
                    self.fs.chmod(path, mode & 0o7777, cred)
                except OSError:
                    pass
