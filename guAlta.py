"""guAlta operator CLI.

    python guAlta.py demo [--out demo_output] [--frames 360] [--seed 2021]

Commands for nightly batch runs, real-time watching and the central service arrive with the client and server.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def cmd_demo(args: argparse.Namespace) -> None:
    from gualta.demo import run_demo

    run_demo(args.out, frames=args.frames, seed=args.seed, workers=args.workers)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="guAlta.py", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="simulate a night and show its difference images")
    demo.add_argument("--out", type=Path, default=Path("demo_output"), help="output folder (replaced)")
    demo.add_argument("--frames", type=int, default=360, help="frames to simulate (30 s apart)")
    demo.add_argument("--seed", type=int, default=2021)
    demo.add_argument("--workers", type=int, help="render processes (default: CPU count)")
    demo.set_defaults(run=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
