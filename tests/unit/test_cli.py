"""Flags, FYNTR_* variables, defaults and error messages (docs/differences.md,
docs/original.md §1.1-1.2)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest

from fyntr.cli import parse_args
from fyntr.config import INT_BOUNDS, Settings, parse_rate, parse_seconds, validate_bind_address
from fyntr.errors import ConfigError
from fyntr.policy.threat import ThreatAction


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("FYNTR_"):
            monkeypatch.delenv(key)


def settings(*argv: str) -> Settings:
    result = parse_args(list(argv))
    assert isinstance(result, Settings), result
    return result


def test_defaults_match_upstream() -> None:
    s = settings()
    assert (s.bind, s.port, s.max_connections, s.idle_timeout_s) == ("127.0.0.1", 9999, 1000, 300)
    assert s.socks5_port is None and s.socks5_bind is None
    assert s.allow_ports == () and s.default_allow_port
    assert s.threat_action is ThreatAction.WARN
    # docs/zero-configuration.md: zero configuration
    assert (s.upload_rate, s.download_rate, s.connect_rate) == ("auto", "auto", "auto")
    assert s.max_connections_wait_s == 0 and s.shutdown_grace_s == 30
    assert s.metrics_port is None and s.metrics_bind == "127.0.0.1"
    assert s.log_level == "info"


def test_flag_beats_variable_beats_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FYNTR_PORT", "8080")
    monkeypatch.setenv("FYNTR_MAX_CONNECTIONS", "512")
    assert settings().port == 8080
    assert settings("--port", "7070").port == 7070
    assert settings().max_connections == 512


def test_lists_take_repeats_and_commas(monkeypatch: pytest.MonkeyPatch) -> None:
    s = settings(
        "--allow-port",
        "1,2",
        "--allow-port",
        "3",
        "--deny-cidr",
        "10.0.0.0/8",
        "--allow-domain",
        "a.com,b.com",
    )
    assert s.allow_ports == (1, 2, 3)
    assert s.deny_cidrs == ("10.0.0.0/8",)
    assert s.allow_domains == ("a.com", "b.com")
    monkeypatch.setenv("FYNTR_ALLOW_PORT", "8443,9443")
    monkeypatch.setenv("FYNTR_ALLOW_CIDR", "127.0.0.0/8,::1/128")
    s = settings()
    assert s.allow_ports == (8443, 9443)
    assert s.allow_cidrs == ("127.0.0.0/8", "::1/128")
    # The flag replaces the variable; they are not merged.
    assert settings("--allow-port", "7").allow_ports == (7,)


def test_boolean_flag_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not settings("--no-default-allow-port").default_allow_port
    monkeypatch.setenv("FYNTR_NO_DEFAULT_ALLOW_PORT", "true")
    assert not settings().default_allow_port
    monkeypatch.setenv("FYNTR_NO_DEFAULT_ALLOW_PORT", "false")
    assert settings().default_allow_port


def test_added_flags() -> None:
    s = settings(
        "--upload-rate",
        "8mbit",
        "--download-rate",
        "1.5MiB/s",
        "--connect-rate",
        "50",
        "--connect-burst",
        "5",
        "--max-connections-wait",
        "2.5",
        "--shutdown-grace",
        "0.5",
        "--log-level",
        "DEBUG",
        "--metrics-port",
        "0",
    )
    assert s.upload_rate == 1_000_000
    assert s.download_rate == round(1.5 * 1024 * 1024)
    assert (s.connect_rate, s.connect_burst) == (50.0, 5)
    assert (s.max_connections_wait_s, s.shutdown_grace_s) == (2.5, 0.5)
    assert s.log_level == "debug" and s.metrics_port == 0


@pytest.mark.parametrize(
    ("argv", "flag", "value"),
    [
        (["--port", "abc"], "--port", "abc"),
        (["--port", "65536"], "--port", "65536"),
        (["--max-connections", "-1"], "--max-connections", "-1"),
        (["--allow-port", "0"], "--allow-port", "0"),
        (["--allow-port", "443,x"], "--allow-port", "x"),
        (["--threat-action", "Block"], "--threat-action", "Block"),
        (["--upload-rate", "fast"], "--upload-rate", "fast"),
        (["--download-rate", "10 parsecs"], "--download-rate", "10 parsecs"),
        (["--download-rate", "autos"], "--download-rate", "autos"),
        (["--upload-rate", "automatic"], "--upload-rate", "automatic"),
        (["--connect-rate", "-2"], "--connect-rate", "-2"),
        (["--connect-rate", "autoo"], "--connect-rate", "autoo"),
        (["--shutdown-grace", "-1"], "--shutdown-grace", "-1"),
        (["--max-connections-wait", "soon"], "--max-connections-wait", "soon"),
        (["--log-level", "loud"], "--log-level", "loud"),
        (["--idle-timeout", "1.5"], "--idle-timeout", "1.5"),
        (["--bogus"], "--bogus", "--bogus"),
    ],
)
def test_bad_values_are_one_line_naming_flag_and_value(
    argv: list[str], flag: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert parse_args(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert flag in err and value in err
    assert err.startswith("fyntr: error: ")


@pytest.mark.parametrize(
    ("argv", "upload", "download", "connect"),
    [
        ([], "auto", "auto", "auto"),
        (
            ["--upload-rate", "AUTO", "--download-rate", "Auto", "--connect-rate", " Auto "],
            "auto",
            "auto",
            "auto",
        ),
        (  # off: unlimited
            ["--upload-rate", "0", "--download-rate", "0", "--connect-rate", "0"],
            0,
            0,
            0.0,
        ),
        (
            ["--upload-rate", "18mbit", "--download-rate", "8kib/s", "--connect-rate", "20"],
            2_250_000,
            8192,
            20.0,
        ),
        (["--upload-rate", "1.5MiB/s", "--connect-rate", "2.5"], round(1.5 * 2**20), "auto", 2.5),
    ],
)
def test_rates_take_auto_numbers_units_and_zero(
    argv: list[str], upload: object, download: object, connect: object
) -> None:
    s = settings(*argv)
    assert (s.upload_rate, s.download_rate, s.connect_rate) == (upload, download, connect)


def test_a_bad_rate_says_auto_is_allowed(capsys: pytest.CaptureFixture[str]) -> None:
    assert parse_args(["--upload-rate", "fast"]) == 2
    assert "or auto" in capsys.readouterr().err


def test_bad_variable_names_the_flag(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FYNTR_UPLOAD_RATE", "lots")
    assert parse_args([]) == 2
    err = capsys.readouterr().err
    assert "--upload-rate" in err and "FYNTR_UPLOAD_RATE" in err and "lots" in err


def test_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert parse_args(["--version"]) == 0
    assert capsys.readouterr().out.strip() == "fyntr 0.5.0"
    assert parse_args(["--help"]) == 0
    out = capsys.readouterr().out
    for flag in (
        "--bind",
        "--socks5-port",
        "--allow-cidr",
        "--threat-action",
        "--upload-rate",
        "--connect-burst",
        "--max-connections-wait",
        "--metrics-port",
        "--shutdown-grace",
        "FYNTR_PORT",
    ):
        assert flag in out


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("0", 0),
        ("1000", 1000),
        ("8mbit", 1_000_000),
        ("8Mbit/s", 1_000_000),
        ("1kbit", 125),
        ("2.5MB", 2_500_000),
        ("1kb", 1000),
        ("1KiB", 1024),
        ("1mib", 1048576),
        ("1gib", 1 << 30),
        ("1gbit", 125_000_000),
        ("0.5mb/s", 500_000),
        ("12b", 12),
    ],
)
def test_rates(text: str, rate: int) -> None:
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["", "fast", "-1", "1e3", "mbit", "1 mbits", "0.001b", "1/s/s"])
def test_bad_rates(text: str) -> None:
    with pytest.raises(ValueError):
        parse_rate(text)


def test_seconds() -> None:
    assert parse_seconds("2.5") == 2.5
    for bad in ("-1", "nan", "inf", "x"):
        with pytest.raises(ValueError):
            parse_seconds(bad)


@pytest.mark.parametrize("ok", ["127.0.0.1", "::1", "localhost", " 0.0.0.0 ", "my-host.lan"])
def test_bind_addresses(ok: str) -> None:
    assert validate_bind_address(ok) == ok.strip()


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("127.0.0.1:9999", "port"),
        ("[::1]:9999", "port"),
        ("localhost:9999", "port"),
        ("example.invalid:65536", "port"),
        ("a" * 254, "253"),
        ("local_host", "letters"),
        ("[::1]", "letters"),
    ],
)
def test_bad_bind_addresses(bad: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        validate_bind_address(bad)


def test_parsing_does_not_import_shutil() -> None:
    """argparse would import shutil (with bz2, lzma, zlib: 0.6 MB of RSS) to size help."""
    import subprocess
    import sys

    code = (
        "import sys; from fyntr.cli import parse_args; parse_args(['--port', '0']); "
        "print(sorted({'shutil', 'lzma', 'bz2'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_help_follows_columns(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from fyntr import cli

    cli._columns.cache_clear()
    monkeypatch.setenv("COLUMNS", "70")
    try:
        assert cli.main(["--help"]) == 0
    finally:
        cli._columns.cache_clear()
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) > 20
    assert max(len(line) for line in lines) <= 70


FLAG_OF_FIELD = {
    "port": "--port",
    "socks5_port": "--socks5-port",
    "metrics_port": "--metrics-port",
    "allow_ports": "--allow-port",
    "max_connections": "--max-connections",
    "idle_timeout_s": "--idle-timeout",
    "max_connections_per_client": "--max-connections-per-client",
    "connect_burst": "--connect-burst",
}


@pytest.mark.parametrize("field", sorted(INT_BOUNDS))
def test_flags_and_settings_share_one_range(field: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Each whole-number flag and its Settings field refuse the same values."""
    low, high = INT_BOUNDS[field]
    flag = FLAG_OF_FIELD[field]
    value = (low,) if field == "allow_ports" else low
    assert parse_args([flag, str(low)]) == Settings(**cast(dict[str, Any], {field: value}))
    for bad in (low - 1, *(() if high is None else (high + 1,))):
        assert parse_args([flag, str(bad)]) == 2
        assert f"invalid value for {flag}: {bad} is out of range" in capsys.readouterr().err
        with pytest.raises(ValueError, match=f"{field}: {bad} is out of range"):
            Settings(**cast(dict[str, Any], {field: (bad,) if field == "allow_ports" else bad}))


def test_parent_proxy_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    s = settings(
        "--upstream",
        "http://u:p@corp:3128",
        "--no-upstream",
        ".corp,10.0.0.0/8",
        "--upstream-fallback",
        "direct",
    )
    assert [p.name for p in s.upstreams] == ["http://corp:3128"]
    assert (s.no_upstream, s.upstream_fallback) == ((".corp", "10.0.0.0/8"), "direct")
    assert "u:p" not in repr(s)  # the credentials never reach a log line through Settings
    listed = tmp_path / "parents"
    listed.write_text("# the company's\nhttp://me:s%23cret@proxy.corp  # main\n\nsocks5://b\n")
    listed.chmod(0o644)
    assert parse_args(["--upstream-file", str(listed)]) == 2
    assert "others may read it; chmod 600 it" in capsys.readouterr().err
    listed.chmod(0o600)
    s = settings("--upstream", "http://first:1", "--upstream-file", str(listed))
    assert [p.name for p in s.upstreams] == [
        "http://first:1",
        "http://proxy.corp:3128",
        "socks5://b:1080",
    ]
    assert s.upstreams[1].password == "s#cret"
    assert parse_args(["--no-upstream", "exa mple.com"]) == 2
    assert "invalid value for --no-upstream" in capsys.readouterr().err


def test_upstream_from_env_leaves_this_fyntr_out() -> None:
    env = {
        "https_proxy": "http://127.0.0.1:9999",  # this fyntr: --port 9999
        "HTTPS_PROXY": "http://corp:3128",
        "http_proxy": "http://corp:3128",  # the same parent: once
        "ALL_PROXY": "socks5://corp:1080",
        "NO_PROXY": "a.example,b.example",
        "no_proxy": "a.example",
    }
    s = parse_args(["--upstream-from-env", "--no-upstream", "c.example"], env)
    assert isinstance(s, Settings)
    assert [p.name for p in s.upstreams] == ["http://corp:3128", "socks5://corp:1080"]
    assert s.no_upstream == ("c.example", "a.example", "b.example")
