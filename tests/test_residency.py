"""One pipeline holder on a GPU at a time: an efficiency cell's peak memory must not count the session's."""

from __future__ import annotations

import types

import pytest

from quantfake.measure import residency
from quantfake.session.efficiency import runner


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


def test_the_session_fake_source_and_the_efficiency_runner_never_hold_pipelines_at_once(
        tmp_path, monkeypatch: pytest.MonkeyPatch):
    """On a GPU, loading in one holder releases the other: the session's detection pipeline goes before an
    efficiency cell loads, and the efficiency pipeline goes before the session loads again."""
    from quantfake.options import build_options
    from quantfake.session.fakes import FakeSource
    from quantfake.session.reals import RealImages
    from quantfake.store import Store

    monkeypatch.setattr(residency, "_RELEASERS", dict(residency._RELEASERS))
    monkeypatch.setattr(runner, "_PIPELINE", {})
    monkeypatch.setattr(runner, "load_for_cell", lambda g, p, o, d: ("efficiency", g, p))
    monkeypatch.setattr("quantfake.measure.oom.free_cached_memory", lambda: None)
    monkeypatch.setattr(FakeSource, "_load", lambda self, g, p: types.SimpleNamespace(has_compiled=False, key=(g, p)))
    o = build_options({"generators": "sd3", "store": str(tmp_path)})
    fakes = FakeSource(o, Store(o.store), "cuda:0", RealImages(o, notices=[]), notices=[])

    fakes.pipeline("sd3", "bf16")
    runner.shared_pipeline("sd3", "bf16", o, "cuda:0")
    assert not fakes._pipelines and runner._PIPELINE  # the session let go before the efficiency cell loaded
    fakes.pipeline("sd3", "nf4")
    assert not runner._PIPELINE and list(fakes._pipelines) == [("sd3", "nf4")]


def test_a_finished_session_is_not_kept_alive_by_the_registry():
    import gc

    class Holder:
        def release(self) -> None:
            raise AssertionError("a collected holder is never asked")

    saved = dict(residency._RELEASERS)
    try:
        residency._RELEASERS.clear()
        holder = Holder()
        residency.register_holder("session", holder.release)
        del holder
        gc.collect()
        assert residency.release_others("efficiency") == []
    finally:
        residency._RELEASERS.clear()
        residency._RELEASERS.update(saved)
