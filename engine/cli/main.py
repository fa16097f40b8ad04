"""``python run_engine.py [live options]`` plays live; ``run_engine.py COMMAND ...`` runs an
offline command.

Every user mistake (missing or unreadable file, wrong kind of checkpoint, bad option) ends
with one line ``error: ...`` on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

import torch

from engine.cli import live, offline, sessions, train
from engine.cli.commands import COMMANDS
from engine.cli.compute_flags import DEFAULT_THREADS
from engine.errors import UserError

SUBCOMMANDS = COMMANDS
_GLOBAL_OPTIONS = {"--threads": 1}  # options of the command parser before COMMAND: arity


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run_engine.py",
        description="encodecgpt-live: EnCodec tokens, EnCodecMAE prompts, EnCodecGPT generation.")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    offline.add_parsers(sub)
    sessions.add_parsers(sub)
    train.add_parsers(sub)
    return parser


def command_of(argv: list[str]) -> str | None:
    """The offline command ``argv`` names, or None to play live.

    A command is the first word after the command parser's own options (``--threads N``);
    anywhere else a command's name is an option's value (``--record train``,
    ``--prompt-dir plot``) and the line plays live.
    """
    i = 0
    while i < len(argv) and argv[i].split("=", 1)[0] in _GLOBAL_OPTIONS:
        i += 1 if "=" in argv[i] else 1 + _GLOBAL_OPTIONS[argv[i]]
    if i < len(argv) and argv[i] in SUBCOMMANDS:
        return argv[i]
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if command_of(argv) is None:
        return _guard(lambda: live.cmd_live(argv))
    args = build_parser().parse_args(argv)
    return _guard(lambda: _offline(args))


def _guard(run: Callable[[], int]) -> int:
    try:
        return run()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _offline(args: argparse.Namespace) -> int:
    threads = args.threads or (DEFAULT_THREADS if args.command in ("replay", "render") else None)
    if threads:  # replay and render run two threads (generator, decoder) as live: 1 op thread
        torch.set_num_threads(threads)
    return {"encode": offline.cmd_encode, "embed": offline.cmd_embed,
            "render": offline.cmd_render, "replay": sessions.cmd_replay,
            "recover": sessions.cmd_recover, "plot": sessions.cmd_plot,
            "prepare": train.cmd_prepare, "train": train.cmd_train,
            "export": train.cmd_export}[args.command](args)
