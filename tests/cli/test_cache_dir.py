"""``batchjac.core.config.cache_dir``: ``$BATCHJAC_CACHE_DIR``, else the user cache directory
of each platform, checked against the paths the XDG specification and the platforms'
conventions give (macOS and Windows are simulated by platformdirs' own classes)."""

from __future__ import annotations

from pathlib import Path

import platformdirs
import platformdirs.macos
import platformdirs.unix
import platformdirs.windows
import pytest

from batchjac.backends import autotune
from batchjac.core import config


@pytest.fixture
def home(monkeypatch, tmp_path):
    """A fresh home folder and an environment without any cache setting."""
    for name in ("BATCHJAC_CACHE_DIR", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def on(monkeypatch):
    """Simulate another platform: platformdirs picks its class for the platform at import."""

    def simulate(platform_class):
        monkeypatch.setattr(platformdirs, "PlatformDirs", platform_class)

    return simulate


def test_the_environment_variable_wins(home, monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("BATCHJAC_CACHE_DIR", str(tmp_path / "mine"))
    assert config.cache_dir() == tmp_path / "mine"
    monkeypatch.setenv("BATCHJAC_CACHE_DIR", "~/mine")
    assert config.cache_dir() == home / "mine"


def test_a_blank_environment_variable_is_unset(home, monkeypatch):
    monkeypatch.setenv("BATCHJAC_CACHE_DIR", "  ")
    assert config.cache_dir() == home / ".cache" / "batchjac"


def test_linux_follows_xdg_cache_home_else_dot_cache(home, monkeypatch, on, tmp_path):
    on(platformdirs.unix.Unix)
    assert config.cache_dir() == home / ".cache" / "batchjac"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert config.cache_dir() == tmp_path / "xdg" / "batchjac"
    monkeypatch.setenv("XDG_CACHE_HOME", "")  # empty: unset, as the XDG specification says
    assert config.cache_dir() == home / ".cache" / "batchjac"


def test_macos_uses_library_caches_unless_xdg_cache_home_is_set(home, monkeypatch, on, tmp_path):
    on(platformdirs.macos.MacOS)
    assert config.cache_dir() == home / "Library" / "Caches" / "batchjac"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert config.cache_dir() == tmp_path / "xdg" / "batchjac"


def test_windows_uses_the_local_app_data_folder(home, monkeypatch, on):
    # Off Windows, platformdirs reads the folder from the environment: its documented override
    # (platformdirs >= 4.10) or, before, LOCALAPPDATA, where Windows' shell API is missing.
    local = r"C:\Users\me\AppData\Local"
    for name in ("WIN_PD_OVERRIDE_LOCAL_APPDATA", "LOCALAPPDATA"):
        monkeypatch.setenv(name, local)
    on(platformdirs.windows.Windows)
    assert config.cache_dir() == Path(local) / "batchjac" / "Cache"


def test_subfolders_and_no_directory_is_created(home):
    assert config.cache_dir("kernels") == home / ".cache" / "batchjac" / "kernels"
    assert config.cache_dir("kernels/sm_90") == home / ".cache" / "batchjac" / "kernels" / "sm_90"
    assert not home.exists()


@pytest.mark.parametrize(
    "subfolder, error, match",
    [
        ("", ValueError, r"subfolder: expected a relative path inside the cache directory, .* got ''"),
        ("/etc", ValueError, r"got '/etc'"),
        ("../elsewhere", ValueError, r"got '\.\./elsewhere'"),
        (Path("kernels"), TypeError, r"subfolder: expected a string or None, got PosixPath|WindowsPath"),
        (3, TypeError, r"subfolder: expected a string or None, got int"),
    ],
)
def test_a_bad_subfolder_is_refused_naming_it(home, subfolder, error, match):
    with pytest.raises(error, match=match):
        config.cache_dir(subfolder)


def test_autotune_keeps_its_tables_in_the_package_cache(home, monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert autotune.cache_dir() == tmp_path / "xdg" / "batchjac"
    monkeypatch.setenv("BATCHJAC_CACHE_DIR", str(tmp_path / "mine"))
    assert autotune.cache_dir() == tmp_path / "mine"
