"""Checks shared by the duplicate-reuse tests (SQLite and PostgreSQL)."""

from __future__ import annotations

import optuna

from autoprune.search.duplicates import DUPLICATE_ATTR


def assert_each_vector_evaluated_once(by_key: dict[str, list[optuna.trial.FrozenTrial]]) -> None:
    """Per channel vector: one trial evaluated it; every other one reused exactly its figures and artifacts."""
    for key, same in by_key.items():
        evaluated = [t for t in same if DUPLICATE_ATTR not in t.user_attrs]
        assert len(evaluated) == 1, f"{key} evaluated by trials {[t.number for t in evaluated]}"
        origin = evaluated[0]
        # Finetuned by the trial itself, or, for an enqueued baseline, once by its sweep point.
        assert "finetune" in origin.user_attrs.get("sweep_stage_seconds", origin.user_attrs["stage_seconds"])
        for t in same:
            if t is origin:
                continue
            ua = t.user_attrs
            assert ua[DUPLICATE_ATTR] == origin.number and t.values == origin.values
            assert set(ua["stage_seconds"]) == {"duplicate"}, "a duplicate must not prune or finetune"
            for name in ("channels", "metric", "speedup", "arch_artifact_id", "weights_artifact_id"):
                assert ua[name] == origin.user_attrs[name], name
            assert t.constraints == origin.constraints
