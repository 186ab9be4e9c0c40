"""Child processes for the durability tests, and waiting on what they print."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from typing import Any

from tests._support import ROOT


class Child:
    """A command of a test module (``tests.durable._support.child`` unless told) in its own process.

    Its stdout is read line by line on a thread, so waiting for a line has a
    timeout; its stderr is kept for failure messages; lines can be sent to its
    stdin. Use it as a context manager: a child still running at the end is killed.
    """

    def __init__(
        self, command: str, *, module: str = "tests.durable._support.child", **params: Any
    ) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, command, json.dumps(params)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._kept: list[str] = []  # lines passed over by ``expect(..., keep_others=True)``
        self._readers = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        for reader in self._readers:
            reader.join(10)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.stdout.append(line)
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)

    def expect(self, prefix: str, timeout: float = 30.0, *, keep_others: bool = False) -> str:
        """The rest of the first line that starts with ``prefix``; fail if none comes.

        Lines before it are dropped, unless ``keep_others``: then the next
        calls see them first (a worker may say what it holds before it says
        it is ready).
        """
        for index, kept in enumerate(self._kept):
            if kept.startswith(prefix):
                del self._kept[index]
                return kept[len(prefix) :].strip()
        if not keep_others:
            self._kept.clear()
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(
                    f"no {prefix!r} line from the child within {timeout} s; "
                    f"stdout: {''.join(self.stdout)!r}; stderr: {''.join(self.stderr)!r}"
                ) from None
            if line is None:
                self.proc.wait(10)
                raise AssertionError(
                    f"the child ended (exit {self.proc.returncode}) before a {prefix!r} line; "
                    f"stdout: {''.join(self.stdout)!r}; stderr: {''.join(self.stderr)!r}"
                )
            if line.startswith(prefix):
                return line[len(prefix) :].strip()
            if keep_others:
                self._kept.append(line)

    def send(self, line: str) -> None:
        """Write a line to the child's stdin."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def result(self, timeout: float = 30.0) -> Any:
        """The JSON payload of the child's ``RESULT`` line."""
        return json.loads(self.expect("RESULT", timeout))

    def kill(self) -> None:
        """SIGKILL the child and wait until it is gone."""
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        assert self.proc.returncode == -signal.SIGKILL

    def wait(self, timeout: float = 30.0) -> int:
        return self.proc.wait(timeout)

    def error_output(self) -> str:
        for reader in self._readers:
            reader.join(5)
        return "".join(self.stderr)
