"""`files-service token new`: a new token, its grants (`--buckets`), and adding it to a token file."""

from __future__ import annotations

import argparse
import json
import stat
import sys
from pathlib import Path
from typing import Any, cast

from pydantic import ValidationError

from service.core import names
from service.core.auth import ACTIONS, ALL_BUCKETS, Action, NewTokenEntry, TokenFile, new_token, problems
from service.storage.durable import write_atomic


class TokenFileError(Exception):
    """The token file cannot take the new entry: unreadable, invalid, or the name is taken."""


def grant(text: str) -> tuple[str, list[Action]]:
    """`BUCKET=ACTION[,ACTION...]` from the command line, e.g. `models=read,write,delete` or `*=read`."""
    bucket, equals, listed = text.partition("=")
    if not equals:
        raise argparse.ArgumentTypeError(f"{text!r} is not BUCKET=ACTIONS, e.g. 'models=read,write' or '*=read'")
    if bucket != ALL_BUCKETS and (problem := names.bucket_error(bucket)) is not None:
        raise argparse.ArgumentTypeError(f"{text!r}: {problem} (or '*' for every bucket)")
    actions = [action.strip() for action in listed.split(",") if action.strip()]
    if not actions or any(action not in ACTIONS for action in actions):
        raise argparse.ArgumentTypeError(f"{text!r}: the actions are {', '.join(ACTIONS)}, separated by commas")
    return bucket, cast(list[Action], actions)


def merged(grants: list[tuple[str, list[Action]]]) -> dict[str, list[Action]]:
    """The grants per bucket, a bucket named twice getting the actions of both, in the order read, write, delete."""
    buckets: dict[str, set[Action]] = {}
    for bucket, actions in grants:
        buckets.setdefault(bucket, set()).update(actions)
    return {bucket: [action for action in ACTIONS if action in actions] for bucket, actions in buckets.items()}


def described(buckets: dict[str, list[Action]]) -> str:
    return "; ".join(f"{bucket}: {', '.join(actions)}" for bucket, actions in buckets.items())


def add_entry(path: Path, entry: NewTokenEntry) -> None:
    """Add `entry` to the token file at `path`, created (mode 0600) if missing, replaced atomically.

    The file must be a valid token file without a token of the same name; what else it holds is kept.
    """
    document: dict[str, Any]
    try:
        text = path.read_text()
    except FileNotFoundError:
        document, mode = {"tokens": []}, 0o600
    except OSError as error:
        raise TokenFileError(f"cannot read {path}: {error.strerror}") from None
    else:
        try:
            TokenFile.model_validate_json(text)
        except ValidationError as error:
            raise TokenFileError(f"{path} is not a valid token file: {problems(error)}") from None
        document, mode = json.loads(text), stat.S_IMODE(path.stat().st_mode)
    if any(token["name"] == entry["name"] for token in document["tokens"]):
        raise TokenFileError(f"{path} has a token named {entry['name']!r} already; choose another name")
    document["tokens"].append(entry)
    write_atomic(path, (json.dumps(document, indent=2) + "\n").encode(), mode)


def new(arguments: argparse.Namespace) -> int:
    token, entry = new_token(arguments.name, merged(arguments.buckets) if arguments.buckets else None)
    grants = described(entry["buckets"])
    if arguments.file is None:
        print(f"token: {token}")
        print('Give the token to its user; add this entry to the "tokens" list of FILES_AUTH_TOKENS_FILE')
        print(f"(or let --file do it; it grants {grants}):")
        print(json.dumps(entry, indent=2))
        return 0
    try:
        add_entry(arguments.file, entry)
    except TokenFileError as error:
        print(f"files-service: {error}", file=sys.stderr)
        return 1
    print(token)
    print(
        f"added token {arguments.name!r} ({grants}) to {arguments.file}; restart the service to use it", file=sys.stderr
    )
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    """Add `token new` to the `files-service` parser."""
    tokens = commands.add_parser("token", help="access tokens")
    token_commands = tokens.add_subparsers(dest="token_command", required=True)
    make = token_commands.add_parser(
        "new",
        help="make a new random token: print it and its token-file entry, or add the entry to a file",
        description="Make a new random token. The token file keeps only its SHA-256 hash: the token is shown once.",
    )
    make.add_argument("name", help="a name for the token's holder, unique in the file, e.g. ci-uploader")
    make.add_argument(
        "--buckets",
        action="append",
        type=grant,
        metavar="BUCKET=ACTIONS",
        help="what the token may do, e.g. 'models=read,write,delete' or '*=read' ('*': every bucket); "
        "repeat for more buckets; actions: read, write, delete; default: *=read,write",
    )
    make.add_argument(
        "--file",
        type=Path,
        help="add the entry to this token file (created with mode 0600 if missing) and print only the token",
    )
    make.set_defaults(handler=new)
