"""Rendering in worker processes: the pool (parent side) and the worker loop (`python -m`)."""

from __future__ import annotations

import os
import pickle
import queue
import struct
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

# Workers are fresh interpreters running this module, not multiprocessing children: spawn and
# forkserver re-run the caller's __main__ (a script without a main guard would recurse), and fork
# copies a parent that may hold torch or CUDA threads.
_HEADER = struct.Struct(">Q")
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


def _send(stream: IO[bytes], value: Any) -> None:
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def _receive(stream: IO[bytes]) -> Any:
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(header)
    data = stream.read(size)
    if len(data) < size:
        raise EOFError("truncated message")
    return pickle.loads(data)


def render_in_processes(
    seed: int,
    chunks: list[list[str]],
    workers: int,
    done: Callable[[list[str], list[bytes]], None],
) -> None:
    """Render every chunk of keys in `workers` processes; `done(chunk, photos)` is called once
    per chunk, from one thread at a time, in completion order."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH", "")) if p)
    pending: queue.SimpleQueue[list[str]] = queue.SimpleQueue()
    for chunk in chunks:
        pending.put(chunk)
    lock = threading.Lock()
    errors: list[BaseException] = []
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "models.evalset.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        for _ in range(workers)
    ]

    def feed(process: subprocess.Popen[bytes]) -> None:
        assert process.stdin is not None and process.stdout is not None
        try:
            while not errors:
                try:
                    chunk = pending.get_nowait()
                except queue.Empty:
                    return
                _send(process.stdin, (seed, chunk))
                photos = _receive(process.stdout)
                if photos is None:
                    raise RuntimeError(f"render worker exited with {process.wait()}")
                with lock:
                    done(chunk, photos)
        except BaseException as e:  # re-raised on the caller's thread below
            errors.append(e)

    threads = [threading.Thread(target=feed, args=(p,), daemon=True) for p in processes]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        for process in processes:
            if process.stdin is not None:
                process.stdin.close()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if process.stdout is not None:
                process.stdout.close()
    if errors:
        raise errors[0]


def main() -> None:
    """The worker loop: (seed, keys) requests in on stdin, lists of JPEG bytes out on stdout."""
    from models.evalset.render import render_photo

    requests, replies = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # a stray print must not corrupt the replies
    while (request := _receive(requests)) is not None:
        seed, keys = request
        _send(replies, [render_photo(seed, key) for key in keys])


if __name__ == "__main__":
    main()
