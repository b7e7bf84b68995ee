"""``chainwatch audit``: run the auditor, and check the audit log and its proofs."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from pipeline.cli.common import (
    add_check,
    add_common,
    add_metrics_port,
    load_settings,
    node_url_given,
    non_negative_int,
    positive_number,
    rpc_url,
    serving,
    stop_on_signals,
)
from pipeline.settings import Settings

HELP = """\
The audit log is an append-only Merkle log (RFC 6962 / 9162) of every alert and every model
checkpoint, in one SQLite file, with an Ed25519-signed head per appended batch. Anyone with
the public key can check that an alert is in it, and that a later log extends an earlier
one, without the file.

examples:
  chainwatch audit serve --bootstrap 127.0.0.1:9092            # the auditor service
  chainwatch audit serve --metrics-port 9108                   # ... with /metrics and /v1/
  chainwatch audit serve --session-timeout 6                   # a standby takes over sooner
  chainwatch audit verify --store chainwatch-data/audit.db     # check every leaf and head
  chainwatch audit verify --bootstrap 127.0.0.1:9092           # ... and against its heads
  chainwatch audit verify --head saved-head.json               # ... or a head you kept
  chainwatch audit prove 3f2a...e1 > proof.json                # an alert's inclusion proof
  chainwatch audit check-proof proof.json --public-key chainwatch-data/audit.db.key.pub
  chainwatch audit head                                        # the newest signed head
  chainwatch audit consistency 1200                            # size 1200 -> now
  chainwatch audit public-key                                  # the key to give verifiers
"""
STORE_HELP = "the audit log file (default: setting audit.store, chainwatch-data/audit.db)"
KEY_HELP = ("the log's public key: a PEM file or 64 hex characters (default: setting "
            "audit.public_key, else the .pub file beside the auditor's private key)")


def add_parser(sub: Any) -> None:
    p = sub.add_parser("audit", help="the audit log: run the auditor, verify, prove",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    cmds = p.add_subparsers(dest="audit_command", metavar="AUDIT_COMMAND",
                            parser_class=type(p))
    cmds.required = True

    s = cmds.add_parser("serve", help="append alerts and checkpoints to the log; publish heads",
                        description="The auditor: reads chainwatch.alerts and "
                        "chainwatch.checkpoints, appends them to the log, publishes each "
                        "signed head to chainwatch.audit. One appends to a log at a time: "
                        "auditors started on one log compete for a lease (a Kafka consumer "
                        "group on the audit topic); the others stand by and take over "
                        "within about --session-timeout when the writer stops or dies. Stops "
                        "on Ctrl-C or SIGTERM. With --metrics-port, serves /metrics, "
                        "/healthz, /readyz (ready: the writer, with every input partition "
                        "read to within 1000 records of its end; a standby is not ready) and "
                        "the read-only JSON API /v1/ (head, proofs, consistency), standby "
                        "or not.")
    s.add_argument("--store", metavar="PATH", help=STORE_HELP)
    s.add_argument("--key", metavar="PATH", help="the private signing key (default: setting "
                   "audit.key, else <store>.key; made with mode 0600 on first use)")
    s.add_argument("--session-timeout", type=positive_number("seconds"), default=10.0,
                   metavar="S", help="how long a silent writer (a crashed auditor) keeps the "
                   "lease before a standby takes over (default 10); brokers set a floor "
                   "(Apache Kafka: group.min.session.timeout.ms, 6 s by default)")
    s.add_argument("--lease-group", metavar="G", help="the consumer group whose lease the "
                   "auditors of one log compete for (default: <consumer group>-auditor, "
                   "e.g. chainwatch-scorer-auditor)")
    s.add_argument("--until-caught-up", action="store_true",
                   help="exit once every input partition is read to its end")
    s.add_argument("--json", action="store_true", help="print a JSON summary on exit")
    add_metrics_port(s)
    add_common(s)
    s.set_defaults(run=run_serve)

    v = cmds.add_parser("verify", help="recompute every leaf, node and head of the log",
                        description="Recompute every leaf hash, stored node and root, check "
                        "every head's signature and the chain of heads, and the file seal. "
                        "Then hold the store to the newest signed head kept outside it: "
                        "--head, and the newest head on chainwatch.audit when a broker is "
                        "given (--bootstrap, CHAINWATCH_BOOTSTRAP_SERVERS or --config; 3 s "
                        "at most). A store shorter than that head is a rollback; a seal head "
                        "for a file with no seal, a removed seal. Prints one line: OK with "
                        "the size and root (and whether an external head was checked), or "
                        "FAILED / UNREADABLE with the first problem, and exits 1.")
    v.add_argument("--store", metavar="PATH", help=STORE_HELP)
    v.add_argument("--public-key", metavar="KEY", help=KEY_HELP)
    v.add_argument("--anchors", action="store_true",
                   help="also check every anchor of the log on the chain at --rpc-url")
    v.add_argument("--rpc-url", type=rpc_url, metavar="URL",
                   help="the node to check anchors on (default: CHAINWATCH_RPC_URL)")
    v.add_argument("--head", metavar="FILE|HEX", type=_head_arg,
                   help="a signed head of this log kept elsewhere: the JSON `chainwatch audit "
                   "head` prints or the auditor publishes (or a file of it), or its hex")
    add_common(v)
    add_check(v, _rpc_given)
    v.set_defaults(run=run_verify)

    an = cmds.add_parser("anchor", help="publish the newest signed head on an Ethereum chain",
                         description="Send one transaction whose calldata is CWA1 and the "
                         "SHA-256 of the newest signed head, from an account to itself, wait "
                         "for it, and record it in <store>.anchors.jsonl. The account is the "
                         "node's (--from, else its first) unless audit.anchor_key "
                         "(CHAINWATCH_AUDIT_ANCHOR_KEY) holds a private key to sign with. "
                         "`chainwatch audit verify --anchors` checks them.")
    an.add_argument("--rpc-url", type=rpc_url, metavar="URL",
                    help="the node (default: CHAINWATCH_RPC_URL)")
    an.add_argument("--from", dest="sender", metavar="ADDR",
                    help="the node's account to send from (default: its first)")
    an.add_argument("--json", action="store_true", help="print the anchor as JSON")
    _store_args(an)
    add_check(an, _rpc_given)
    an.set_defaults(run=run_anchor)

    pr = cmds.add_parser("prove", help="print an alert's inclusion proof as JSON",
                         description="Print the inclusion proof of an alert (or a leaf id "
                         "such as checkpoint:<sha256>) against the newest signed head, with "
                         "the leaf itself: everything `check-proof` needs but the key.")
    pr.add_argument("leaf_id", metavar="ALERT_ID")
    _store_args(pr)
    pr.set_defaults(run=run_prove)

    c = cmds.add_parser("check-proof", help="check a proof file offline, with the public key",
                        description="Check a proof printed by `audit prove`: the head's "
                        "signature and the audit path from the leaf to its root. Needs no "
                        "log, only the public key. Exit status 0 valid, 1 invalid.")
    c.add_argument("file", metavar="FILE", help="the proof JSON, or - for standard input")
    c.add_argument("--public-key", metavar="KEY", required=True, help=KEY_HELP)
    c.add_argument("--log-level", default="WARNING", help=argparse.SUPPRESS)
    c.set_defaults(run=run_check_proof, config=None)

    h = cmds.add_parser("head", help="print the newest signed head as JSON")
    _store_args(h)
    h.set_defaults(run=run_head)

    co = cmds.add_parser("consistency", help="print a consistency proof from an older size",
                         description="Print the proof that the log now extends the log of "
                         "OLD_SIZE leaves, with the heads signed at both sizes when the log "
                         "has them.")
    co.add_argument("old_size", metavar="OLD_SIZE", type=non_negative_int)
    _store_args(co)
    co.set_defaults(run=run_consistency)

    _add_keygen(cmds)

    k = cmds.add_parser("public-key", help="print the log's public key (PEM)")
    _store_args(k, key=True)
    k.set_defaults(run=run_public_key)


def _add_keygen(cmds: Any) -> None:
    kg = cmds.add_parser("keygen", help="make the auditor's signing key; write its public key",
                         description="Make the auditor's Ed25519 signing key at --key "
                         "(mode 0600) unless it is there, and write its public key (PEM) to "
                         "--public-out (default <key>.pub), where scorers and verifiers can "
                         "pin it without reading the private key. Prints the public key's "
                         "hex. Run it again and it changes nothing.")
    kg.add_argument("--key", metavar="PATH", required=True, help="the private key file")
    kg.add_argument("--public-out", metavar="PATH",
                    help="where to write the public key (default: <key>.pub)")
    add_common(kg, bootstrap=False)
    kg.set_defaults(run=run_keygen)


def _store_args(p: argparse.ArgumentParser, key: bool = False) -> None:
    p.add_argument("--store", metavar="PATH", help=STORE_HELP)
    if key:
        p.add_argument("--public-key", metavar="KEY", help=KEY_HELP)
    add_common(p, bootstrap=False)


def _rpc_given(args: argparse.Namespace) -> str | None:
    """The node's URL, from the flag or CHAINWATCH_RPC_URL, when the command needs one."""
    if getattr(args, "run", None) is run_verify and not args.anchors:
        return "--rpc-url is for --anchors; add --anchors" if args.rpc_url else None
    return node_url_given(args)


def _head_arg(text: str) -> Any:
    from pipeline.audit import AuditError
    from pipeline.audit.external import parse_head

    try:
        return parse_head(text)
    except AuditError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _broker_given(args: argparse.Namespace) -> bool:
    """Was a broker named (a flag, the environment or a settings file), not just defaulted?"""
    from pipeline.settings import env_var

    return bool(args.bootstrap or os.environ.get(env_var("bootstrap_servers")) or args.config
                or os.environ.get("CHAINWATCH_CONFIG"))


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(args, **{"audit.store": getattr(args, "store", None),
                                  "audit.key": getattr(args, "key", None),
                                  "audit.public_key": getattr(args, "public_key", None)})


def _public_key(settings: Settings) -> Path | str:
    from pipeline.audit.trust import configured_public_key

    return configured_public_key(settings)


def run_serve(args: argparse.Namespace) -> int:
    import socket

    from consumers.auditor import AuditorService
    from pipeline.audit.api import routes
    from pipeline.lease import LeaseConfig
    from pipeline.logs import announce

    settings = _settings(args)
    lease = LeaseConfig(group=args.lease_group or f"{settings.consumer_group}-auditor",
                        topic=settings.topics.audit,
                        session_timeout_ms=max(int(args.session_timeout * 1000), 1000),
                        holder=f"{socket.gethostname()} pid {os.getpid()}")

    def on_role(role: str, message: str) -> None:
        if role != "stopped":
            announce(f"chainwatch audit serve: {message.removeprefix('auditor: ')}")

    service = AuditorService(settings, stop_on_signals(), lease=lease, on_role=on_role)
    started = time.monotonic()
    with serving(settings, service, "chainwatch audit serve", routes(settings.audit.store)):
        announce(f"chainwatch audit serve: log {settings.audit.store}, reading "
                 f"{settings.topics.alerts} and {settings.topics.checkpoints} on "
                 f"{settings.bootstrap_servers}; lease: group {lease.group} "
                 f"(session {lease.session_timeout_ms / 1000:g} s); Ctrl-C to stop")
        stats = service.run(input_finished=(lambda: True) if args.until_caught_up else None)
    summary = {"store": settings.audit.store, "consumed": stats.consumed,
               "appended": stats.appended, "duplicates": stats.duplicates,
               "conflicts": stats.conflicts, "dead_lettered": stats.dead_lettered,
               "tree_size": stats.tree_size, "root": stats.root, "terms": stats.terms,
               "elapsed_s": round(time.monotonic() - started, 3)}
    if args.json:
        print(json.dumps(summary))
    else:
        announce(f"chainwatch audit serve: appended {stats.appended:,} leaves "
                 f"({stats.duplicates:,} duplicates); the log has {stats.tree_size:,}")
    return 0


def run_verify(args: argparse.Namespace) -> int:
    from pipeline.audit import AuditError, AuditKeyError, AuditReader, verify_store
    from pipeline.audit.external import newest_published_head
    from pipeline.audit.signing import load_public_key

    settings = _settings(args)
    store = Path(settings.audit.store)
    try:
        key = load_public_key(_public_key(settings))
    except AuditKeyError:  # no key beside it: is it an audit store at all? say that first
        _check_store_file(store)
        try:
            AuditReader.open(store).close()
        except AuditError as exc:
            raise AuditError(f"{store} is not a chainwatch audit store ({exc}); check "
                             "--store / CHAINWATCH_AUDIT_STORE") from None
        raise
    heads = [args.head] if args.head else []
    if _broker_given(args):
        published, why = newest_published_head(settings, key)
        if published is not None:
            heads.append(published)
        if why:
            got = "a head, maybe not the newest," if published else "no head"
            print(f"chainwatch audit verify: {got} read from {settings.topics.audit}: {why}",
                  file=sys.stderr)
    result = verify_store(store, public_key=key, external_heads=heads)
    print(result)
    ok = result.ok
    if args.anchors:
        from pipeline.audit.anchor import verify_anchors

        for check in verify_anchors(store, args.rpc_url):
            print(check)
            ok = ok and check.ok
    return 0 if ok else 1


def _check_store_file(store: Path) -> None:
    """A one-line error (exit 2) for a file that is not an SQLite file at all, when there is
    no key to verify it with (with one, verification reports it UNREADABLE)."""
    from pipeline.audit import AuditError

    if not store.is_file():
        raise AuditError(f"no audit store at {store}; check --store / CHAINWATCH_AUDIT_STORE")
    try:
        with store.open("rb") as f:
            header = f.read(16)
    except OSError as exc:
        raise AuditError(f"cannot read the audit store {store}: {exc.strerror}") from None
    if header != b"SQLite format 3\x00":
        raise AuditError(f"{store} is not a chainwatch audit store (it is not an SQLite "
                         "database); check --store / CHAINWATCH_AUDIT_STORE")


def run_prove(args: argparse.Namespace) -> int:
    from pipeline.audit import AuditReader, ProofError

    settings = _settings(args)
    with AuditReader.open(settings.audit.store) as reader:
        head = reader.head
        index = reader.index_of(args.leaf_id)
        if head is None or index is None:
            raise ProofError(f"{args.leaf_id!r} is not in the audit log "
                             f"{settings.audit.store} ({reader.size} leaves); check the id, "
                             "or wait for the auditor to catch up")
        proof = reader.inclusion_proof(index, head.size)
        leaf = reader.leaf(index)
    print(json.dumps({"leaf_id": leaf.id, "leaf": leaf.data.decode(),
                      "proof": json.loads(proof.to_json()),
                      "head": json.loads(head.to_json())}, indent=2))
    return 0


def run_check_proof(args: argparse.Namespace) -> int:
    from pipeline.audit import AuditError, InclusionProof, SignedHead, verify_inclusion
    from pipeline.audit.signing import load_public_key
    from pipeline.audit.trust import public_key_arg

    key = load_public_key(public_key_arg(args.public_key))
    try:
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
        doc = json.loads(text)
        leaf = doc["leaf"].encode()
        proof = InclusionProof.from_json(json.dumps(doc["proof"]))
        head = SignedHead.from_json(json.dumps(doc["head"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError, AuditError) as exc:
        print(f"INVALID: {args.file} is not a proof printed by `chainwatch audit prove` "
              f"({exc})")
        return 1
    if verify_inclusion(key, head, leaf, proof):
        print(f"VALID: {doc.get('leaf_id', 'the leaf')} is leaf {proof.index} of the log of "
              f"{head.size} leaves with root {head.root.hex()}, signed at "
              f"{head.timestamp_ms} ms")
        return 0
    print("INVALID: the head is not signed by this key, or the leaf and path do not lead "
          "to its root")
    return 1


def run_head(args: argparse.Namespace) -> int:
    from pipeline.audit import AuditReader

    settings = _settings(args)
    with AuditReader.open(settings.audit.store) as reader:
        head = reader.head
    if head is None:
        print(f"chainwatch audit head: the log {settings.audit.store} is empty",
              file=sys.stderr)
        return 1
    print(head.to_json().decode())
    return 0


def run_consistency(args: argparse.Namespace) -> int:
    from pipeline.audit import AuditReader

    settings = _settings(args)
    with AuditReader.open(settings.audit.store) as reader:
        proof = reader.consistency_proof(args.old_size)
        old, new = reader.head_at(proof.old_size), reader.head_at(proof.new_size)
    print(json.dumps({"proof": json.loads(proof.to_json()),
                      "old_head": json.loads(old.to_json()) if old else None,
                      "new_head": json.loads(new.to_json()) if new else None}, indent=2))
    return 0


def run_keygen(args: argparse.Namespace) -> int:
    from pipeline.audit.signing import Signer

    signer = Signer.load_or_create(args.key)
    out = Path(args.public_out or f"{args.key}.pub")
    pem = signer.public_pem()
    if not out.is_file() or out.read_text() != pem:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(pem)
    print(signer.public_hex())
    return 0


def run_public_key(args: argparse.Namespace) -> int:
    from cryptography.hazmat.primitives import serialization

    from pipeline.audit.signing import load_public_key

    key = load_public_key(_public_key(_settings(args)))
    print(key.public_bytes(serialization.Encoding.PEM,
                           serialization.PublicFormat.SubjectPublicKeyInfo).decode(), end="")
    return 0


def run_anchor(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from pipeline.audit.anchor import anchor_head, anchors_path

    settings = _settings(args)
    anchor = anchor_head(settings.audit.store, args.rpc_url, sender=args.sender,
                         private_key=settings.audit.anchor_key.get())
    if args.json:
        print(json.dumps(asdict(anchor)))
    else:
        print(f"anchored head {anchor.head_hash} (size {anchor.size}) in block "
              f"{anchor.block_number} of chain {anchor.chain_id}, transaction "
              f"{anchor.tx_hash}; recorded in {anchors_path(settings.audit.store)}")
    return 0
