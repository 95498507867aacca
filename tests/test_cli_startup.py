"""Start-up: ``autoprune --help`` loads no heavy library, and a command says it is loading before torch does.

The guarantees are structural (which modules a fresh interpreter holds, in which order lines and imports
come), never a wall-clock window: a busy host makes every step slower but changes neither.
"""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from conftest import HANG_GUARD_S

from autoprune import cli
from autoprune.cli import COMMANDS
from autoprune.cli import main
from autoprune.cli import starting_line
from autoprune.tasks.digits import DigitsTask

HEAVY = ("torch", "torch_pruning", "sklearn", "onnxruntime", "optuna", "optuna_dashboard", "matplotlib", "pandas", "numpy")

# Prints a marker on stderr the moment anything asks for torch, then runs the CLI.
_SPY = """
import sys
class _Spy:
    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            sys.stderr.write("<torch import begins>\\n")
            sys.stderr.flush()
        return None
sys.meta_path.insert(0, _Spy())
from autoprune.cli import main
main()
"""


def _fresh(code: str) -> str:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=HANG_GUARD_S, check=True)
    return proc.stdout


def test_help_loads_no_heavy_library() -> None:
    code = (
        "import sys\n"
        "from autoprune.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        f"print('LOADED', sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = _fresh(code)
    assert "Commands:" in out and "  worker " in out, out
    assert out.splitlines()[-1] == "LOADED []", out


def test_help_lists_every_command_with_its_own_summary() -> None:
    """The registry's summaries are the commands' own short help, and it names every command there is."""
    modules = {entry.module for entry in COMMANDS.values()}
    defined = {command.name for module in modules for command in __import__(module, fromlist=["COMMANDS"]).COMMANDS}
    assert defined == set(COMMANDS) == set(main.list_commands(None))  # type: ignore[arg-type]
    for name, entry in COMMANDS.items():
        assert main.commands[name].get_short_help_str(limit=1000) == entry.summary, name
    help_text = CliRunner().invoke(main, ["--help"]).output
    assert all(f"  {name} " in help_text for name in COMMANDS)


def _on_a_terminal(args: list[str], cwd: Path) -> str:
    """Run the CLI (with the torch spy) with stderr on a pseudo-terminal; return what it wrote there."""
    primary, secondary = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-c", _SPY, *args], cwd=cwd, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=secondary)
    os.close(secondary)
    chunks = []
    while True:
        try:
            chunk = os.read(primary, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(primary)
    proc.wait(timeout=HANG_GUARD_S)
    return b"".join(chunks).decode().replace("\r\n", "\n")


def test_a_command_says_it_is_loading_before_torch_loads(tmp_path: Path) -> None:
    err = _on_a_terminal(["apply", "missing.json", "-o", "pruned.pt"], tmp_path)
    lines = err.splitlines()
    assert lines[0] == "autoprune apply: loading its libraries ...", err
    assert "<torch import begins>" in lines[1:], err  # torch did load, after the line
    assert lines[-1] == "error: missing.json: architecture file not found", err


def test_dashboard_says_it_is_starting_even_into_a_log(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", _SPY, "dashboard", "missing.yaml"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=HANG_GUARD_S)
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2, proc.stderr
    assert lines[0] == "autoprune dashboard: loading its libraries ..." and "<torch import begins>" in lines[1:], proc.stderr


def test_off_a_terminal_other_commands_keep_stderr_to_their_own_lines(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", "from autoprune.cli import main; main()", "apply", "missing.json", "-o", "x.pt"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert proc.returncode == 2 and proc.stderr == "error: missing.json: architecture file not found\n", proc.stderr


def test_the_loading_line_is_silent_under_quiet_and_once_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, COMMANDS["dashboard"].module, raising=False)
    monkeypatch.delenv("AUTOPRUNE_QUIET", raising=False)
    assert starting_line("dashboard", ["study.yaml"]) == "autoprune dashboard: loading its libraries ..."
    assert starting_line("dashboard", ["study.yaml", "--quiet"]) is None
    monkeypatch.setenv("AUTOPRUNE_QUIET", "1")
    assert starting_line("dashboard", ["study.yaml"]) is None
    monkeypatch.delenv("AUTOPRUNE_QUIET")
    monkeypatch.setitem(sys.modules, COMMANDS["dashboard"].module, cli)
    assert starting_line("dashboard", ["study.yaml"]) is None
    assert starting_line("no-such-command", []) is None


def test_digits_gives_its_input_shape_without_loading_its_images() -> None:
    task = DigitsTask("resnet", image_size=12)
    assert task._splits is None  # nothing read yet: apply and groups rebuild models from the shape alone
    shape_only = task.example_input(3)
    images, _label = task.dataset("train")[0]
    assert shape_only.shape == (3, *images.shape) and shape_only.dtype == images.dtype
    assert torch.equal(shape_only, torch.zeros_like(shape_only))


def test_apply_rebuilds_a_model_without_scikit_learn(tiny_study, tmp_path: Path) -> None:
    """``apply`` needs the architecture and the checkpoint, not the digits images (scikit-learn, seconds)."""
    arch = tmp_path / "arch.json"
    code = ("import atexit, sys\n"
            "atexit.register(lambda: print('sklearn loaded:', 'sklearn' in sys.modules))\n"
            "from autoprune.cli import main\nmain()\n")
    run = lambda *args: subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,  # noqa: E731
                                       timeout=HANG_GUARD_S)
    pruned = run("prune", tiny_study.config_path, "--uniform", "0.25", "-o", arch)
    assert pruned.returncode == 0, pruned.stderr
    applied = run("apply", arch, "-o", tmp_path / "pruned.pt", "--config", tiny_study.config_path)
    assert applied.returncode == 0 and f"wrote {tmp_path / 'pruned.pt'}" in applied.stdout, applied.stderr
    assert applied.stdout.splitlines()[-1] == "sklearn loaded: False", applied.stdout
