#!/usr/bin/env python3
"""Runs the TLS library comparison (bench/README.md, "TLS libraries") and
prints its tables: memory per idle server-side connection after the
handshake and the server's CPU per full and resumed handshake, for OpenSSL,
wolfSSL and GnuTLS, TLS 1.3 and 1.2, ECDSA P-256 and RSA-2048 certificates
(made here with the openssl CLI), then the EVP AEAD costs of nudge's own
record layer (tls-evp). Each measurement is its own process, so no run's
freed memory is reused by the next.

The handshake rows are the median of --repeat runs, the EVP rows the
fastest of 5 (the machine may be shared: thread CPU time is steadier than
wall time, but caches and cores are shared too).

Usage: bench/tls_libs/run.py [--bin build/bin] [--n 2000] [--seconds 3] [--repeat 3]
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile


def kv(line):
    return dict(f.split("=", 1) for f in line.split())


def run(path, *args):
    out = subprocess.run([path, *args], check=True, capture_output=True, text=True,
                         timeout=600).stdout
    return [kv(line) for line in out.splitlines() if "=" in line]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default="build/bin")
    ap.add_argument("--n", default="2000", help="idle connections per memory row")
    ap.add_argument("--seconds", default="3", help="per handshake row")
    ap.add_argument("--repeat", type=int, default=3, help="runs per CPU row (the median is shown)")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="nudge-tlslibs-")
    certs = {}
    for name, key in (("ECDSA P-256", ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]),
                      ("RSA-2048", ["-newkey", "rsa:2048"])):
        stem = os.path.join(tmp, name.split()[0].split("-")[0].lower())
        subprocess.run(["openssl", "req", "-x509", *key, "-nodes", "-keyout", stem + ".key",
                        "-out", stem + ".crt", "-days", "30", "-subj", "/CN=localhost"],
                       check=True, capture_output=True)
        certs[name] = ["--cert", stem + ".crt", "--key", stem + ".key"]
    libs = [("openssl", "OpenSSL 3.0", []),
            ("openssl", "OpenSSL 3.0, RELEASE_BUFFERS", ["--release-buffers"]),
            ("openssl", "OpenSSL 3.0, RELEASE_BUFFERS, NO_TICKET", ["--release-buffers", "--no-tickets"]),
            ("openssl", "OpenSSL 3.0, NO_TICKET", ["--no-tickets"]),
            ("wolfssl", "wolfSSL 5.5", []),
            ("gnutls", "GnuTLS 3.7", [])]
    ec = certs["ECDSA P-256"]
    print(f"Memory per idle server-side connection after the handshake (ECDSA P-256, "
          f"N = {args.n}, mallinfo2 live bytes):\n")
    print("| library | TLS | object alone | after handshake | RSS delta |")
    print("|---|---|---|---|---|")
    for tls in ("1.3", "1.2"):
        for exe, label, extra in libs:
            path = os.path.join(args.bin, "tls-" + exe)
            new = run(path, *ec, "--tls", tls, "--n", args.n, "--mode", "new", *extra)[0]
            mem = run(path, *ec, "--tls", tls, "--n", args.n, "--mode", "mem", *extra)[0]
            print(f"| {label} | {tls} | {int(new['bytes_per_conn']):,} B "
                  f"| {int(mem['bytes_per_conn']):,} B | {int(mem['rss_bytes_per_conn']):,} B |")
        sys.stdout.flush()
    print(f"\nServer CPU per handshake, one core ({args.seconds} s per row, median of "
          f"{args.repeat}; handshakes per CPU-second of the server side):\n")
    print("| library | certificate | TLS | full /s | resumed (ticket) /s | resumed / full |")
    print("|---|---|---|---|---|---|")
    for cert_name, cert in certs.items():
        for tls in ("1.3", "1.2"):
            for exe, label, extra in (libs[0], libs[4], libs[5]):
                runs = [run(os.path.join(args.bin, "tls-" + exe), *cert, "--tls", tls,
                            "--mode", "hs", "--seconds", args.seconds) for _ in range(args.repeat)]
                full = statistics.median(float(r[0]["server_hs_per_cpu_s"]) for r in runs)
                res = runs[0][1]
                if "error" in res or res["resumed"] != res["handshakes"]:
                    rtxt, ratio = f"not resumed ({res.get('error', res['resumed'])})", "-"
                else:
                    r = statistics.median(float(r[1]["server_hs_per_cpu_s"]) for r in runs)
                    rtxt, ratio = f"{r:,.0f}", f"{r / full:.1f}x"
                print(f"| {label} | {cert_name} | {tls} | {full:,.0f} | {rtxt} | {ratio} |")
            sys.stdout.flush()
    print("\nnudge's record layer with OpenSSL EVP AEADs (200-byte records, thread "
          "CPU time, the fastest of 5 runs):\n")
    print("| AEAD | EVP_CIPHER_CTX keyed, bytes | seal, ctx per connection | "
          "seal, ctx per loop re-keyed | seal, ctx per loop, full init |")
    print("|---|---|---|---|---|")
    runs = [run(os.path.join(args.bin, "tls-evp")) for _ in range(max(5, args.repeat))]
    for i, row in enumerate(runs[0]):
        # the fastest run: the one the machine's other load disturbed least
        med = {k: min(float(r[i][k]) for r in runs)
               for k in ("seal_ns_per_conn_ctx", "seal_ns_rekey", "seal_ns_full_init")}
        print(f"| {row['cipher']} | {int(row['ctx_bytes']):,} | {med['seal_ns_per_conn_ctx']:.0f} ns "
              f"| {med['seal_ns_rekey']:.0f} ns | {med['seal_ns_full_init']:.0f} ns |")
    subprocess.run(["rm", "-rf", tmp])


if __name__ == "__main__":
    main()
