"""One pipeline holder on a GPU at a time: an efficiency cell's peak memory must not count the session's."""

from __future__ import annotations

import types

import pytest

from quantfake.efficiency import runner
from quantfake.measure import residency


def test_efficiency_cells_ask_other_holders_to_let_go_before_loading_on_a_gpu(monkeypatch: pytest.MonkeyPatch):
    released: list[str] = []
    monkeypatch.setattr(residency, "_RELEASERS", dict(residency._RELEASERS))
    residency.register_holder("session", lambda: released.append("session"))
    monkeypatch.setattr(runner, "_PIPELINE", {})
    monkeypatch.setattr(runner, "load_for_cell", lambda g, p, o, d: object())
    options = types.SimpleNamespace(profile="random", model_root=None, store=None, gguf_dir=None)

    first = runner.shared_pipeline("sd3", "bf16", options, "cuda:0")
    assert released == ["session"]
    assert runner.shared_pipeline("sd3", "bf16", options, "cuda:0") is first  # held: nothing loads or is asked
    assert released == ["session"]
    runner.shared_pipeline("sd3", "nf4", options, "cpu")  # CPU: the tiny session keeps its pipelines
    assert released == ["session"]


def test_release_others_skips_the_caller_and_a_new_registration_replaces_the_old():
    calls: list[str] = []
    saved = dict(residency._RELEASERS)
    try:
        residency._RELEASERS.clear()
        residency.register_holder("a", lambda: calls.append("a-old"))
        residency.register_holder("a", lambda: calls.append("a"))
        residency.register_holder("b", lambda: calls.append("b"))
        assert residency.release_others("b") == ["a"]
        assert calls == ["a"]
    finally:
        residency._RELEASERS.clear()
        residency._RELEASERS.update(saved)
