"""``visionkit`` commands as fresh processes, without importing torch again for each (issue 22).

A new ``python -m visionkit_core`` spends 8-10 CPU seconds importing torch, Lightning and timm
before it does anything; a test file that runs twenty commands pays that twenty times. A
:class:`Cli` starts one interpreter that imports them once, then forks a child per command. Each
child is a process of its own, like ``python -m visionkit_core ARGS`` after its imports: its own
working directory, environment, exit code (negative when killed by a signal), stdout and stderr
(file descriptors 1 and 2, so everything written by Python, C code or a logging handler lands
there), no stdin, and whatever global state the command changes ends with it.

What a forked child cannot reproduce, a test still runs with ``subprocess``: variables read when
torch or Lightning are imported (thread counts: give those as ``server_env``, which starts a
server of their own), the imports themselves (tests of what a command does not
import), and programs a launcher starts again from ``sys.argv`` (the workers of DDP and torchrun; a
launcher itself, such as torchrun's agent, can be a forked ``module``).

CPU seconds (tests/_cpu_budget.py): each command's CPU seconds (``wait4``'s rusage of its
process, its own children included) and the server's own (its imports, the forks) are added to
the running test with the budget plugin's ``add_external``; the servers are pytest's children and
are stopped and waited for when the session finishes, before the budget adds up the total, so the
total counts them once, through the operating system's own accounting.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

#: The server: imports the CLI and what its commands import, then runs one command at a time,
#: a forked child each; the requests and replies travel on what were its stdin and stdout.
_SERVER = r"""
import atexit, json, os, resource, runpy, sys, tempfile, threading, traceback, weakref
requests, replies = os.fdopen(os.dup(0), "r"), os.dup(1)
null = os.open(os.devnull, os.O_RDWR)
for fd in (0, 1):
    os.dup2(null, fd)
if "OMP_WAIT_POLICY" not in os.environ:  # as visionkit_core.cli.main sets it before torch loads
    os.environ.setdefault("GOMP_SPINCOUNT", "10000")
import torch, lightning.pytorch, timm, torchvision  # noqa: E401,F401
import visionkit_core.cli, visionkit_core.cli.app  # noqa: E401,F401
try:  # what many commands import later (torch.onnx's exporter with onnx and onnxscript: ~1.7 s)
    import matplotlib.backends.backend_agg, torch.onnx._internal.exporter._core  # noqa: E401,F401
except ImportError:
    pass

def own_cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime

replying = threading.Lock()  # the server's own: a forked child never writes a reply

def reply(message):
    with replying:
        os.write(replies, (json.dumps(message) + "\n").encode())

def report_end(pid):  # in a thread of its own, so that other commands can start meanwhile
    _, status, usage = os.wait4(pid, 0)
    reply({"ended": pid, "status": status, "child_cpu": usage.ru_utime + usage.ru_stime, "cpu": own_cpu()})

reply({"ready": True, "cpu": own_cpu()})
waiters = []
for line in requests:
    req = json.loads(line)
    if req.get("stop"):
        break
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            requests.close(); os.close(replies)
            # what the server made stays the server's: its weakref finalizers (TemporaryDirectory
            # and the like, made while importing) are not the child's to run when the child exits
            # and the temporary folders it made are not the child's to delete (wandb's media folder
            # is made on import and deleted at exit by every process that logs an image)
            for info in list(weakref.finalize._registry.values()):
                info.atexit = False
                made = info.weakref()
                if isinstance(made, tempfile.TemporaryDirectory):
                    made._rmtree = lambda *args, **kwargs: None
            os.chdir(req["cwd"])
            if req["pythonpath"]:  # where PYTHONPATH puts them: after the script's directory
                sys.path[1:1] = req["pythonpath"]
                given = os.environ.get("PYTHONPATH")
                os.environ["PYTHONPATH"] = os.pathsep.join(req["pythonpath"] + ([given] if given else []))
            for name in req["unset"]:
                os.environ.pop(name, None)
            os.environ.update(req["env"])
            for name in req["block"]:  # as if not installed: importing it fails
                sys.modules[name] = None
            for fd, path in ((1, req["stdout"]), (2, req["stderr"])):
                out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                os.dup2(out, fd)
                os.close(out)
            try:
                if req["module"]:  # python -m MODULE ARGS
                    sys.argv = [req["module"], *req["args"]]
                    runpy.run_module(req["module"], run_name="__main__", alter_sys=True)
                else:
                    here = os.path.dirname(visionkit_core.cli.__file__)
                    sys.argv = [os.path.join(here, "..", "__main__.py"), *req["args"]]
                    from visionkit_core.cli import main
                    main(req["args"])
                code = 0
            except SystemExit as exc:  # what the interpreter does with it
                if exc.code is None or isinstance(exc.code, int):
                    code = exc.code or 0
                else:
                    print(exc.code, file=sys.stderr)
                    code = 1
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            try:  # what the interpreter runs when it ends (atexit), then flush as it does
                atexit._run_exitfuncs()
            except BaseException:
                traceback.print_exc()
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except BaseException:
                    pass
            os._exit(code)
    reply({"started": pid})
    waiters = [w for w in waiters if w.is_alive()]
    waiters.append(threading.Thread(target=report_end, args=(pid,)))
    waiters[-1].start()
for waiter in waiters:
    waiter.join()
"""


class _Server:
    def __init__(self, env: Mapping[str, str]) -> None:
        self.environ = {**os.environ, **env}  # what every command starts from
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _SERVER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=self.environ,
            text=True,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.requests = self.proc.stdin
        self.pending = b""  # what was read of the replies beyond the last whole line
        self.ended: dict[int, dict[str, Any]] = {}  # replies "ended" read while waiting for another
        self.reported_cpu = 0.0  # of the server's own CPU seconds, what was added to a test

    def stop(self) -> None:
        try:
            self.requests.write(json.dumps({"stop": True}) + "\n")
            self.requests.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def read(self, timeout: float | None = None) -> dict[str, Any] | None:
        """The next reply; None if none comes within ``timeout`` seconds (None: wait for it)."""
        fd = self.proc.stdout.fileno()  # type: ignore[union-attr]
        while b"\n" not in self.pending:  # read the pipe itself: a buffered reader would hide lines
            if timeout is not None and not select.select([fd], [], [], timeout)[0]:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                raise RuntimeError("the CLI server ended unexpectedly")
            self.pending += chunk
        line, self.pending = self.pending.split(b"\n", 1)
        return json.loads(line)

    def started(self) -> int:
        """The pid of the command just requested (its reply comes before the next request is read)."""
        while True:
            reply = self.read()
            assert reply is not None
            if "started" in reply:
                return int(reply["started"])
            self.ended[reply["ended"]] = reply

    def end_of(self, pid: int, timeout: float | None = None) -> dict[str, Any] | None:
        """The reply "ended" of command ``pid``; None if it has not ended within ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while pid not in self.ended:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            reply = self.read(left)
            if reply is None:
                return None
            self.ended[reply["ended"]] = reply
        return self.ended.pop(pid)

    def own_cpu(self, reply: dict[str, Any]) -> float:
        """The server's CPU seconds since the last reply (its imports, the fork)."""
        seconds = reply["cpu"] - self.reported_cpu
        self.reported_cpu = reply["cpu"]
        return seconds


_SERVERS: dict[tuple[tuple[str, str], ...], _Server] = {}


class Started:
    """A command that runs now in a child of the server (``pid``); :meth:`wait` for its result."""

    def __init__(self, cli: Cli, server: _Server, args: list[str], out: Path, err: Path) -> None:
        self.cli, self.server, self.args, self.out, self.err = cli, server, args, out, err
        self.pid = server.started()
        self.result: subprocess.CompletedProcess[str] | None = None

    def poll(self) -> int | None:
        """The exit code if the command has ended, else None (``Popen.poll``)."""
        if self.result is None:
            reply = self.server.end_of(self.pid, 0)
            if reply is None:
                return None
            self._finish(reply)
        assert self.result is not None
        return self.result.returncode

    def wait(self, timeout: float | None = 600) -> subprocess.CompletedProcess[str]:
        """Wait for the command to end; past ``timeout`` it is killed and TimeoutExpired raised."""
        if self.result is not None:
            return self.result
        reply = self.server.end_of(self.pid, timeout)
        timed_out = reply is None
        if reply is None:
            os.kill(self.pid, signal.SIGKILL)
            reply = self.server.end_of(self.pid)
            assert reply is not None
        result = self._finish(reply)
        if timed_out:
            raise subprocess.TimeoutExpired(self.args, timeout or 0, result.stdout, result.stderr)
        return result

    def _finish(self, reply: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        self.cli.add_cpu(reply["child_cpu"] + self.server.own_cpu(reply))
        status = reply["status"]
        code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        stdout = self.out.read_text(errors="replace")
        stderr = self.err.read_text(errors="replace")
        self.out.unlink()
        self.err.unlink()
        self.result = subprocess.CompletedProcess(self.args, code, stdout, stderr)
        return self.result


class Cli:
    """Runs ``visionkit ARGS`` in a forked child of a server; counts its CPU for the running test.

    ``server_env``: variables the interpreter must start with (read when torch is imported); each
    different set has a server of its own, shared by every test of the worker. ``pythonpath``:
    folders each command finds first on ``sys.path`` and in ``PYTHONPATH``, as if given in
    ``PYTHONPATH`` (a plugin found there as an installed distribution), on the shared server.
    """

    def __init__(
        self,
        config: pytest.Config,
        server_env: Mapping[str, str] | None = None,
        pythonpath: Sequence[str | os.PathLike[str]] = (),
    ) -> None:
        self.budget = config.pluginmanager.get_plugin("visionkit-cpu-budget")
        if not config.pluginmanager.has_plugin("visionkit-cli-servers"):
            config.pluginmanager.register(_StopAtSessionFinish(), "visionkit-cli-servers")
        self.server_env = dict(server_env or {})
        self.pythonpath = list(pythonpath)

    def add_cpu(self, seconds: float) -> None:
        if self.budget is not None:
            self.budget.add_external(seconds, waited=True)

    def _server(self) -> _Server:
        key = tuple(sorted(self.server_env.items()))
        if key not in _SERVERS:
            server = _Server(self.server_env)
            ready = server.read()
            assert ready is not None and ready.get("ready")
            self.add_cpu(server.own_cpu(ready))
            _SERVERS[key] = server
        return _SERVERS[key]

    def start(
        self,
        *args: str | os.PathLike[str],
        cwd: Path,
        env: Mapping[str, str] | None = None,
        unset: Sequence[str] = (),
        block: Sequence[str] = (),
        module: str | None = None,
    ) -> Started:
        """Start ``visionkit ARGS`` (cwd, extra environment variables) and return at once.

        ``env`` is added to the server's environment after the variables in ``unset`` are removed.
        ``block``: modules the command finds missing (``sys.modules[name] = None``), as in an
        environment without that package. ``module``: run ``python -m MODULE ARGS`` instead (a
        launcher such as ``torch.distributed.run``). Commands started one after the other run at
        the same time, each in a child of its own.
        """
        server = self._server()
        fd_out, out = tempfile.mkstemp(prefix="vk-out-")
        fd_err, err = tempfile.mkstemp(prefix="vk-err-")
        os.close(fd_out)
        os.close(fd_err)
        argv = [str(a) for a in args]
        request = {
            "args": argv,
            "cwd": str(cwd),
            "env": dict(env or {}),
            "unset": list(unset),
            "pythonpath": [str(p) for p in self.pythonpath],
            "block": list(block),
            "module": module,
            "stdout": out,
            "stderr": err,
        }
        server.requests.write(json.dumps(request) + "\n")
        server.requests.flush()
        return Started(self, server, argv, Path(out), Path(err))

    def __call__(
        self,
        *args: str | os.PathLike[str],
        cwd: Path,
        env: Mapping[str, str] | None = None,
        unset: Sequence[str] = (),
        block: Sequence[str] = (),
        timeout: float = 600,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``visionkit ARGS`` to its end: a CompletedProcess as ``subprocess.run`` gives."""
        return self.start(*args, cwd=cwd, env=env, unset=unset, block=block).wait(timeout)


#: The session's pytest config (set by tests/conftest.py), for :func:`visionkit` and :func:`start`.
CONFIG: pytest.Config | None = None


def _like_subprocess(
    env: Mapping[str, str] | None, without: Sequence[str]
) -> tuple[Cli, dict[str, str], list[str]]:
    """The shared server's Cli and what a command must add and remove to see ``{**os.environ, **env}``
    less the variables whose names start with one of ``without``."""
    assert CONFIG is not None, "tests/conftest.py sets cli_server.CONFIG in pytest_configure"
    wanted = {k: v for k, v in {**os.environ, **(env or {})}.items() if not k.startswith(tuple(without))}
    base = Cli(CONFIG)._server().environ
    add = {k: v for k, v in wanted.items() if base.get(k) != v}
    # PYTHONPATH works at startup: a forked child gets it on sys.path (and in its environment) instead
    pythonpath = [p for p in add.pop("PYTHONPATH", "").split(os.pathsep) if p]
    return Cli(CONFIG, pythonpath=pythonpath), add, [k for k in base if k not in wanted and k != "PYTHONPATH"]


def start(
    *args: str | os.PathLike[str],
    cwd: Path,
    env: Mapping[str, str] | None = None,
    without: Sequence[str] = (),
    block: Sequence[str] = (),
) -> Started:
    """``subprocess.Popen([python, "-m", "visionkit_core", *args], env={**os.environ, **env})``, forked.

    ``without``: prefixes of variables left out; ``block``: modules the command finds missing.
    """
    cli, add, unset = _like_subprocess(env, without)
    return cli.start(*args, cwd=cwd, env=add, unset=unset, block=block)


def visionkit(
    *args: str | os.PathLike[str],
    cwd: Path,
    env: Mapping[str, str] | None = None,
    without: Sequence[str] = (),
    block: Sequence[str] = (),
    timeout: float = 600,
) -> subprocess.CompletedProcess[str]:
    """``subprocess.run`` of ``python -m visionkit_core ARGS`` with the current environment (plus ``env``).

    A forked child of the shared server: the same process boundary, exit code and output, without
    importing torch again. ``os.environ`` as it is now is what the command sees, as with ``subprocess``.
    """
    return start(*args, cwd=cwd, env=env, without=without, block=block).wait(timeout)


def stop_servers() -> None:
    """End every server and wait for it (its CPU seconds reach pytest's own children's)."""
    for server in _SERVERS.values():
        server.stop()
    _SERVERS.clear()


class _StopAtSessionFinish:
    """Stops the servers before the budget plugin (``trylast``) adds up the session's total."""

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self) -> None:
        stop_servers()


atexit.register(stop_servers)


@pytest.fixture
def vk(request: pytest.FixtureRequest) -> Cli:
    """``vk("train", ..., cwd=...)``: a visionkit command in a forked process (see the module)."""
    return Cli(request.config)
