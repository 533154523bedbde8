"""Where the jax backend keeps compiled functions between runs (softmax_suite.backends.jax_backend)."""

from pathlib import Path

import pytest

from softmax_suite.backends.jax_backend import CACHE_VARIABLE, compilation_cache_folder


def test_a_folder_the_user_gave_jax_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_VARIABLE, "/elsewhere")
    assert compilation_cache_folder("/users/own/cache") is None


def test_the_variable_names_the_folder_or_turns_it_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_VARIABLE, "/tmp/compiled")
    assert compilation_cache_folder(None) == Path("/tmp/compiled")
    monkeypatch.setenv(CACHE_VARIABLE, "off")
    assert compilation_cache_folder(None) is None


def test_default_is_beside_the_oracle_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(CACHE_VARIABLE, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert compilation_cache_folder(None) == tmp_path / "softmax-suite" / "jax"


def test_loading_jax_turns_the_cache_on(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    jax = pytest.importorskip("jax")
    from softmax_suite.backends.jax_backend import load

    monkeypatch.setenv(CACHE_VARIABLE, str(tmp_path))
    previous = jax.config.jax_compilation_cache_dir
    jax.config.update("jax_compilation_cache_dir", None)
    try:
        load()
        assert jax.config.jax_compilation_cache_dir == str(tmp_path)
        assert jax.config.jax_persistent_cache_min_compile_time_secs == 0
    finally:
        jax.config.update("jax_compilation_cache_dir", previous)
