"""The installed ``imaging-gateway`` console script and ``python -m server.cli.main`` as new
processes: most tests fork their gateways and run commands in the test process
(tests/live.py), so these keep the real entry points tested."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.live import LiveServer


def _console_script() -> Path:
    script = Path(sys.executable).with_name("imaging-gateway")
    if not script.is_file():
        pytest.fail(f"the console script is not installed next to {sys.executable}")
    return script


def test_console_script_answers_with_the_exit_code_of_its_command(tmp_path: Path) -> None:
    live = LiveServer(tmp_path / "data")
    done = subprocess.run([str(_console_script()), "check"], env=live.env(),
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "consistent" in done.stdout

    unsafe = LiveServer(tmp_path / "prod", extra_env={"GATEWAY_ENVIRONMENT": "production",
                                                      "GATEWAY_AUTH__ENABLED": "false"})  # fmt: skip
    refused = subprocess.run([str(_console_script()), "check"], env=unsafe.env(),
                             capture_output=True, text=True, timeout=300)  # fmt: skip
    assert refused.returncode != 0
    assert "invalid settings" in refused.stderr and "Traceback" not in refused.stderr


@pytest.mark.parametrize("start", ["subprocess", "forked"])
def test_a_gateway_serves_and_ends_on_sigterm_as_the_module_entry_point_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, start: str
) -> None:
    """``python -m server.cli.main serve`` and a forked gateway (tests/forkserver.py) behave
    alike: they serve, and SIGTERM ends them after uvicorn's graceful shutdown, which
    re-raises the signal (exit status -15)."""
    monkeypatch.setenv("GATEWAY_TEST_SERVER", start)
    live = LiveServer(tmp_path / "data").start()
    try:
        assert live.process is not None
        if start == "subprocess":
            assert isinstance(live.process, subprocess.Popen)
            assert live.process.args[1:3] == ["-m", "server.cli.main"]
        assert httpx.get(f"{live.url}/healthz", timeout=10).status_code == 200
        live.process.send_signal(signal.SIGTERM)
        assert live.process.wait(30) == -signal.SIGTERM
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{live.url}/healthz", timeout=10)
    finally:
        live.stop()
