"""Benchmarks, run as ``python -m mlff_ins.bench NAME``; each prints its figures and the ratio
against a peer measured in the same run. Targets live here, never in timed tests."""
