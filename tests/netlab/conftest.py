"""
conftest.py — the `lab` fixture: a fresh network lab (lab.py) for each test,
torn down however the test ended.

    def test_something(lab):
        lab.set_fw_timeout(5)
        n = lab.start_nudged({"network": {"keepalive_idle": 60}})
        c = lab.client_conn(n)            # through the firewall
        ...

Teardown (a finalizer): client connections closed, every nudged stopped
(it must exit 0 on SIGTERM; with NUDGE_SAN=1 its log must hold no sanitizer
report), the three namespaces deleted, and `ip netns list` checked: a lab
that leaves a namespace behind fails the test.

Skips, with the reason, only when the lab cannot be built at all here: not
root, or no `ip netns` / `nft` (Debian: iproute2, nftables; `make test`
installs them).
"""
import pytest

from . import lab as netlab  # puts tests/e2e on sys.path, for harness and netns
import harness  # noqa: E402  (isort: after lab)


@pytest.fixture
def lab(request, tmp_path):
    why = netlab.unavailable()
    if why:
        pytest.skip(why)
    built = netlab.Lab(workdir=tmp_path)

    def teardown():
        # Objects the harness tracks (background pings, CLI processes) die first.
        while harness.LIVE:
            obj = harness.LIVE.pop()
            try:
                obj.close()
            except Exception:
                pass
        problems = built.close()
        if problems:
            pytest.fail("\n".join(problems), pytrace=False)

    request.addfinalizer(teardown)
    return built
