"""guAlta researcher CLI: simulate nights, prepare the thesis' folder dataset, label nights by eye, index a dataset.

    python dataPreparation.py simulate --out ROOT --nights 3 [--frames F] [--scenario mixed] [--seed S]
                                       [--start 20:00] [--date YYYYMMDD] [--rates meteor=0.25,...] [--workers W]
    python dataPreparation.py prepare --nights ROOT [--test-nights YYYYMMDD,... | --test-fraction 0.25] --out DIR
                                      [--version v4] [--balance] [--seed S] [--labels CSV]... [--overwrite]
                                      [--workers W]
    python dataPreparation.py label-aid --night ROOT/YYYYMMDD --out DIR [--scores SCORES.csv]
    python dataPreparation.py index --dataset DIR
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from gualta import dataset
from gualta.cli import (clock_time, counted, event_rates, folder, night_date, night_list, non_negative_int,
                        output_folder, positive_int, run_subcommand)
# The thesis' notebooks imported its frame operations from dataPreparation.
from gualta.preprocess import (binary_difference, difference_image, make_version, pad_to_square,  # noqa: F401
                               read_gray, resize_area, subtract, threshold, to_gray)
from gualta.simulate import SCENARIOS, SimulateError


def cmd_simulate(args: argparse.Namespace) -> None:
    from gualta.simulate import simulate_nights

    nights = simulate_nights(args.out, nights=args.nights, frames=args.frames, start=args.start, seed=args.seed,
                             scenario=args.scenario, first_date=args.date, workers=args.workers, rates=args.rates,
                             keep_whole=True)           # run again after it was cut short: goes on from there
    print(f"simulate: {counted(len(nights), 'night')} ({', '.join(n.name for n in nights)}) → {args.out}")


def cmd_prepare(args: argparse.Namespace) -> None:
    nights = dataset.nights_under(args.nights)
    labels = dataset.read_label_files(args.labels)
    if args.test_nights:
        train, test = dataset.split_by_names(nights, args.test_nights)
    else:
        train, test = dataset.split_labelled_nights(nights, args.test_fraction, args.seed, labels)
    logging.getLogger("gualta.dataset").info("train nights: %s; test nights: %s",
                                             ", ".join(n.name for n in train), ", ".join(n.name for n in test))
    prepared = dataset.prepare_dataset(train, test, args.out, version=args.version, balance=args.balance,
                                       seed=args.seed, labels=labels, overwrite=args.overwrite,
                                       workers=args.workers)
    print(f"prepare: {prepared.summary()}")


def cmd_label_aid(args: argparse.Namespace) -> None:
    sheet = dataset.label_aid(args.night, args.out, args.scores)
    print(f"label-aid: {sheet.summary()}")


def cmd_index(args: argparse.Namespace) -> None:
    index = dataset.index_dataset(args.dataset)
    print(f"index: {dataset.describe_index(index)} → {args.dataset / dataset.INDEX}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dataPreparation.py", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    simulate = commands.add_parser("simulate", help="write simulated AllSky nights with ground truth")
    simulate.add_argument("--out", type=Path, required=True, metavar="ROOT",
                          help="root folder; nights go to ROOT/YYYYMMDD")
    simulate.add_argument("--nights", type=positive_int, required=True, metavar="N",
                          help="number of consecutive nights")
    simulate.add_argument("--frames", type=positive_int, help="frames a night (default: the whole night)")
    simulate.add_argument("--start", type=clock_time, default="20:00",
                          help="first frame time, HH:MM (default: %(default)s)")
    simulate.add_argument("--seed", type=non_negative_int, default=0,
                          help="night i uses seed S+i (default: %(default)s)")
    simulate.add_argument("--scenario", choices=SCENARIOS, default="mixed", help="the sky (default: %(default)s)")
    simulate.add_argument("--date", type=night_date, help="first night YYYYMMDD (default: drawn from the seed)")
    simulate.add_argument("--workers", type=positive_int, help="render processes (default: CPU count, ≤ 8)")
    simulate.add_argument("--rates", type=event_rates, metavar="KIND=RATE,...",
                          help="events per frame, e.g. meteor=0.25,satellite=0.06 (others keep their defaults)")
    simulate.set_defaults(run=cmd_simulate)

    prepare = commands.add_parser("prepare", help="build the folder dataset and index.csv from labelled nights")
    prepare.add_argument("--nights", type=folder, required=True, metavar="ROOT",
                         help="root folder of the nights (YYYYMMDD)")
    split = prepare.add_mutually_exclusive_group()
    split.add_argument("--test-nights", type=night_list, metavar="YYYYMMDD,...",
                       help="comma-separated YYYYMMDD nights for the test set")
    split.add_argument("--test-fraction", type=float, default=0.25,
                       help="fraction of the nights with labelled pairs drawn for the test set (default 0.25)")
    prepare.add_argument("--out", type=output_folder, required=True, metavar="DIR", help="dataset folder")
    prepare.add_argument("--version", choices=dataset.VERSIONS, default="v4",
                         help="the thesis' dataset version (default: %(default)s)")
    prepare.add_argument("--balance", action="store_true",
                         help="sample no-meteor training pairs down to the meteor count")
    prepare.add_argument("--seed", type=non_negative_int, default=0,
                         help="seed of the night split and the balancing (default: %(default)s)")
    prepare.add_argument("--labels", type=Path, action="append", metavar="CSV",
                         help="CSV with file,label replacing the ground_truth.csv of the nights whose frames it "
                              "names (give it again for more files)")
    prepare.add_argument("--overwrite", action="store_true", help="replace a dataset already in --out")
    prepare.add_argument("--workers", type=positive_int, default=1, help="processes, one night each")
    prepare.set_defaults(run=cmd_prepare)

    aid = commands.add_parser("label-aid", help="contact sheet (frame | difference) and labels.csv for a night")
    aid.add_argument("--night", type=folder, required=True, metavar="NIGHT_DIR", help="night folder ROOT/YYYYMMDD")
    aid.add_argument("--out", type=output_folder, required=True, metavar="DIR",
                     help="folder for index.html, labels.csv and images")
    aid.add_argument("--scores", type=Path, metavar="CSV",
                     help="the client's scores CSV of that night (guAlta.py batch --scores): pre-fills the labels "
                          "the night's ground truth does not give and marks its candidates")
    aid.set_defaults(run=cmd_label_aid)

    index = commands.add_parser("index", help="rebuild index.csv from a folder dataset")
    index.add_argument("--dataset", type=folder, required=True, metavar="DIR", help="dataset folder")
    index.set_defaults(run=cmd_index)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_subcommand(build_parser(), argv, (dataset.DatasetError, SimulateError))


if __name__ == "__main__":
    sys.exit(main())
