"""The bearer token check, the /reload throttle and the local token file (the server's use of them: test_server.py)."""

from __future__ import annotations

import os
import stat
import threading

import pytest

from mlsys.serving.online.guard import (
    BearerAuth,
    ReloadThrottle,
    check_token,
    local_token_file,
    predict_auth_from_env,
    use_local_token,
)

TOKEN = "s3cret-token-of-32-characters-ok"


@pytest.mark.parametrize("header", [f"Bearer {TOKEN}", f"bearer  {TOKEN} ", f"BEARER {TOKEN}", f"Bearer {TOKEN}".encode()])
def test_the_right_token_passes(header):
    assert BearerAuth(TOKEN).check(header) is None


@pytest.mark.parametrize("header,says,error", [
    (None, "missing", None),
    ("", "missing", None),
    (f"Basic {TOKEN}", "scheme 'Basic' is not accepted", "invalid_request"),
    (TOKEN, "does not start with 'Bearer '", "invalid_request"),  # the token alone, without its scheme
    ("Bearer", "not this server's", "invalid_token"),
    (f"Bearer {TOKEN[:-1]}", "not this server's", "invalid_token"),
    (f"Bearer {TOKEN}x", "not this server's", "invalid_token"),
    ("Bearer t\u00f6ken-\u00fcber-latin-1-and-more", "not this server's", "invalid_token"),
    ("Bearer \u2603 snowman outside latin-1", "not this server's", "invalid_token"),
])
def test_a_missing_or_wrong_token_is_a_401_that_names_the_header_and_never_echoes_the_token(header, says, error):
    denied = BearerAuth(TOKEN).check(header)
    assert denied.status == 401 and denied.body["field"] == "Authorization"
    assert denied.body["error"].startswith("Authorization: ") and says in denied.body["error"]
    assert denied.headers["WWW-Authenticate"].startswith("Bearer realm=")
    assert (f'error="{error}"' in denied.headers["WWW-Authenticate"]) if error else "error=" not in denied.headers[
        "WWW-Authenticate"]
    assert TOKEN[:6] not in denied.body["error"]


def test_a_server_without_a_token_refuses_everything_and_says_what_to_set():
    for header in (None, "Bearer ", f"Bearer {TOKEN}", "Bearer anything"):
        denied = BearerAuth("").check(header)
        assert denied.status == 403 and "MLSYS_SERVE_TOKEN" in denied.body["error"]


@pytest.mark.parametrize("token,says", [
    ("short", "5 characters, under the minimum of 16"),
    ("CHANGE_ME_serve_token_value", "placeholder"),
    ("change-me-please-0123456789", "placeholder"),
    ("a token with spaces in it, long", "whitespace"),
    ("t\u00f6ken-outside-ascii-0123456789", "printable ASCII"),
])
def test_a_token_unfit_to_guard_the_server_is_refused_without_echoing_it(token, says):
    with pytest.raises(ValueError, match="MLSYS_SERVE_TOKEN") as info:
        BearerAuth(token)
    assert says in str(info.value) and token not in str(info.value) and "token_urlsafe" in str(info.value)
    assert check_token(TOKEN) == TOKEN


def test_the_token_comes_from_the_environment_or_a_file(monkeypatch, tmp_path):
    monkeypatch.delenv("MLSYS_SERVE_TOKEN_FILE", raising=False)
    monkeypatch.setenv("MLSYS_SERVE_TOKEN", TOKEN)
    assert BearerAuth.from_env().check(f"Bearer {TOKEN}") is None
    monkeypatch.delenv("MLSYS_SERVE_TOKEN")
    assert not BearerAuth.from_env().configured
    (tmp_path / "token").write_text(TOKEN + "\n")  # a secret file's trailing newline is not part of the token
    monkeypatch.setenv("MLSYS_SERVE_TOKEN_FILE", str(tmp_path / "token"))
    assert BearerAuth.from_env().check(f"Bearer {TOKEN}") is None
    monkeypatch.setenv("MLSYS_SERVE_TOKEN_FILE", str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="MLSYS_SERVE_TOKEN_FILE=.*missing.*cannot be read"):
        BearerAuth.from_env()


@pytest.mark.parametrize("value,expected", [
    (None, False), ("", False), ("false", False), ("0", False), ("no", False),
    ("true", True), ("TRUE", True), ("1", True), (" yes ", True), ("on", True),
])
def test_predict_auth_from_the_environment(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv("MLSYS_SERVE_PREDICT_AUTH", raising=False)
    else:
        monkeypatch.setenv("MLSYS_SERVE_PREDICT_AUTH", value)
    assert predict_auth_from_env() is expected


def test_a_predict_auth_that_is_not_a_boolean_names_the_variable_the_value_and_the_fix(monkeypatch):
    monkeypatch.setenv("MLSYS_SERVE_PREDICT_AUTH", "maybe")
    with pytest.raises(ValueError, match=r"MLSYS_SERVE_PREDICT_AUTH='maybe' is not a boolean; set it to true or false"):
        predict_auth_from_env()


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_throttle_admits_one_check_per_window_and_never_two_at_once():
    clock = Clock()
    throttle = ReloadThrottle(5.0, clock)
    assert throttle.admit() is None  # t=0: go
    clock.now += 0.3
    assert throttle.admit() == 5  # running: Retry-After rounds 4.7 s up
    throttle.done()
    clock.now += 1.7
    assert throttle.admit() == 3  # t=2
    clock.now += 2.99
    assert throttle.admit() == 1  # t=4.99: never "retry in 0"
    clock.now += 0.01
    assert throttle.admit() is None  # t=5: the next window
    clock.now += 60
    assert throttle.admit() == 1  # a check still running past its window holds the slot
    throttle.done()
    assert throttle.admit() is None


def test_a_zero_interval_still_runs_one_check_at_a_time():
    throttle = ReloadThrottle(0.0, Clock())
    assert throttle.admit() is None and throttle.admit() == 1
    throttle.done()
    assert throttle.admit() is None
    with pytest.raises(ValueError, match="reload_interval_s=-1 is negative"):
        ReloadThrottle(-1)


def test_the_throttle_admits_exactly_one_of_many_concurrent_callers():
    throttle, admitted, start = ReloadThrottle(5.0), [], threading.Barrier(16)

    def caller():
        start.wait()
        admitted.append(throttle.admit())

    threads = [threading.Thread(target=caller) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert admitted.count(None) == 1 and all(w == 5 for w in admitted if w is not None)


def test_the_local_token_file_is_private_random_and_kept(tmp_path):
    path = local_token_file(tmp_path / "home")
    assert path == tmp_path / "home" / "secrets" / "serve-token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    token = path.read_text().strip()
    assert check_token(token) == token and len(token) >= 32
    assert local_token_file(tmp_path / "home").read_text().strip() == token  # a restart keeps it
    assert local_token_file(tmp_path / "other").read_text().strip() != token
    assert [p.name for p in path.parent.iterdir()] == ["serve-token"]  # no temporary file left


def test_use_local_token_points_both_sides_at_the_file_unless_a_token_is_given(tmp_path, monkeypatch):
    env = use_local_token({}, tmp_path)
    assert env == {"MLSYS_SERVE_TOKEN_FILE": str(tmp_path / "secrets" / "serve-token")}
    monkeypatch.delenv("MLSYS_SERVE_TOKEN", raising=False)
    monkeypatch.setenv("MLSYS_SERVE_TOKEN_FILE", env["MLSYS_SERVE_TOKEN_FILE"])
    token = (tmp_path / "secrets" / "serve-token").read_text().strip()
    assert BearerAuth.from_env().check(f"Bearer {token}") is None
    assert use_local_token({"MLSYS_SERVE_TOKEN": TOKEN}, tmp_path / "x") == {"MLSYS_SERVE_TOKEN": TOKEN}
    assert use_local_token({"MLSYS_SERVE_TOKEN_FILE": "/run/secrets/t"}, tmp_path / "x") == {
        "MLSYS_SERVE_TOKEN_FILE": "/run/secrets/t"}
    assert not os.path.exists(tmp_path / "x")
