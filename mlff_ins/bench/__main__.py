"""``python -m mlff_ins.bench NAME [options]``: run one benchmark."""

import argparse
import sys

BENCHMARKS = {
    "md": "mlff_ins.bench.md_bench",
    "phonons": "mlff_ins.bench.phonons_bench",
    "spectra": "mlff_ins.bench.spectra_bench",
    "train": "mlff_ins.bench.train_bench",
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlff_ins.bench")
    parser.add_argument("name", choices=sorted(BENCHMARKS))
    args, rest = parser.parse_known_args(argv)
    import importlib
    return int(importlib.import_module(BENCHMARKS[args.name]).main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
