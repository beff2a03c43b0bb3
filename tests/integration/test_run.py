"""``fyntr run [flags] -- COMMAND``: the command gets the proxy variables, reaches its
origin through fyntr (and through an inherited proxy, fyntr's parent then), and its
exit status and the supervisor's signals pass through; anything that would make it
bypass fyntr, or a fyntr that cannot start, is an error before the command runs."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
from pathlib import Path

from tests.support.http_origin import http_origin
from tests.support.net import fyntr_argv, hello_https, make_tls, origin
from tests.support.parent import parent_proxy

# The origin is on 127.0.0.1, which NO_PROXY exempts (for urllib as for curl): the
# command drops the exemption to go through the proxy it was given.
FETCH = """
import os, sys, urllib.request
del os.environ["no_proxy"], os.environ["NO_PROXY"]
proxy = urllib.request.ProxyHandler({"http": os.environ["http_proxy"]})
reply = urllib.request.build_opener(proxy).open(sys.argv[1], timeout=10)
print(reply.headers["via"], reply.read().decode())
"""


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without proxies or FYNTR_* settings."""
    keep = {
        k: v
        for k, v in os.environ.items()
        if ("proxy" not in k.lower() and not k.startswith("FYNTR_")) or k == "FYNTR_TEST_LOOP"
    }
    return {**keep, **extra}


async def fyntr_run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *fyntr_argv("run", *args),
        env=clean_env() if env is None else env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_the_command_reaches_its_origin_through_fyntr() -> None:
    async with http_origin({"a": b"hello"}) as o:
        status, out, err = await fyntr_run(
            "--allow-cidr",
            "127.0.0.0/8",
            "--allow-port",
            str(o.port),
            "--",
            sys.executable,
            "-c",
            FETCH,
            f"http://127.0.0.1:{o.port}/index/a",
        )
    assert (status, out, err) == (0, "1.1 fyntr hello\n", "")  # nothing said at warning


async def test_curl_reaches_an_https_origin_through_fyntr_run(tmp_path: Path) -> None:
    """HTTPS_PROXY as curl reads it: a CONNECT tunnel through fyntr, TLS end to end
    (--noproxy '' lifts the loopback exemption for this local origin)."""
    curl = shutil.which("curl")
    assert curl is not None, "curl is installed by the test command"
    tls = make_tls(tmp_path)
    async with origin(hello_https, ssl_ctx=tls.server_ctx) as o:
        status, out, err = await fyntr_run(
            "--allow-cidr",
            "127.0.0.0/8",
            "--allow-port",
            str(o.port),
            "--log-level",
            "info",
            "--",
            curl,
            "-sS",
            "--noproxy",
            "",
            "--cacert",
            str(tls.ca_file),
            f"https://127.0.0.1:{o.port}/",
        )
    assert (status, out) == (0, "hello through fyntr\n")
    assert f"CONNECT 127.0.0.1:{o.port}" in err  # fyntr's own log line: it went through


async def test_the_command_gets_every_spelling_of_the_proxy_and_loopback_exempt() -> None:
    env = clean_env(NO_PROXY="corp.example,localhost")
    status, out, _ = await fyntr_run("--node", "--", "env", env=env)
    assert status == 0
    seen = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    url = seen["HTTPS_PROXY"]
    assert url.startswith("http://127.0.0.1:")
    for name in ("https_proxy", "HTTP_PROXY", "http_proxy"):
        assert seen[name] == url
    assert seen["NO_PROXY"] == seen["no_proxy"] == "corp.example,localhost,127.0.0.1,::1"
    assert seen["NODE_USE_ENV_PROXY"] == "1"


async def test_the_commands_exit_status_is_fyntr_runs() -> None:
    assert (await fyntr_run("--", sys.executable, "-c", "raise SystemExit(7)"))[0] == 7
    killed = await fyntr_run("--", sys.executable, "-c", "import os; os.kill(os.getpid(), 15)")
    assert killed[0] == 128 + signal.SIGTERM


async def test_sigterm_reaches_the_command_and_sigint_is_left_to_the_terminal() -> None:
    """A supervisor's SIGTERM to fyntr goes on to the command; a SIGINT sent to fyntr
    alone does not (a terminal sends it to the command itself)."""
    script = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *_: (print('TERM', flush=True), sys.exit(0)))\n"
        "signal.signal(signal.SIGINT, lambda *_: (print('INT', flush=True), sys.exit(5)))\n"
        "print('ready', flush=True)\n"
        "time.sleep(30)\n"
    )
    proc = await asyncio.create_subprocess_exec(
        *fyntr_argv("run", "--", sys.executable, "-c", script),
        env=clean_env(),
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    assert await asyncio.wait_for(proc.stdout.readline(), 30) == b"ready\n"
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGTERM)
    rest = await asyncio.wait_for(proc.stdout.read(), 30)
    assert (await proc.wait(), rest) == (0, b"TERM\n")


async def test_an_inherited_proxy_becomes_fyntrs_parent() -> None:
    """HTTPS_PROXY already set (a company proxy): the command still goes through fyntr,
    and fyntr passes it on to that proxy, by name."""
    curl = shutil.which("curl")
    assert curl is not None, "curl is installed by the test command"
    async with origin(hello_https) as o, parent_proxy() as p:
        status, out, err = await fyntr_run(
            "--allow-port",
            str(o.port),
            "--",
            curl,
            "-sS",
            "--proxytunnel",
            f"http://origin.test:{o.port}/",
            env=clean_env(HTTPS_PROXY=p.url, HTTP_PROXY=p.url, NO_PROXY="corp.example"),
        )
    assert (status, out, err) == (0, "hello through fyntr\n", "")
    assert p.heads == [
        f"CONNECT origin.test:{o.port} HTTP/1.1\r\nhost: origin.test:{o.port}\r\n\r\n".encode()
    ]


async def test_what_would_bypass_fyntr_is_refused_before_the_command_runs(
    tmp_path: Path,
) -> None:
    marker = tmp_path / "ran"
    touch = ["--", "touch", str(marker)]
    bad_parent = await fyntr_run(*touch, env=clean_env(HTTPS_PROXY="https://corp.example"))
    assert bad_parent[0] == 2 and "HTTPS_PROXY: a parent proxy is http://" in bad_parent[2]
    chosen = await fyntr_run("--port", "8080", *touch)
    assert chosen[0] == 2 and "listens on a free loopback port" in chosen[2]
    bad_flag = await fyntr_run("--no-such-flag", *touch)
    assert bad_flag[0] == 2 and "unrecognized arguments: --no-such-flag" in bad_flag[2]
    no_start = await fyntr_run("--threat-feed-file", str(tmp_path / "missing.txt"), *touch)
    assert no_start[0] == 1 and "fyntr did not start" in no_start[2]
    assert not marker.exists()


async def test_help_says_how_and_exits_0() -> None:
    status, out, _ = await fyntr_run("--help")
    assert status == 0 and out.startswith("usage: fyntr run [fyntr flags] [--node] -- COMMAND")


async def test_usage_errors_are_one_line_each() -> None:
    no_separator = await fyntr_run("true")
    assert no_separator[0] == 2 and "give the command after --" in no_separator[2]
    nothing = await fyntr_run("--")
    assert nothing[0] == 2 and "no command after --" in nothing[2]
    missing = await fyntr_run("--", "/nonexistent/command")
    assert missing[0] == 127
    assert "/nonexistent/command: No such file or directory" in missing[2]
    assert "Traceback" not in missing[2]
