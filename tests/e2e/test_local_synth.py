"""``synthesize``: an interrupted or timed-out ``cdk synth`` leaves no process behind."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import pytest

from localrun.workflow import SynthError, synthesize


def app_processes(outdir: Path) -> dict[int, str]:
    """pid → command of the running processes of the CDK app synthesizing into ``outdir``."""
    marker = f"CDK_OUTDIR={outdir}".encode()
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue  # ended while listed
        if state != "Z":
            found[int(entry.name)] = command
    return found


def test_an_interrupted_synth_stops_the_app_it_started(tmp_path: Path) -> None:
    outdir = tmp_path / "cdk.out"
    seen: dict[int, str] = {}
    main = threading.get_ident()
    synthesizing = threading.Event()
    synthesizing.set()

    def interrupt_once_the_app_runs() -> None:
        # Only while synthesize runs: a stray SIGINT later would stop the whole test session.
        while synthesizing.is_set():
            seen.update(app_processes(outdir))
            if seen:
                signal.pthread_kill(main, signal.SIGINT)  # a Ctrl-C while the app synthesizes
                return
            time.sleep(0.02)

    watcher = threading.Thread(target=interrupt_once_the_app_runs)
    watcher.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            synthesize(outdir)
    finally:
        synthesizing.clear()
        watcher.join()

    assert seen, "the CDK app never started"
    assert app_processes(outdir) == {}


def test_a_synth_past_its_timeout_is_an_error_and_stops_the_app(tmp_path: Path) -> None:
    outdir = tmp_path / "cdk.out"

    with pytest.raises(SynthError, match=r"cdk synth did not finish within 1 s"):
        synthesize(outdir, timeout=1)

    assert app_processes(outdir) == {}
