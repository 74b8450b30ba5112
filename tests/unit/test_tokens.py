"""The token file (daemon.tokens) and how config.load treats token_file: on real files."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from daemon import tokens
from daemon.config import ConfigError, load


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _private(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


def test_ensure_creates_a_0600_token_once_then_reads_it_back(tmp_path: Path) -> None:
    path = tmp_path / "token"
    old_umask = os.umask(0)  # even a permissive umask gives 0600
    try:
        token, created = tokens.ensure(path)
    finally:
        os.umask(old_umask)
    assert created and _mode(path) == 0o600
    assert len(token) >= 43 and path.read_text() == token + "\n"   # 32 bytes, URL-safe base64
    assert tokens.ensure(path) == (token, False)
    assert tokens.ensure(tmp_path / "other")[0] != token


def test_ensure_never_writes_through_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "precious"
    target.write_text("keep me\n")
    target.chmod(0o600)
    (tmp_path / "token").symlink_to(target)
    with pytest.raises(tokens.TokenFileError, match="symlink"):
        tokens.ensure(tmp_path / "token")
    assert target.read_text() == "keep me\n"


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620, 0o660])
def test_a_token_others_can_access_is_refused_naming_the_file(tmp_path: Path, mode: int) -> None:
    path = _private(tmp_path / "token", "abc\n")
    path.chmod(mode)
    with pytest.raises(tokens.TokenFileError, match=f"{path}.*{mode:04o}.*chmod 600"):
        tokens.read_private(path, follow_symlinks=True)


def test_a_token_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to give a file away")
    path = _private(tmp_path / "token", "abc\n")
    os.chown(path, 4242, -1)
    with pytest.raises(tokens.TokenFileError, match="owned by uid 4242"):
        tokens.read_private(path, follow_symlinks=True)


@pytest.mark.parametrize("text,message", [("", "empty"), ("  \n", "empty"), ("a b\n", "one token"),
                                          ("a\x01b", "one token"), ("x" * 5000, "larger")])
def test_what_is_not_one_token_is_refused(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(tokens.TokenFileError, match=message):
        tokens.read_private(_private(tmp_path / "token", text), follow_symlinks=False)


def test_an_explicit_token_file_may_be_a_symlink_to_a_private_file(tmp_path: Path) -> None:
    target = _private(tmp_path / "secret", "s3cret\n")
    (tmp_path / "link").symlink_to(target)
    config = load({"state_dir": str(tmp_path), "token_file": str(tmp_path / "link")}, env={})
    assert config.token == "s3cret" and not config.token_pending


def test_load_defaults_to_the_state_dir_token_without_touching_disk(tmp_path: Path) -> None:
    config = load({"state_dir": str(tmp_path / "state")}, env={})
    assert config.token_file == tmp_path / "state" / "token"
    assert config.token is None and config.token_pending
    assert not (tmp_path / "state").exists()   # load is pure: serve makes the file


def test_load_none_turns_tokens_off_on_loopback_only(tmp_path: Path) -> None:
    config = load({"state_dir": str(tmp_path)}, env={"STABLEHAND_TOKEN_FILE": "none"})
    assert config.token is None and config.token_file is None and not config.token_pending
    with pytest.raises(ConfigError, match="loopback") as info:
        load({"state_dir": str(tmp_path), "listen": "0.0.0.0:9371", "token_file": "none"}, env={})
    assert info.value.key == "token_file"
    # with a token (the default one) a non-loopback listener is fine
    assert load({"state_dir": str(tmp_path), "listen": "0.0.0.0:9371"}, env={}).token_pending


def test_load_refuses_a_world_readable_token_file_and_an_empty_setting(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("abc\n")
    path.chmod(0o644)
    with pytest.raises(ConfigError, match=str(path)):
        load({"state_dir": str(tmp_path), "token_file": str(path)}, env={})
    with pytest.raises(ConfigError, match="STABLEHAND_TOKEN_FILE"):
        load({"state_dir": str(tmp_path)}, env={"STABLEHAND_TOKEN_FILE": " "})


def test_socket_requires_token_needs_tokens_on(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="socket_requires_token"):
        load({"state_dir": str(tmp_path), "token_file": "none"},
             env={"STABLEHAND_SOCKET_REQUIRES_TOKEN": "true"})
    assert load({"state_dir": str(tmp_path)}, env={"STABLEHAND_SOCKET_REQUIRES_TOKEN": "true"})


# --- how a client finds the token ---

def test_find_order_explicit_file_then_env_then_default(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    _private(state / "token", "default-token\n")
    given = _private(tmp_path / "given", "given-token\n")
    env_file = _private(tmp_path / "env-file", "env-file-token\n")
    env = {"STABLEHAND_STATE_DIR": str(state)}
    url = "http://127.0.0.1:9371"
    assert tokens.find(url, env=env) == "default-token"
    assert tokens.find(url, env={**env, "STABLEHAND_TOKEN": "env-token"}) == "env-token"
    assert tokens.find(url, env={**env, "STABLEHAND_TOKEN": "env-token",
                                 "STABLEHAND_TOKEN_FILE": str(env_file)}) == "env-file-token"
    assert tokens.find(url, given, env={**env, "STABLEHAND_TOKEN_FILE": str(env_file)}) == "given-token"
    assert tokens.find(url, "none", env=env) is None
    assert tokens.find(url, env={**env, "STABLEHAND_TOKEN_FILE": "none"}) is None


def test_find_sends_the_default_token_to_loopback_urls_only(tmp_path: Path) -> None:
    _private(tmp_path / "token", "default-token\n")
    env = {"STABLEHAND_STATE_DIR": str(tmp_path)}
    for url in ("http://localhost:9371", "http://127.0.0.1:1", "http://[::1]:9371"):
        assert tokens.find(url, env=env) == "default-token"
    for other in ("http://example.com:9371", "http://10.0.0.1:9371", None):
        assert tokens.find(other, env=env) is None
    assert tokens.find("http://example.com", env={**env, "STABLEHAND_TOKEN": "t"}) == "t"


def test_find_skips_a_missing_default_but_not_a_missing_explicit_file(tmp_path: Path) -> None:
    env = {"STABLEHAND_STATE_DIR": str(tmp_path / "nowhere")}
    assert tokens.find("http://127.0.0.1:9371", env=env) is None
    with pytest.raises(FileNotFoundError):
        tokens.find("http://127.0.0.1:9371", tmp_path / "absent", env=env)
