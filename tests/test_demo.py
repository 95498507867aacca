"""``autoprune demo`` end to end, shrunk for tests, and its exported architecture rebuilt with ``autoprune apply``.

The demo's own settings take minutes; ``$AUTOPRUNE_DEMO_OVERRIDES`` (a test-only knob of
:mod:`autoprune.demo`) shrinks the model, epochs, sweeps, recovery and timing.  Everything else is the real
command: it trains its base, runs the baselines and a 3-trial search on SQLite, prints the Pareto front
and the chosen architecture, and exports it.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from conftest import run_cli

optuna.logging.set_verbosity(optuna.logging.WARNING)
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")]

# The tiny settings of the test suite; the wide budget makes sure some trial is within it, so the demo
# has an architecture to choose and export.
DEMO_OVERRIDES = {
    "max_drop": 0.9,
    "model_options": {"widths": [16, 32, 32]},
    "base": {"epochs": 3, "batch_size": 32},
    "pruning": {"round_to": 8, "importance_batches": 2},
    "search": {"sampler": "random", "sweep_ratios": [0.3, 0.5], "bounds_margin": 2, "hopeless_margin": None},
    "recovery": {"bn_batches": 2, "finetune_steps": 5, "warmup_steps": 1, "final": {"epochs": 1, "warmup_steps": 1}},
    "latency": {"repeats": 40, "blocks": 4, "warmup": 5, "lock": False, "cv_threshold": 1.0, "max_remeasure": 0},
}
FILES = ("study config", "study storage", "trials_csv", "front_csv", "pareto_png", "ratios_png", "summary_json", "report_html", "architecture",
         "final_onnx")


@pytest.fixture(scope="module", autouse=True)
def _default_storage() -> Iterator[None]:
    """These tests use the config's default storage: an exported AUTOPRUNE_STORAGE must not redirect them."""
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("AUTOPRUNE_STORAGE", raising=False)
        yield


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    folder = tmp_path_factory.mktemp("demo") / "autoprune-demo"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AUTOPRUNE_DEMO_OVERRIDES", json.dumps(DEMO_OVERRIDES))
        res = run_cli("demo", "--dir", folder, "--trials", "3", raw_newlines=True)
    assert res.returncode == 0, f"autoprune demo failed:\n{res.stdout}\n{res.stderr[-5000:]}"
    return folder, res


def listed_files(stdout: str) -> dict[str, str]:
    """The ``files:`` block of the demo's output: name -> path (or URL)."""
    block = stdout.split("\nfiles:\n", 1)[1]
    out = {}
    for line in block.splitlines():
        if not line.startswith("  "):
            break
        m = re.match(r"  (study config|study storage|\S+)\s+(\S+)", line)
        assert m, line
        out[m.group(1)] = m.group(2)
    return out


def test_demo_prints_front_choice_and_files(demo: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    folder, res = demo
    out = res.stdout
    assert "Traceback" not in res.stderr
    assert out.startswith(f"autoprune demo: digits 16x16, resnet, max accuracy drop 90%, 3 search trials; files in {folder}")

    # The Pareto front table: header, rule, rows; the chosen trial marked with '*'.
    table = out.split("Pareto front (accuracy vs real ONNX Runtime speedup), base accuracy ", 1)[1].splitlines()
    header, rule, *rows = table[1:]
    for column in ("trial", "drop ± 95%", "speedup ± spread", "latency ms", "MACs", "params", "feasible"):
        assert column in header, header
    assert set(rule.replace(" ", "")) == {"-"}
    rows = rows[: next(i for i, r in enumerate(rows) if not r.strip() or r.startswith("  * chosen"))]
    chosen_rows = [r for r in rows if r.startswith("*")]
    assert len(chosen_rows) == 1, table

    m = re.search(r"^chosen architecture: trial (\d+), accuracy ([0-9.]+) \(validation drop ([+-][0-9.]+)(?:, selection drop [+-][0-9.]+)?\), "
                  r"speedup ([0-9.]+)x \((confirmed by a re-timing|search timing, unconfirmed[^)]*)\), MACs ([0-9,]+)$", out, re.M)
    assert m, out
    number = int(m.group(1))
    assert re.search(r"^kept channels: stem\.0=\d+, ", out, re.M)

    files = listed_files(out)
    assert set(FILES) <= set(files), files
    for name in FILES:
        if name != "study storage":
            assert Path(files[name]).is_file(), f"{name}: {files[name]} does not exist"
    assert files["study storage"] == f"sqlite:///{folder / 'demo-digits-resnet.db'}"
    assert files["architecture"] == str(folder / "architecture.json")

    # The printed figures are the study's record of that trial.
    study = optuna.load_study(study_name="demo-digits-resnet", storage=files["study storage"])
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    finished = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED))
    # Screening may skip a search trial's finetune (PRUNED, with its reason); the two baselines never are.
    assert len(finished) == 3 and len(complete) >= 2
    assert all("screened" in t.user_attrs for t in finished if t.state == optuna.trial.TrialState.PRUNED)
    trial = next(t for t in complete if t.number == number)
    assert f"{trial.user_attrs['metric']:.4f}" == m.group(2)
    confirmed = ((study.user_attrs.get("confirmation") or {}).get("trials") or {}).get(str(number)) or {}
    if m.group(5) == "confirmed by a re-timing":
        assert f"{confirmed['speedup']:.2f}" == m.group(4)  # the figure export chose by, not the search timing
    else:
        # Unconfirmed (nothing confirmed, or its re-timing unsettled): the search figure, as the headline gives it.
        assert f"{trial.user_attrs['speedup']:.2f}" == m.group(4)
        assert not confirmed.get("speedup") or "is unsettled" in m.group(5)
    assert f"{trial.user_attrs['drop']:+.4f}" == m.group(3) and f"{trial.user_attrs['macs']:,}" == m.group(6)
    if trial.user_attrs.get("kind") in ("uniform", "global"):  # a baseline pick is said in words
        assert f"The search found nothing faster than the {trial.user_attrs['kind']} baseline" in out  # the headline
    # The table marks the exported trial; when confirmation chose another than the validation pick, that one
    # is marked beside it.
    assert chosen_rows[0].split()[1] == str(number), (chosen_rows[0], number)
    feasible = [t for t in complete if t.user_attrs["drop"] <= 0.9]
    # Twins (same kept channels) count once, as the lowest-numbered: no timing noise picks between them.
    distinct = {json.dumps(t.user_attrs.get("channels") or t.number, sort_keys=True): t for t in sorted(feasible, key=lambda t: -t.number)}
    val_pick = min(distinct.values(),
                   key=lambda t: (-t.user_attrs["speedup"], -t.user_attrs["metric"], t.user_attrs["macs"], t.number))
    confirmation = study.user_attrs.get("confirmation") or {}
    assert confirmation.get("pick") is not None and number == int(confirmation["pick"]), confirmation.get("pick")
    if number != val_pick.number:
        assert [r.split()[1] for r in rows if r.startswith("v ")] == [str(val_pick.number)], table
        # The headline starts a sentence with it ("The validation-time pick, ...").
        assert f"the validation-time pick, trial {val_pick.number} (" in out.lower()


def rendered_lines(stream: str) -> list[str]:
    """The lines a terminal shows for ``stream``: each carriage return starts writing over the line again."""
    lines = []
    for line in stream.split("\n"):
        shown: list[str] = []
        for part in line.split("\r"):
            shown[: len(part)] = list(part)
        lines.append("".join(shown).rstrip())
    return lines


def test_demo_output_is_clean(demo: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    _folder, res = demo
    out, err = rendered_lines(res.stdout), rendered_lines(res.stderr)
    bar = re.compile(r"^[a-z0-9 ]+: +\d+%\|[^|]*\| \d+/\d+ \[[^\]]*\]$")  # the finalize bar names its trial
    # A bar fragment never shares a line with anything else (a note, Optuna's log, a result).
    glued = [line for line in out + err if "%|" in line and not bar.match(line)]
    assert not glued, glued
    assert not any("%|" in line for line in out)
    # Finished bars are drawn once: the search and final recovery bars stay, the base model and baseline bars are cleared.
    shown = [re.sub(r"trial \d+", "trial N", line.split("%|")[0]) for line in err if "%|" in line]
    assert shown == ["search: 100", "finalize trial N: 100"], [line for line in err if "%|" in line]
    assert "[w0] joined study 'demo-digits-resnet'" in res.stderr and "optuna: A new study created" in res.stderr
    # No warning of any kind: Python's (ExperimentalWarning, UserWarning, ...) or autoprune's own.
    assert not [line for line in out + err if "warning" in line.lower()], res.stderr


def test_every_view_names_the_same_chosen_trial(demo: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    from PIL import Image

    folder, res = demo
    files = listed_files(res.stdout)
    m = re.search(r"^chosen architecture: trial (\d+), .*speedup ([0-9.]+)x \(confirmed by a re-timing\)", res.stdout, re.M)
    assert m, res.stdout
    number, speed = int(m.group(1)), m.group(2)
    summary = json.loads(Path(files["summary_json"]).read_text())
    arch = json.loads(Path(files["architecture"]).read_text())
    confirmed = summary["chosen"]["confirmed"]
    assert summary["selection"] == "confirmed" and summary["chosen"]["number"] == number
    assert f"{summary['chosen']['speedup']:.2f}" == speed == f"{confirmed['speedup']:.2f}"
    assert arch["provenance"]["trial"] == number and arch["provenance"]["selection"] == "confirmed"
    assert f"{arch['latency']['confirmed_speedup']:.2f}" == speed
    # Chosen on the selection split; the test split read once, after, for the exported model: every view says so.
    assert arch["metrics"]["selection_drop"] == confirmed["selection_drop"]
    assert f"selection drop {confirmed['selection_drop']:+.4f}" in m.group(0) and "test" not in m.group(0)
    final = summary["final_test"]
    assert final["trial"] == number and final["test_drop"] == arch["metrics"]["test_drop"]
    test_line = f"test split (read once, after the pick): accuracy {final['test_metric']:.4f}"
    assert test_line in res.stdout and f"test drop {final['test_drop']:+.4f}" in summary["noise"]["line"]
    # The headline printed is the summary's, and names the chosen trial with its confirmed speedup.
    assert summary["sentence"] in res.stdout and f"trial {number}" in summary["sentence"]
    assert f"{speed}x" in summary["sentence"] and "Confirmed figures" in summary["sentence"]
    # pareto.png marks the same trial with the same confirmed figure.
    assert Image.open(files["pareto_png"]).text["Description"] == f"chosen: trial {number} (confirmed {speed}x)"
    page = Path(files["report_html"]).read_text()
    assert html.escape(summary["sentence"]) in page
    assert re.search(rf'<tr class="chosen"><td class="l">\*</td><td>{number}[ <]', page), "report.html marks another trial"
    assert f"{speed}x" in re.search(r'<tr class="chosen">.*?</tr>', page).group(0)


def test_demo_architecture_rebuilds_the_trial_model(demo: tuple[Path, subprocess.CompletedProcess[str]], tmp_path: Path) -> None:
    from autoprune.selection.architecture import apply_architecture
    from autoprune.selection.architecture import read_architecture

    folder, _res = demo
    arch_path = folder / "architecture.json"
    arch = read_architecture(arch_path)
    number = arch["provenance"]["trial"]
    study = optuna.load_study(study_name="demo-digits-resnet", storage=f"sqlite:///{folder / 'demo-digits-resnet.db'}")
    recorded = next(t for t in study.get_trials(deepcopy=False) if t.number == number).user_attrs["metric"]

    pruned = tmp_path / "pruned.pt"
    res = run_cli("apply", arch_path, "-o", pruned)
    assert res.returncode == 0, res.stderr
    assert "(finetuned weights)" in res.stdout, res.stdout
    kept = {g["name"]: g["kept_channels"] for g in arch["groups"]}
    assert ", ".join(f"{k}={v}" for k, v in kept.items()) in res.stdout

    # The rebuilt model, with the weights 'autoprune apply' wrote, scores what the trial recorded.
    applied = apply_architecture(arch, weights=pruned, where=str(arch_path))
    assert applied.weights_loaded
    assert {k: v for k, v in applied.result.kept.items()} == kept
    with applied.task.forbid_split("test"):
        metric = applied.task.evaluate(applied.model, "val").value
    assert metric == pytest.approx(recorded, abs=1e-6)
    assert arch["metrics"]["val_metric"] == recorded


def test_quiet_shows_the_results_and_the_log_file_keeps_everything(
    demo: tuple[Path, subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    folder, _res = demo
    copy = tmp_path / "demo"
    shutil.copytree(folder, copy)  # confirm replaces the study's confirmation: leave the module's demo as it is
    log = tmp_path / "logs" / "export.log"
    res = run_cli("export", copy / "demo-digits-resnet.yaml", "-o", tmp_path / "arch.json", "--top", "1",
                  "--quiet", "--log-file", log)
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""  # no notes, no progress, no warning
    assert res.stdout.startswith("chosen architecture: trial ") and f"wrote {tmp_path / 'arch.json'}" in res.stdout
    logged = log.read_text()
    assert "timing 2 candidates interleaved with the base in one process" in logged  # the notes --quiet hid
    assert all(line in logged for line in res.stdout.splitlines())  # and the results
