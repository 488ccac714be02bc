"""``collapse lm …``: model presets."""

from __future__ import annotations

import argparse
import json


def cmd_describe(args: argparse.Namespace) -> int:
    from collapse_lm.model import describe

    info = describe(args.preset, args.vocab_size)
    if args.json:
        print(json.dumps(info))
    else:
        width = max(len(key) for key in info)
        for key, value in info.items():
            print(f"{key:<{width}}  {value}")
    return 0


def add_commands(parser: argparse.ArgumentParser) -> None:
    from collapse.cli import int_at_least
    from collapse_lm.model import PRESETS

    commands = parser.add_subparsers(dest="lm_command", required=True, metavar="COMMAND")
    sub = commands.add_parser(
        "describe", help="a model preset's configuration and its parameter count",
        description="Instantiates the preset and counts its parameters (tied weights once).",
    )
    sub.add_argument("--preset", required=True, choices=sorted(PRESETS))
    sub.add_argument("--vocab-size", type=int_at_least(260, 65535), default=8000)
    sub.add_argument("--json", action="store_true", help="print one JSON object")
    sub.set_defaults(func=cmd_describe)
