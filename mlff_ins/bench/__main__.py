"""``python -m mlff_ins.bench NAME [options]``: run one benchmark."""

import argparse
import sys

BENCHMARKS = {
    "md": "mlff_ins.bench.md_bench",
    "memory": "mlff_ins.bench.memory_bench",
    "phonons": "mlff_ins.bench.phonons_bench",
    "predictor": "mlff_ins.bench.predictor_bench",
    "spectra": "mlff_ins.bench.spectra_bench",
    "teachers": "mlff_ins.bench.teachers_bench",
    "train": "mlff_ins.bench.train_bench",
}


def main(argv=None) -> int:
    import importlib

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in BENCHMARKS:   # the benchmark parses the rest, --help included
        return int(importlib.import_module(BENCHMARKS[argv[0]]).main(argv[1:]) or 0)
    parser = argparse.ArgumentParser(prog="python -m mlff_ins.bench",
                                     epilog="`python -m mlff_ins.bench NAME --help` lists the "
                                            "options of one benchmark")
    parser.add_argument("name", choices=sorted(BENCHMARKS))
    parser.parse_args(argv)
    return 2


if __name__ == "__main__":
    sys.exit(main())
