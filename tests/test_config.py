"""Study config loading: the shipped studies load, and every bad input is one ConfigError naming file and key."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest
import yaml
from conftest import TINY_STUDY
from conftest import write_study

from autoprune.config import CRITERIA
from autoprune.config import SAMPLERS
from autoprune.config import LatencyConfig
from autoprune.config import load_config
from autoprune.config import parse_config
from autoprune.config import validated_copy
from autoprune.errors import ConfigError
from autoprune.latency import LatencySettings
from autoprune.pruning import CRITERIA as PRUNING_CRITERIA
from autoprune.tasks import BUILTIN_TASKS
from autoprune.trial.calibration import with_recipe
from autoprune.trial.candidate import latency_settings

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("path", sorted((REPO / "studies").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_study_in_the_repository_loads(path: Path) -> None:
    """Each shipped config (the suite's references and their variants included) is valid and named after its file."""
    cfg = load_config(path)
    assert cfg.name == path.stem, f"{path.name}: name {cfg.name!r} differs from the file name"


@pytest.mark.parametrize("name", ["digits-resnet", "digits-mobilenet"])
def test_shipped_studies_load(name: str) -> None:
    path = REPO / "studies" / f"{name}.yaml"
    cfg = load_config(path)
    raw = yaml.safe_load(path.read_text())
    assert cfg.name == name and cfg.task == "digits" and cfg.model == name.split("-")[1]
    # Every value written in the file is the value loaded (nothing silently dropped or renamed).
    _assert_applied(raw, cfg.model_dump())
    # Relative paths and defaults resolve next to the config file, not the working directory.
    assert cfg.artifact_path() == (REPO / "studies" / "artifacts" / name).resolve()
    assert cfg.checkpoint_path() == cfg.artifact_path() / "base.pt"


def _assert_applied(raw: dict, dumped: dict, where: str = "") -> None:
    for key, value in raw.items():
        if isinstance(value, dict) and key not in ("task_options", "model_options"):
            _assert_applied(value, dumped[key], f"{where}{key}.")
        elif key == "sweep_ratios":
            assert dumped[key] == sorted(value), where + key
        else:
            assert dumped[key] == value, where + key


def test_tiny_study_round_trips_every_value(tmp_path: Path) -> None:
    cfg = load_config(write_study(tmp_path))
    _assert_applied(TINY_STUDY, cfg.model_dump())
    assert cfg.source == (tmp_path / "study.yaml").resolve()


def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "base.pt").write_bytes(b"")
    path = write_study(tmp_path, {"base": {"checkpoint": "ckpt/base.pt"}, "artifact_dir": "out"})
    monkeypatch.chdir("/")
    cfg = load_config(path)
    assert cfg.checkpoint_path() == tmp_path.resolve() / "ckpt" / "base.pt"
    assert cfg.artifact_path() == tmp_path.resolve() / "out"


def test_storage_url_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AUTOPRUNE_STORAGE", raising=False)
    cfg = load_config(write_study(tmp_path))
    assert cfg.storage_url() == f"sqlite:///{tmp_path.resolve() / 'tiny-digits.db'}"
    cfg = load_config(write_study(tmp_path, {"storage": "sqlite:///from-file.db"}))
    assert cfg.storage_url() == "sqlite:///from-file.db"
    monkeypatch.setenv("AUTOPRUNE_STORAGE", "sqlite:///from-env.db")
    assert cfg.storage_url() == "sqlite:///from-env.db"
    assert cfg.storage_url("sqlite:///from-cli.db") == "sqlite:///from-cli.db"


def test_sweep_ratios_are_sorted(tmp_path: Path) -> None:
    cfg = load_config(write_study(tmp_path, {"search": {"sweep_ratios": [0.5, 0.1, 0.3]}}))
    assert cfg.search.sweep_ratios == [0.1, 0.3, 0.5]


def test_criteria_of_config_and_engine_agree() -> None:
    # A name the config accepts must be one the engine can build, and the other way round.
    assert set(CRITERIA) == set(PRUNING_CRITERIA)
    assert SAMPLERS == ("tpe", "nsga2", "random", "gp")


# Bad inputs: (overrides of the tiny study, key named in the message, words of the message) ------------
BAD = {
    "unknown top-level key": ({"epochs": 3}, "epochs", "unknown key"),
    "unknown nested key": ({"search": {"trails": 3}}, "search.trails", "unknown key"),
    "wrong type int": ({"search": {"trials": "many"}}, "search.trials", "valid integer"),
    "wrong type section": ({"pruning": 8}, "pruning", "valid dictionary"),
    "wrong type list": ({"search": {"sweep_ratios": 0.3}}, "search.sweep_ratios", "valid list"),
    "sweep ratio 1.0": ({"search": {"sweep_ratios": [0.2, 1.0]}}, "search.sweep_ratios", "[0, 1)"),
    "negative sweep ratio": ({"search": {"sweep_ratios": [-0.1]}}, "search.sweep_ratios", "[0, 1)"),
    "empty sweep": ({"search": {"sweep_ratios": []}}, "search.sweep_ratios", "at least one"),
    "first layer ratio 1.0": ({"pruning": {"first_layer_max_ratio": 1.0}}, "pruning.first_layer_max_ratio", "[0, 1)"),
    "max_drop 1.0": ({"max_drop": 1.0}, "max_drop", "less than 1"),
    "min_fraction 1.5": ({"pruning": {"min_fraction": 1.5}}, "pruning.min_fraction", "less than 1"),
    "round_to 0": ({"pruning": {"round_to": 0}}, "pruning.round_to", "positive integer or 'auto'"),
    "round_to word": (
        {"pruning": {"round_to": "fast"}}, "pruning.round_to", "valid integer, unable to parse string as an integer; or Input should be 'auto'"
    ),
    "wrong type in a list": ({"search": {"sweep_ratios": [0.1, "half"]}}, "search.sweep_ratios.1", "valid number"),
    "iterative_steps 9": ({"pruning": {"iterative_steps": 9}}, "pruning.iterative_steps", "less than or equal to 5"),
    "unknown criterion": ({"criterion": "l3"}, "criterion", "unknown criterion 'l3'"),
    "unknown sampler": ({"search": {"sampler": "grid"}}, "search.sampler", "unknown sampler 'grid'"),
    "unknown task": ({"task": "imagenet"}, "task", "unknown task 'imagenet'"),
    "unknown model": ({"model": "vgg99"}, "model", "unknown model 'vgg99'"),
    "missing name": ({"name": None}, "name", "required key is missing"),
    "bad name": ({"name": "my study!"}, "name", "letters, digits"),
    "early_stop not a flag": ({"latency": {"early_stop": "sometimes"}}, "latency.early_stop", "valid boolean"),
    "early_stop_fraction 0": ({"latency": {"early_stop_fraction": 0}}, "latency.early_stop_fraction", "greater than 0"),
    "early_stop_fraction 1.5": ({"latency": {"early_stop_fraction": 1.5}}, "latency.early_stop_fraction", "less than or equal to 1"),
    "early_stop_min_blocks 1": ({"latency": {"early_stop_min_blocks": 1}}, "latency.early_stop_min_blocks", "greater than or equal to 2"),
    "early_stop_min_blocks above blocks": (
        {"latency": {"early_stop": True, "early_stop_min_blocks": 5}}, "latency", "early_stop_min_blocks (5) must not exceed blocks (2)"
    ),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_value_names_file_and_key(tmp_path: Path, case: str) -> None:
    overrides, key, words = BAD[case]
    path = write_study(tmp_path, overrides)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert str(path.resolve()) in msg
    assert f"key '{key}'" in msg
    assert words in msg


def test_unknown_task_message_lists_builtin_tasks(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write_study(tmp_path, {"task": "imagenet"}))
    for name in BUILTIN_TASKS:
        assert name in str(err.value)
    # A plugin spec is not checked at load time (it is imported when the task is built).
    assert load_config(write_study(tmp_path, {"task": "mypkg.tasks:make"})).task == "mypkg.tasks:make"


def test_several_errors_are_all_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write_study(tmp_path, {"criterion": "l3", "search": {"trials": 0}}))
    msg = str(err.value)
    assert "key 'criterion'" in msg and "key 'search.trials'" in msg


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_missing_base_checkpoint_names_the_key(tmp_path: Path) -> None:
    path = write_study(tmp_path, {"base": {"checkpoint": "missing/base.pt"}})
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert "key 'base.checkpoint'" in msg and str(tmp_path.resolve() / "missing" / "base.pt") in msg


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\ntask: digits\nsearch: {trials: [1, 2\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "not valid YAML" in str(err.value) and str(path) in str(err.value)
    tabbed = tmp_path / "tabbed.yaml"
    tabbed.write_text("name: x\n\tmodel: resnet\n")
    with pytest.raises(ConfigError, match=r"\(line 2\): not valid YAML"):
        load_config(tabbed)


def test_a_file_that_is_not_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text(yaml.safe_dump(["name", "task"]))
    with pytest.raises(ConfigError, match="must hold a mapping of keys.*got list"):
        load_config(path)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(ConfigError, match="key 'name': required key is missing"):
        load_config(empty)


def test_parse_config_without_a_file() -> None:
    cfg = parse_config({"name": "in-memory"})
    assert cfg.source is None and cfg.task == "digits" and cfg.model == "resnet"
    with pytest.raises(ConfigError, match=r"<config>: key 'criterion'"):
        parse_config({"name": "x", "criterion": "magic"})


def test_assignment_is_validated(tmp_path: Path) -> None:
    cfg = load_config(write_study(tmp_path))
    with pytest.raises(ValueError):
        cfg.search.sampler = "grid"


def test_the_study_config_wins_and_only_run_keys_may_differ() -> None:
    """What a joining process runs with (autoprune.search.study_config.reconcile): the study's settings, this
    host's run keys (config.RUN_KEYS) whatever the study stored, a refusal naming every result key that differs."""
    from conftest import deep_merge

    from autoprune.config import is_run_key
    from autoprune.config import public_config
    from autoprune.search.study_config import reconcile
    from autoprune.trial.calibration import with_recipe

    recipe = {"lr": 0.03, "finetune_epochs": 1.0, "finetune_steps": None}  # calibrated at creation
    created = parse_config(deep_merge(TINY_STUDY, {"storage": "postgresql://u:s3cret@db/x"}))
    created = with_recipe(created, recipe)
    attrs = {"config": public_config(created) | {"source": None}, "recovery_recipe": recipe}
    assert "s3cret" not in str(attrs)
    said: list[str] = []
    here = parse_config(deep_merge(TINY_STUDY, {"storage": "postgresql://u:s3cret@db/x", "loader": {"workers": 3}}))
    joined = reconcile(attrs, here, said.append)
    # the URL with its password, not the stored redacted one; this host's loader; the study's recipe
    assert joined.storage == "postgresql://u:s3cret@db/x" and joined.loader.workers == 3 and joined.recovery.lr == 0.03
    assert said == ["note: the local config differs from the config of study 'tiny-digits' only where or how it runs "
                    "(loader.workers); using this host's values for those"]
    drifted = parse_config(deep_merge(TINY_STUDY, {"criterion": "l1", "search": {"sweep_ratios": [0.3]}, "device": "cpu"}))
    with pytest.raises(ConfigError) as err:
        reconcile(attrs, drifted, said.append)
    assert "criterion (here 'l1', study 'l2'), search.sweep_ratios (here [0.3], study [0.25, 0.5])" in str(err.value)
    assert "device" not in str(err.value)
    said.clear()
    assert reconcile({}, drifted, said.append) is drifted and len(said) == 1 and "stored no config" in said[0]
    assert is_run_key("search.torch_threads") and not is_run_key("search.trials") and not is_run_key("latency.threads")


# One latency settings type: the config's section is the timer's settings, field for field ---------------


def test_the_latency_section_and_the_timer_settings_have_the_same_fields_and_defaults() -> None:
    section = LatencyConfig()
    timer = {f.name: getattr(LatencySettings(), f.name) for f in fields(LatencySettings)}
    assert set(LatencyConfig.model_fields) - set(timer) == {"input_shape"}  # the config's own: the export's shape
    assert set(timer) - set(LatencyConfig.model_fields) == {"lock_dir"}  # the timer's own: tests point it elsewhere
    assert {k: v for k, v in timer.items() if k != "lock_dir"} == {k: getattr(section, k) for k in timer if k != "lock_dir"}


def test_latency_settings_carry_every_configured_value(tmp_path: Path) -> None:
    latency = {"batch_size": 3, "threads": 2, "repeats": 30, "warmup": 4, "blocks": 3, "cv_threshold": 0.2,
               "max_remeasure": 1, "lock": False, "exclusive": True, "opset": 13, "include_copies": True,
               "max_seconds": 7.5, "early_stop": True, "early_stop_min_blocks": 3, "early_stop_fraction": 0.25}
    config = parse_config({"name": "t", "device": "cpu", "latency": latency}, tmp_path / "t.yaml")
    settings = latency_settings(config)
    assert {k: getattr(settings, k) for k in latency} == latency
    assert settings.provider == "cpu" and settings.lock_dir is None


def test_a_changed_setting_makes_a_new_validated_config(tmp_path: Path) -> None:
    config = parse_config({"name": "t", "recovery": {"lr": 0.01}}, tmp_path / "t.yaml")
    tuned = with_recipe(config, {"lr": 0.05, "finetune_epochs": 2.0, "finetune_steps": None})
    assert (tuned.recovery.lr, tuned.recovery.finetune_epochs) == (0.05, 2.0)
    assert config.recovery.lr == 0.01 and tuned.source == config.source  # the original is left as it was
    assert with_recipe(config, None) is config
    with pytest.raises(ValueError, match="lr"):
        with_recipe(config, {"lr": -1.0})  # a recipe is checked like the file's values
    with pytest.raises(ValueError, match="blocks"):
        validated_copy(config.latency, blocks=10_000)
