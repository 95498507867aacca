"""The timing lock names what holds it (pid, command line, since when) or says why it cannot.

One holder is a real second process; the others are owner records this process writes itself while it
holds the lock through a second descriptor (an flock on another open file conflicts even within one
process), so each way of not knowing the holder is shown exactly.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pathlib
import re
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import pytest
from conftest import HANG_GUARD_S

from autoprune.errors import LatencyError
from autoprune.latency import LatencySettings
from autoprune.latency import timing_lock
from autoprune.latency._lock import LOCK_FILE

SECRET_URL = "postgresql://bob:hunter2@db:5432/optuna"

_HOLDER = textwrap.dedent(
    """
    import pathlib, sys, time
    from autoprune.latency import LatencySettings, timing_lock
    lock_dir, inside, release = sys.argv[2:5]
    with timing_lock(LatencySettings(lock_dir=lock_dir)):
        pathlib.Path(inside).touch()
        while not pathlib.Path(release).exists():
            time.sleep(0.01)
    """
)


def _refusal(lock_dir: pathlib.Path) -> str:
    """The message of a timing lock that cannot be had (a short lock timeout, the product's own bound)."""
    with pytest.raises(LatencyError) as err:
        with timing_lock(LatencySettings(lock_dir=str(lock_dir)), lock_timeout_s=0.2):
            pass
    return str(err.value)


def _wait_for(path: pathlib.Path, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + HANG_GUARD_S
    while not path.exists():
        assert proc.poll() is None, "the holder exited before it took the lock"
        assert time.monotonic() < deadline, "the holder hung before taking the lock"
        time.sleep(0.01)


def test_a_holder_is_named_by_pid_command_line_and_time(tmp_path: pathlib.Path) -> None:
    locks, inside, release = tmp_path / "locks", tmp_path / "inside", tmp_path / "release"
    # The storage argument first: the record keeps a bounded command line, and the temp paths after it are long
    # under pytest-xdist (their tail may be cut off; the URL must not be).
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, f"--storage={SECRET_URL}", str(locks), str(inside), str(release)])
    try:
        _wait_for(inside, proc)
        message = _refusal(locks)
    finally:
        release.touch()
        proc.wait(timeout=HANG_GUARD_S)
    assert f" s, by pid {proc.pid} (-c " in message, message
    assert " --storage=postgresql://bob:***@db:5432/optuna " in message and "), holding it since " in message, message
    assert "\n" not in message  # the holder's multi-line -c program is shown on one line
    assert "hunter2" not in message and "hunter2" not in (locks / LOCK_FILE).read_text()
    assert proc.returncode == 0


@contextlib.contextmanager
def _held_with(lock_dir: pathlib.Path, record: str) -> Iterator[None]:
    """Hold the lock through a descriptor of this process, with ``record`` as the lock file's content."""
    lock_dir.mkdir(exist_ok=True)
    (lock_dir / "training").mkdir(exist_ok=True)
    path = lock_dir / LOCK_FILE
    path.write_text(record)
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield
    finally:
        os.close(fd)


def _held_for(message: str) -> int:
    """The seconds since the holder took the lock, as the message gives them."""
    found = re.search(r"holding it since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \((\d+) s\)", message)
    assert found, message
    return int(found[1])


def _record(**fields: object) -> str:
    base = {"pid": os.getpid(), "start": "", "pid_ns": "", "host": socket.gethostname(), "since": time.time() - 65,
            "command": "autoprune worker study.yaml"}
    return json.dumps(base | fields)


def test_a_lock_file_without_owner_record_says_so(tmp_path: pathlib.Path) -> None:
    with _held_with(tmp_path, ""):
        message = _refusal(tmp_path)
    assert f"by a process this one cannot name: {tmp_path / LOCK_FILE} holds no owner record" in message, message


@pytest.mark.skipif(not os.path.exists("/proc/self/ns/pid"), reason="no PID namespaces here")
def test_a_holder_in_another_pid_namespace_is_described_from_its_record(tmp_path: pathlib.Path) -> None:
    with _held_with(tmp_path, _record(pid=7, pid_ns="pid:[1]")):
        message = _refusal(tmp_path)
    assert "by pid 7 in another PID namespace (pid:[1], e.g. another container) (autoprune worker study.yaml), " in message
    assert _held_for(message) >= 65 and message.endswith(" s); it cannot be seen from here; stop that process or point "
                                                         "LatencySettings.lock_dir elsewhere"), message


def test_a_holder_on_another_host_is_described_from_its_record(tmp_path: pathlib.Path) -> None:
    with _held_with(tmp_path, _record(pid=7, host="worker-7")):
        message = _refusal(tmp_path)
    assert "by pid 7 on host or container 'worker-7' (autoprune worker study.yaml)" in message, message


def test_a_record_of_an_exited_process_says_a_child_holds_the_lock(tmp_path: pathlib.Path) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          timeout=HANG_GUARD_S, check=True)
    pid = int(gone.stdout)
    with _held_with(tmp_path, _record(pid=pid, start="1")):  # start "1": no process that runs now began then
        message = _refusal(tmp_path)
    assert f"the owner record names pid {pid} (autoprune worker study.yaml), holding it since " in message, message
    assert "which has exited; a process it started holds the lock now" in message, message


def test_a_live_holder_of_the_same_host_is_named(tmp_path: pathlib.Path) -> None:
    with _held_with(tmp_path, _record()):
        message = _refusal(tmp_path)
    assert f"by pid {os.getpid()} (autoprune worker study.yaml), holding it since " in message, message
    assert _held_for(message) >= 65, message  # the record says since 65 s ago; reading it took some more
    assert message.endswith(" s); stop that process or point LatencySettings.lock_dir elsewhere"), message


def test_an_older_bare_pid_record_still_names_the_pid(tmp_path: pathlib.Path) -> None:
    with _held_with(tmp_path, f"{os.getpid()}\n"):
        message = _refusal(tmp_path)
    assert f" s, by pid {os.getpid()}; stop that process" in message, message
