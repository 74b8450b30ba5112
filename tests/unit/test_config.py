"""Config precedence (flags > env > TOML > defaults) and refusal of bad values."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from daemon.config import EX_CONFIG, ConfigError, Listen, load


def test_defaults(tmp_path: Path) -> None:
    config = load({}, env={"XDG_STATE_HOME": str(tmp_path), "XDG_RUNTIME_DIR": str(tmp_path / "run"),
                           "HOME": str(tmp_path)})
    assert config.listen == Listen("127.0.0.1", 9371)
    assert config.grace == 10.0
    assert config.max_concurrent == 0
    assert config.shutdown == "stop"
    assert config.allow_unmanaged is False


def test_flags_beat_env_beat_file(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text('grace = 3\nmax_concurrent = 4\nlisten = "127.0.0.1:1000"\nstate_dir = "/tmp/x"\n')
    env = {"STABLEHAND_MAX_CONCURRENT": "5", "STABLEHAND_LISTEN": "127.0.0.1:2000"}
    config = load({"listen": "127.0.0.1:3000"}, env=env, config_file=toml)
    assert config.listen == Listen("127.0.0.1", 3000)
    assert config.max_concurrent == 5
    assert config.grace == 3.0
    assert config.state_dir == Path("/tmp/x")


def test_none_turns_tcp_off(tmp_path: Path) -> None:
    config = load({"listen": "none", "socket": str(tmp_path / "s.sock"), "state_dir": str(tmp_path)}, env={})
    assert config.listen is None


@pytest.mark.parametrize("flags,key", [
    ({"grace": "soon"}, "--grace"),
    ({"grace": "-1"}, "--grace"),
    ({"max_concurrent": "-2"}, "--max-concurrent"),
    ({"max_concurrent": "two"}, "--max-concurrent"),
    ({"listen": "localhost"}, "--listen"),
    ({"listen": "127.0.0.1:99999"}, "--listen"),
    ({"shutdown": "explode"}, "--shutdown"),
    ({"socket": "/tmp/" + "x" * 120}, "--socket"),
])
def test_bad_flag_names_the_key(flags: dict[str, str], key: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load({"state_dir": str(tmp_path), **flags}, env={})
    assert info.value.key == key
    assert key in str(info.value)


def test_bad_env_value_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="STABLEHAND_GRACE"):
        load({"state_dir": str(tmp_path)}, env={"STABLEHAND_GRACE": "x"})


def test_unknown_toml_key_is_refused(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text("gracee = 3\n")
    with pytest.raises(ConfigError, match="gracee"):
        load({}, env={}, config_file=toml)


def test_non_loopback_without_token_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="loopback"):
        load({"listen": "0.0.0.0:9371", "state_dir": str(tmp_path), "token_file": "none"}, env={})


def test_cli_exits_78_naming_the_option(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "daemon", "serve", "--state-dir", str(tmp_path),
                             "--max-concurrent", "lots"], capture_output=True, text=True, timeout=30)
    assert result.returncode == EX_CONFIG
    assert "--max-concurrent" in result.stderr
