"""``evalkit certify``: a run's reproduction certificate, and ``--verify`` to re-hash one.

Exit status of ``--verify``: 0 when nothing differs (files that are missing, or data that could
not be re-fingerprinted here, are listed and noted, and do not fail it: a reviewer without the
data can still check the weights and records), 1 when anything differs or the certificate itself
fails its own hash or cannot be read.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from evalkit.cli.help import EXIT_FAIL, EXIT_OK, EXIT_USAGE, HelpFormatter

DESCRIPTION = """\
Write a run's reproduction certificate: one JSON, <output-dir>/certificates/<model>[/<variant>].json,
that binds by SHA-256 the weight files, each task's data fingerprint, per-sample records and
result file, the code, the environment, the protocol, the metrics, intervals and verdicts, and
itself. --verify CERT re-hashes whatever is present and prints, line by line, what matches,
what differs, what is missing and what could not be checked (docs/certificates.md)."""

EXAMPLES = """examples:
  evalkit certify --model eva-clip-demo --output-dir results
  evalkit certify --verify results/certificates/eva-clip-demo.json
  evalkit certify --verify cert.json --output-dir /copy/results --weights /new/place/weights --no-data
"""


def cmd_certify(args: argparse.Namespace) -> int:
    from evalkit.reporting.certificate import (
        CertificateError,
        certify,
        read_certificate,
        summary,
        verify_certificate,
    )

    if args.verify is None:
        if not args.model:
            print("evalkit certify: error: --model is required (or --verify CERT)", file=sys.stderr)
            return EXIT_USAGE
        claims = None
        if args.claims:
            from evalkit.reporting.claims import load_claims

            claims = load_claims(args.claims)
        path = certify(args.output_dir, args.model, args.variant, claims, progress=not args.quiet)
        cert = read_certificate(path)
        print(path)
        for warning in cert["warnings"]:
            print(f"evalkit certify: warning: {warning}", file=sys.stderr)
        print(summary(cert))
        return EXIT_OK
    try:
        cert = read_certificate(args.verify)
        checks = verify_certificate(args.verify, output_dir=args.output_dir_verify, weights=args.weights,
                                    data_root=args.data_root, search=args.search or (), data=not args.no_data, progress=not args.quiet)
    except CertificateError as e:
        print(f"evalkit certify: error: {e}", file=sys.stderr)
        return EXIT_FAIL
    print(f"certificate {args.verify}: own hash verified (sha256 {cert['sha256'][:16]}…): "
          f"{cert.get('model')} [{cert.get('variant')}], created {cert.get('created_at')}")
    width = max((len(c.what) for c in checks), default=0)
    for c in checks:
        print(f"  {c.what:<{width}}  {c.status}" + (f"  ({c.detail})" if c.detail else ""))
    counts = {s: sum(c.status == s for c in checks) for s in ("match", "differs", "missing", "unchecked")}
    line = ", ".join(f"{n} {s}" for s, n in counts.items())
    if counts["differs"]:
        print(f"FAILED: {line}")
        return EXIT_FAIL
    note = (" (missing and unchecked items are not failures: they could not be compared here)"
            if counts["missing"] or counts["unchecked"] else "")
    print(f"OK: {line}{note}")
    return EXIT_OK


def register_cli(sub: Any) -> None:
    p = sub.add_parser("certify", help="write a run's reproduction certificate, or --verify one",
                       description=DESCRIPTION, epilog=EXAMPLES, formatter_class=HelpFormatter)
    p.add_argument("--model", help="the model whose run to certify")
    p.add_argument("--variant", default=None,
                   help="the run's variant (the results' subfolder: fp16, int8, fp32+<weights>...; default: fp32 "
                   "with the card's weights)")
    p.add_argument("--output-dir", default=None,
                   help="the folder `evalkit run --output-dir` wrote to (default: results; with --verify: the "
                   "results folder the certificate sits in)")
    p.add_argument("--claims", action="append", default=None,
                   help="claims CSV for the verdicts (repeatable; default: the claims evalkit ships)")
    p.add_argument("--verify", metavar="CERT", default=None,
                   help="re-hash what the certificate CERT binds instead; exit 1 when anything differs or CERT "
                   "fails its own hash")
    p.add_argument("--weights", default=None,
                   help="with --verify: where the weights are now (a folder or file; default: the certified path)")
    p.add_argument("--data-root", default=None, help="with --verify: the data root ($EVALKIT_DATA by default)")
    p.add_argument("--search", action="append", default=None, metavar="DIR",
                   help="with --verify: a folder where moved files may be (repeatable); a file is matched by size "
                   "and SHA-256")
    p.add_argument("--no-data", action="store_true",
                   help="with --verify: do not re-fingerprint the data (reported as unchecked)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress while hashing large weight files or re-fingerprinting data")
    p.set_defaults(func=_dispatch)


def _dispatch(args: argparse.Namespace) -> int:
    # --output-dir means the results folder in both modes; its default differs (results vs the certificate's own)
    args.output_dir_verify = args.output_dir
    if args.output_dir is None:
        args.output_dir = "results"
    return cmd_certify(args)
