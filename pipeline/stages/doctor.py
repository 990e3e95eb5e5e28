"""`doctor` stage: command line → one library call.
"""
from __future__ import annotations

from pipeline.hardware import doctor


def main(argv=None) -> int:
    """`make doctor`: print what TensorFlow sees and the precision/strategy a config gets."""
    import argparse

    from pipeline.config import add_config_args, config_from_args

    parser = argparse.ArgumentParser(description="What TensorFlow sees: devices, precision, threads, strategy.")
    add_config_args(parser)
    args = parser.parse_args(argv)
    try:
        cfg = config_from_args(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"doctor: error: {err}")
        return 1
    for key, value in doctor(cfg).items():
        print(f"{key:24s} {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
