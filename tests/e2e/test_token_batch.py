"""`nudge token` batch forms: --user-prefix/--count/--start and --users-from.

They exist so a load generator can authenticate 100k users with one process
start. Every token printed must be exactly the one --user would print (same
signature, same expiry), usable against the real nudged, and in input order;
bad input must stop with a message naming the flag or the line, and a
non-zero exit.
"""
import time

import harness
from harness import SLOW, b64url_decode


def token_lines(p):
    assert p.returncode == 0, f"nudge token exited {p.returncode}: {p.stderr}"
    assert p.stderr == "", p.stderr
    lines = p.stdout.split("\n")
    assert lines[-1] == "", f"output does not end in a newline: {p.stdout[-80:]!r}"
    return lines[:-1]


def subject_and_expiry(tok):
    v, kind, subj, exp, _issued, _kid, _mac = tok.split(".")
    assert (v, kind) == ("v2", "u"), tok
    return b64url_decode(subj).decode(), int(exp)


def check_signed(srv, tokens, users):
    """Each token is the user token of users[i], signed with srv's secret."""
    assert len(tokens) == len(users)
    for tok, user in zip(tokens, users):
        subject, exp = subject_and_expiry(tok)
        assert subject == user, (tok, user)
        assert harness.v2_signed_by(srv.secret(), tok), f"token for {user!r} is not signed with the secret"


def test_prefix_count_prints_one_token_per_user(srv):
    p = srv.cli("token", "--user-prefix", "bench-u", "--count", "50", "-c", str(srv.conf))
    tokens = token_lines(p)
    check_signed(srv, tokens, [f"bench-u{i}" for i in range(50)])
    # The default lifetime is --user's: 30 days from now.
    exp = subject_and_expiry(tokens[0])[1]
    assert abs(exp - (time.time() + 30 * 86400)) < 120, exp


def test_prefix_start_and_ttl(srv):
    p = srv.cli("token", "--user-prefix", "u", "--count", "3", "--start", "1000", "--ttl", "1h",
                "-c", str(srv.conf))
    tokens = token_lines(p)
    check_signed(srv, tokens, ["u1000", "u1001", "u1002"])
    for tok in tokens:
        assert abs(subject_and_expiry(tok)[1] - (time.time() + 3600)) < 120, tok


def test_batch_tokens_ping_and_are_told_of_a_publish(srv):
    base = harness.unique("batch")
    p = srv.cli("token", "--user-prefix", base + "-", "--count", "200", "-c", str(srv.conf))
    tokens = token_lines(p)
    # A few users from the start, the middle and the end of the batch.
    picked = [0, 99, 199]
    held = [srv.pending("POST", "/v1/ping",
                        {"device": "d1", "heartbeat": 60, "folders": {"INBOX": "0"}},
                        token=tokens[i])
            for i in picked]
    deadline = time.monotonic() + harness.WAIT
    while srv.metrics().get("nudge_pings_held", 0) < len(picked):
        assert time.monotonic() < deadline, "the batch tokens' pings were not held"
        assert not any(h.done() for h in held), [h.result() for h in held if h.done()]
        time.sleep(0.05)
    for i in picked:
        assert srv.publish(f"{base}-{i}", "INBOX") == "1"
    for h in held:
        r = h.result()
        assert r.status == 200, r
        assert r.json()["status"] == "changed" and r.json()["folders"] == {"INBOX": "1"}, r


def test_users_from_file_keeps_order_and_any_user_id(srv, tmp_path):
    users = ["alice@example.org", "bob smith", "zoë", "a.b.c", "x" * 255]
    f = tmp_path / "users.txt"
    # CRLF line ends are taken off like LF; the last line needs no newline.
    f.write_bytes(("\r\n".join(users)).encode())
    p = srv.cli("token", "--users-from", str(f), "-c", str(srv.conf))
    tokens = token_lines(p)
    check_signed(srv, tokens, users)
    r = srv.request("GET", "/v1/state", token=tokens[1])
    assert r.status == 200, r


def test_users_from_standard_input(srv):
    p = srv.cli("token", "--users-from", "-", "-c", str(srv.conf), input="carol\ndave\n")
    check_signed(srv, token_lines(p), ["carol", "dave"])


def test_hundred_thousand_tokens_well_under_a_second(srv):
    t0 = time.monotonic()
    p = srv.cli("token", "--user-prefix", "u", "--count", "100000", "-c", str(srv.conf))
    elapsed = time.monotonic() - t0
    tokens = token_lines(p)
    assert len(tokens) == 100000 and len(set(tokens)) == 100000
    check_signed(srv, [tokens[0], tokens[54321], tokens[-1]], ["u0", "u54321", "u99999"])
    # About 0.3 s here (one HMAC-SHA256 per token, buffered output); the bound
    # leaves room for a loaded machine, and sanitizer builds run several times slower.
    assert elapsed < 1.5 * SLOW, f"100k tokens took {elapsed:.2f} s"


# -- bad input ---------------------------------------------------------------

def failed(p, code, message):
    assert p.returncode == code, f"exit {p.returncode}, expected {code}: {p.stderr!r}"
    assert message in p.stderr, f"expected {message!r} in stderr {p.stderr!r}"


def test_bad_count_is_a_usage_error(srv):
    for count in ["0", "abc", "-1", "12x", "100000001", ""]:
        p = srv.cli("token", "--user-prefix", "u", "--count", count, "-c", str(srv.conf))
        failed(p, 2, f"nudge token: --count '{count}': expected a whole number from 1 to 100000000")
        assert p.stdout == ""


def test_batch_flags_must_go_together(srv):
    conf = ["-c", str(srv.conf)]
    failed(srv.cli("token", "--user-prefix", "u", *conf), 2, "--user-prefix needs --count N")
    failed(srv.cli("token", "--user", "alice", "--count", "3", *conf), 2,
           "--count and --start go with --user-prefix")
    failed(srv.cli("token", "--users-from", "-", "--start", "3", *conf), 2,
           "--count and --start go with --user-prefix")
    failed(srv.cli("token", "--user-prefix", "u", "--count", "3", "--users-from", "-", *conf), 2,
           "give only one of --user, --publisher, --admin, --user-prefix, --users-from, --revoke and --rotate-secret")
    failed(srv.cli("token", "--user-prefix", "p" * 236, "--count", "3", *conf), 2,
           "--user-prefix: at most 235 bytes")
    failed(srv.cli("token", "--user-prefix", "u", "--count", "3", "--start", "x", *conf), 2,
           "--start 'x': expected a whole number")


def test_users_from_missing_or_unreadable_file(srv, tmp_path):
    p = srv.cli("token", "--users-from", str(tmp_path / "nope.txt"), "-c", str(srv.conf))
    failed(p, 1, f"nudge token: cannot open {tmp_path / 'nope.txt'}: No such file or directory")
    assert p.stdout == ""
    # A directory opens but cannot be read (and, as root, a mode-000 file still could be).
    p = srv.cli("token", "--users-from", str(tmp_path), "-c", str(srv.conf))
    failed(p, 1, f"nudge token: reading {tmp_path}: Is a directory")
    assert p.stdout == ""


def test_users_from_bad_line_names_the_line(srv, tmp_path):
    cases = [
        (b"alice\n\nbob\n", 2, "empty line"),
        (b"alice\nbob\n" + b"y" * 256 + b"\n", 3, "the line is 256 bytes long"),
        (b"a\x00b\n", 1, "the line holds a NUL byte"),
    ]
    for content, lineno, what in cases:
        f = tmp_path / "users.txt"
        f.write_bytes(content)
        p = srv.cli("token", "--users-from", str(f), "-c", str(srv.conf))
        failed(p, 1, f"nudge token: {f}:{lineno}: {what}: a user id is 1 to 255 bytes without NUL")
        # It stops at the bad line: what was printed is the lines before it, in order.
        good = content.split(b"\n")[:lineno - 1]
        check_signed(srv, p.stdout.split("\n")[:-1], [u.decode() for u in good])


def test_bad_line_on_standard_input_is_named_so(srv):
    p = srv.cli("token", "--users-from", "-", "-c", str(srv.conf), input="ok\n\n")
    failed(p, 1, "nudge token: standard input:2: empty line")


def test_batch_without_a_secret_says_where_it_looked(srv, tmp_path):
    p = srv.cli("token", "--user-prefix", "u", "--count", "5",
                "--secret-file", str(tmp_path / "no-secret"))
    failed(p, 1, f"secret file {tmp_path / 'no-secret'} does not exist: start nudged once to create it")
    assert p.stdout == ""
