"""
activesync.py — a small ActiveSync Ping client for the tests (issue 19).

Requests are built by Debian's libwbxml2 tools (a codec we did not write):
`xml2wbxml -a -n` turns the XML documents in tests/activesync/ (or XML made
from tests/activesync/ping-template.xml) into WBXML, and `wbxml2xml -l
ACTIVESYNC` turns nudged's answers back into XML, which is parsed and
compared. Sent with the harness's own HTTP client (harness.Conn / Pending).

Users sign in with HTTP Basic against a passwd-file (SHA512-CRYPT), as the
sign-in tests do (test_signin.py).
"""
import base64
import shutil
import struct
import subprocess
import tempfile
import urllib.parse
import xml.etree.ElementTree as ET
from pathlib import Path

import harness
from dovecot import crypt_hash

XML_DIR = harness.REPO / "tests/activesync"
HEADER = bytes([0x03, 0x01, 0x6A, 0x00])  # WBXML 1.3, public id unknown, UTF-8, no string table
WBXML = "application/vnd.ms-sync.wbxml"
PATH = "/Microsoft-Server-ActiveSync"
PING_CODE = 18

DOCTYPE = ('<?xml version="1.0"?>\n<!DOCTYPE ActiveSync PUBLIC "-//MICROSOFT//DTD ActiveSync//EN" '
           '"http://www.microsoft.com/">\n')


def tools_present():
    return shutil.which("xml2wbxml") is not None and shutil.which("wbxml2xml") is not None


def _run(argv, data, suffix_in, suffix_out):
    with tempfile.TemporaryDirectory() as d:
        src, dst = Path(d) / f"in{suffix_in}", Path(d) / f"out{suffix_out}"
        src.write_bytes(data)
        p = subprocess.run([*argv, "-o", str(dst), str(src)], capture_output=True, timeout=30)
        assert p.returncode == 0 and dst.exists(), f"{argv[0]} failed ({p.returncode}): {p.stdout!r} {p.stderr!r}"
        return dst.read_bytes()


def xml_to_wbxml(xml: str) -> bytes:
    out = _run(["xml2wbxml", "-a", "-n"], xml.encode(), ".xml", ".wbxml")
    assert out[:4] == HEADER, f"xml2wbxml wrote header {out[:4].hex()} (expected 03016a00)"
    return out


def wbxml_to_xml(data: bytes) -> str:
    return _run(["wbxml2xml", "-l", "ACTIVESYNC"], data, ".wbxml", ".xml").decode()


def file_wbxml(name: str) -> bytes:
    """A document of tests/activesync/ as WBXML."""
    return xml_to_wbxml((XML_DIR / name).read_text())


def ping_xml(heartbeat=None, folders=("INBOX",), cls="Email", with_folders=True):
    """A Ping document from ping-template.xml: heartbeat (None: none) and folder Ids."""
    hb = "" if heartbeat is None else f"<HeartbeatInterval>{heartbeat}</HeartbeatInterval>"
    fo = "".join(f"<Folder><Id>{i}</Id><Class>{cls}</Class></Folder>" for i in folders)
    text = (XML_DIR / "ping-template.xml").read_text().replace("{heartbeat}", hb).replace("{folders}", fo)
    if not with_folders:
        text = text.replace("<Folders></Folders>", "")
    return text


def ping_wbxml(heartbeat=None, folders=("INBOX",), **kw):
    return xml_to_wbxml(ping_xml(heartbeat, folders, **kw))


class Answer:
    """A decoded Ping answer: status (int), folders (list of Ids), heartbeat, max_folders."""

    def __init__(self, resp):
        self.resp = resp
        assert resp.status == 200, f"expected 200 WBXML, got {resp!r}"
        ct = (resp.header("Content-Type") or "").split(";")[0].strip().lower()
        assert ct == WBXML, f"Content-Type {ct!r}: {resp!r}"
        assert resp.body[:4] == HEADER, f"answer header {resp.body[:4].hex()}: {resp!r}"
        self.xml = wbxml_to_xml(resp.body)
        root = ET.fromstring(self.xml)
        tag = root.tag.split("}")[-1]
        assert tag == "Ping", f"answer is not a Ping: {self.xml}"

        def find(name):
            for el in root.iter():
                if el.tag.split("}")[-1] == name:
                    yield el

        st = list(find("Status"))
        assert len(st) == 1, f"expected one Status: {self.xml}"
        self.status = int(st[0].text)
        # MS-ASCMD 2.2.3.71.2: in a Ping answer, Folders/Folder holds the Id as its text.
        self.folders = sorted((el.text or "").strip() for el in find("Folder"))
        hb = list(find("HeartbeatInterval"))
        self.heartbeat = int(hb[0].text) if hb else None
        mf = list(find("MaxFolders"))
        self.max_folders = int(mf[0].text) if mf else None

    def __repr__(self):
        return f"<Ping answer status={self.status} folders={self.folders} hb={self.heartbeat} " \
               f"max={self.max_folders}>"


def basic(user, password):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def plain_query(user, device, device_type="iPhone", cmd="Ping"):
    q = urllib.parse.urlencode({"Cmd": cmd, "User": user, "DeviceId": device, "DeviceType": device_type})
    return f"{PATH}?{q}"


def b64_query(device, device_type="iPhone", version=141, cmd=PING_CODE, locale=0x0409, policy_key=None):
    """MS-ASHTTP 2.2.1.1.1.1: the whole query base64 (no User: the Basic user is the user)."""
    pk = b"\x00" if policy_key is None else b"\x04" + struct.pack("<I", policy_key)
    raw = (bytes([version, cmd]) + struct.pack("<H", locale) + bytes([len(device)]) + device.encode()
           + pk + bytes([len(device_type)]) + device_type.encode())
    return f"{PATH}?{base64.b64encode(raw).decode()}"


def headers(auth, version="14.1", extra=None):
    h = {"Content-Type": WBXML}
    if auth is not None:
        h["Authorization"] = auth
    if version is not None:
        h["MS-ASProtocolVersion"] = version
    h.update(extra or {})
    return h


class Device:
    """One phone of one mail user."""

    def __init__(self, srv, user, password, device=None, version="14.1"):
        self.srv = srv
        self.user = user
        self.password = password
        self.device = device or harness.unique("dev")
        self.version = version

    def _args(self, body, query=None, auth=None, version="default"):
        path = query or plain_query(self.user, self.device)
        h = headers(basic(self.user, self.password) if auth is None else auth,
                    self.version if version == "default" else version)
        return path, (b"" if body is None else body), h

    def send(self, body, **kw):
        """The raw HTTP answer to a Ping with WBXML 'body' (b"" / None: empty Ping)."""
        timeout = kw.pop("timeout", harness.WAIT)
        path, body, h = self._args(body, **kw)
        return self.srv.request("POST", path, body, headers=h, timeout=timeout)

    def send_async(self, body, **kw):
        path, body, h = self._args(body, **kw)
        return self.srv.pending("POST", path, body, headers=h)

    def ping(self, heartbeat=60, folders=("INBOX",), **kw):
        return Answer(self.send(ping_wbxml(heartbeat, folders), **kw))

    def ping_async(self, heartbeat=60, folders=("INBOX",), **kw):
        return self.send_async(ping_wbxml(heartbeat, folders), **kw)


def passwd_file(path, users):
    """Writes a Dovecot passwd-file: users is name -> password (SHA512-CRYPT)."""
    tmp = Path(str(path) + ".new")
    tmp.write_text("".join(f"{u}:{{SHA512-CRYPT}}{crypt_hash(p, 'SHA512-CRYPT')}::::::\n"
                           for u, p in users.items()))
    tmp.replace(path)
