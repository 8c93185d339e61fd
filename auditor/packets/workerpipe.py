"""The name worker: a :class:`~auditor.packets.names.NameCollector` in a child process.

Both ends of its pipes are here: :class:`NameWorker`, in the reading process, starts
``python -m auditor.packets._worker`` and feeds it; :func:`serve`, in the child, answers.
Frames are length-prefixed pickles: jobs in, a "done" frame per job and the collector's
result out (its arrays in frames of their own: :func:`write_reply`).

Why a process of its own and not :mod:`concurrent.futures` or :mod:`multiprocessing`: the
reader feeds jobs while it goes on reading and must be held back when the worker lags (a
write blocks on the full pipe, enlarged to about a job), must know how far behind the worker
is after each job (the "done" frames, to parse the floating kinds itself meanwhile), and wants
the result of the whole stream of jobs, not one per job. A pool gives a result per task,
queues tasks without bound, and its child imports the parent's ``__main__``; the worker here
imports only the collector (no pandas), and exits without tearing down what it built.
Measured (2026-12-06, the 1M-packet DNS-heavy capture of ``bench.packets``, one series of
three interleaved runs each on a quiet machine): 1.79 to 2.01 s with this pipe, 1.96 to 2.12 s
with a one-process ``ProcessPoolExecutor`` whose process keeps the collector (the same tables);
a second series, with other work running, could not tell them apart."""

from __future__ import annotations

import gc
import mmap
import os
import pickle
import subprocess
import sys
import tempfile
import threading
from typing import IO, Final

try:
    import fcntl
except ImportError:  # not POSIX
    fcntl = None  # type: ignore[assignment]

from auditor.packets.nameresult import NameResult
from auditor.packets.names import NameCollector, NameJob
from auditor.packets.spilldir import drop_pages, spill_dir


def read_frame(stream: IO[bytes]) -> bytes | None:
    head = stream.read(8)
    if len(head) < 8:
        return None
    size = int.from_bytes(head, "big")
    data = stream.read(size)
    if len(data) < size:
        return None
    return bytes(data)


#: A buffer of the worker's reply this large goes to an unnamed temporary file, mapped: what
#: the reading process does not look at (most answer records) stays on disk
FILE_BUFFER: Final = 1 << 20


def read_frame_into(
    stream: IO[bytes], file_from: int | None = None
) -> bytearray | mmap.mmap | None:
    """A frame read into a buffer of its own (no copy of it is made: numpy arrays unpickled
    from it keep it as their memory). One of ``file_from`` bytes or more is written to an
    unnamed temporary file (``spilldir``) and mapped read-only (arrays made from it are
    read-only): its pages are the file's, which ``spilldir.drop_pages`` can let go."""
    head = stream.read(8)
    if len(head) < 8:
        return None
    size = int.from_bytes(head, "big")
    if file_from is not None and size >= max(file_from, 1):
        with tempfile.TemporaryFile(dir=spill_dir()) as fh:
            left = size
            while left:
                chunk = stream.read(min(left, 1 << 20))
                if not chunk:
                    return None
                fh.write(chunk)
                left -= len(chunk)
            fh.flush()
            return mmap.mmap(fh.fileno(), size, access=mmap.ACCESS_READ)  # keeps the file
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    while got < size:
        n = stream.readinto(view[got:])  # type: ignore[attr-defined]
        if not n:
            return None
        got += n
    return buf


def write_frame(stream: IO[bytes], data: bytes | memoryview) -> None:
    stream.write(len(data).to_bytes(8, "big"))
    stream.write(data)
    stream.flush()


def write_reply(stream: IO[bytes], reply: tuple[str, object]) -> None:
    """The worker's reply: a frame with the number of buffers, the pickle, then each buffer
    (the arrays' memory, pickle protocol 5's out-of-band buffers) in a frame of its own, so
    that the reading process reads each array once into memory it keeps, instead of holding
    the whole pickle and the arrays made from it at once."""
    buffers: list[pickle.PickleBuffer] = []
    data = pickle.dumps(reply, protocol=5, buffer_callback=buffers.append)
    write_frame(stream, pickle.dumps(("reply", len(buffers)), protocol=5))
    write_frame(stream, data)
    del data
    for b in buffers:
        raw = b.raw()
        write_frame(stream, raw)
        drop_pages(raw.obj)  # an array mapped from a file (the DNS records): read, let go
        del raw


def serve(jobs: IO[bytes], results: IO[bytes]) -> int:
    """The worker process: pickled NameJobs in length-prefixed frames on ``jobs`` until an
    empty frame. After each job an ("done", None) frame tells the reading process the job is
    done; at the end one frame with ("ok", NameResult), ("oserror", (errno, text)) or
    ("error", text). The peer is the
    reading process that started this one, over its own pipes, and reads ``results`` while
    it writes ``jobs``."""
    gc.disable()  # only long-lived, acyclic objects here (see flows._gc_paused)
    collector = NameCollector()
    done = pickle.dumps(("done", None), pickle.HIGHEST_PROTOCOL)
    try:
        while True:
            frame = read_frame(jobs)
            if not frame:
                break
            collector.feed(pickle.loads(frame))  # noqa: S301 - from the parent process
            write_frame(results, done)
        reply: tuple[str, object] = ("ok", collector.result())
    except OSError as exc:  # (a full disk, say) raised again as such by the reading process
        reply = ("oserror", (exc.errno, exc.strerror or str(exc)))
    except Exception as exc:  # noqa: BLE001 - reported to the reading process
        reply = ("error", f"{type(exc).__name__}: {exc}")
    write_reply(results, reply)
    return 0 if reply[0] == "ok" else 1


_PIPE_SIZE: Final = 1024 * 1024  # about a job: the pipe enlarged to hold one


class NameWorker:
    """A :class:`~auditor.packets.names.NameCollector` in a child process
    (``python -m auditor.packets._worker``) fed pickled jobs over its stdin. A write blocks
    while the pipe is full, so a slow worker holds the reader back rather than letting jobs
    pile up in memory; the pipe is enlarged to hold about a job. The worker tells when each
    job is done, and sends everything it learnt at the end; a thread reads its frames (it
    must, or the worker would block on a full pipe while this process blocks on the
    other)."""

    def __init__(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "auditor.packets._worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._stdin = self._proc.stdin
        self._stdout = self._proc.stdout
        set_size = getattr(fcntl, "F_SETPIPE_SZ", None) if fcntl is not None else None
        if set_size is not None:
            try:
                fcntl.fcntl(self._stdin.fileno(), set_size, _PIPE_SIZE)
            except OSError:
                pass  # the default size works, with more waiting
        self.sent = 0  # jobs fed
        self.done = 0  # jobs the worker has answered
        self._reply: tuple[str, object] | None = None
        self._failure: str | None = None
        self._os_failure: OSError | None = None  # raised as it is (read_capture names it)
        self._reader = threading.Thread(target=self._read, name="name-worker-reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        """The worker's frames: rows as they come, then its reply (on this thread)."""
        try:
            while True:
                frame = read_frame(self._stdout)
                if frame is None:
                    return
                kind, value = pickle.loads(frame)  # noqa: S301 - from our own child process
                if kind == "done":
                    self.done += 1
                    continue
                if kind != "reply" or not isinstance(value, int):
                    raise ValueError(f"an unexpected frame from the worker: {kind!r}")
                data = read_frame(self._stdout)
                buffers = [read_frame_into(self._stdout, FILE_BUFFER) for _ in range(value)]
                if data is None or any(b is None for b in buffers):
                    return  # cut short: result() says the worker died
                self._reply = pickle.loads(data, buffers=buffers)  # noqa: S301 - as above
                return
        except OSError as exc:  # (its arrays' files could not be written: a full disk)
            self._os_failure = exc
        except Exception as exc:  # noqa: BLE001 - reported by result()
            self._failure = f"{type(exc).__name__}: {exc}"

    def feed(self, job: NameJob) -> None:
        self._send(pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL))
        self.sent += 1

    @property
    def behind(self) -> int:
        """Jobs fed that the worker has not finished."""
        return self.sent - self.done

    def _send(self, frame: bytes) -> None:
        try:
            write_frame(self._stdin, frame)
        except (BrokenPipeError, ValueError):
            self._reader.join(timeout=5)  # its reply may say why it stopped
            self._failed()
            raise RuntimeError(f"the name worker stopped (exit code {self._proc.poll()})") from None

    def _failed(self) -> None:
        """Raise what the worker's reply says went wrong, if it says so: an OSError as one
        (the CLI says what a full disk needs), anything else as a RuntimeError."""
        if self._reply is None or self._reply[0] == "ok":
            return
        status, value = self._reply
        self._reply = None
        if status == "oserror" and isinstance(value, tuple) and len(value) == 2:
            code, text = value  # its own files: the temporary folder's
            raise OSError(code, f"the name worker: {text}", spill_dir() or tempfile.gettempdir())
        raise RuntimeError(f"the name worker failed: {value}")

    def result(self) -> NameResult:
        self._send(b"")
        self._stdin.close()
        self._reader.join(timeout=60)
        if self._os_failure is not None:
            raise self._os_failure
        if self._failure is not None:
            raise RuntimeError(f"the name worker's answer could not be read: {self._failure}")
        if self._reply is None:
            self._proc.wait(timeout=30)
            raise RuntimeError(f"the name worker died (exit code {self._proc.returncode})")
        self._failed()
        _, value = self._reply
        self._reply = None  # the caller's alone: what it lets go is let go
        assert isinstance(value, NameResult)
        return value

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait(timeout=10)
        for pipe in (self._stdin, self._stdout):
            try:
                pipe.close()
            except OSError:
                pass
        self._reader.join(timeout=10)
