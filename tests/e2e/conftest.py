"""
conftest.py — fixtures that own nudged processes and always stop them.

  srv          one nudged per test module (the bulk of the tests). A module
               sets NUDGED_SETTINGS = {"section": {"key": value}} to change
               its config. Tests stay independent by using fresh user names
               (srv.user()), never by restarting the server.
  make_nudged  a factory for servers of one test: special config, or a test
               that stops the server itself (shutdown, timeouts, start-up).

Teardown (in a finalizer, so it runs however the test ended): SIGTERM, wait,
the exit code must be 0; a server that hangs is killed and the test fails.
With NUDGE_SAN=1 a log (or a nudge stderr) that holds a sanitizer report
fails the test too.
"""
import signal
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402


def finish(n: harness.Nudged, expect_clean_exit=True):
    """Stops 'n' if a test did not; returns a list of problems (empty = fine)."""
    problems = []
    if n.proc is None:
        return problems
    if n.running():
        try:
            code = n.stop(signal.SIGTERM, timeout=harness.WAIT)
        except AssertionError as e:
            problems.append(str(e))
            code = n.returncode
        if expect_clean_exit and code != 0:
            problems.append(f"nudged exited {code} on SIGTERM (expected 0)")
    else:
        n.kill()  # reaps, closes the log
    if harness.SAN:
        reports = n.sanitizer_reports()
        if reports:
            problems.append(f"sanitizer reports: {reports}")
    if problems:
        problems.append(n.log_tail(80))
    return problems


@pytest.fixture(autouse=True)
def _close_live():
    """Pending pings and background nudge processes die with their test."""
    yield
    while harness.LIVE:
        obj = harness.LIVE.pop()
        try:
            obj.close()
        except Exception:
            pass


@pytest.fixture(scope="module")
def srv(request, tmp_path_factory):
    settings = getattr(request.module, "NUDGED_SETTINGS", {})
    n = harness.Nudged(tmp_path_factory.mktemp("nudged"), settings)

    def teardown():
        problems = finish(n)
        if problems:
            pytest.fail("\n".join(problems), pytrace=False)

    request.addfinalizer(teardown)
    n.start()
    return n


@pytest.fixture
def make_nudged(request, tmp_path):
    made = []

    def make(settings=None, start=True, create_data_dir=True):
        n = harness.Nudged(tmp_path / f"nudged{len(made)}", settings, create_data_dir)
        made.append(n)
        if start:
            n.start()
        return n

    def teardown():
        problems = []
        for n in made:
            problems += finish(n)
        if problems:
            pytest.fail("\n".join(problems), pytrace=False)

    request.addfinalizer(teardown)
    return make
