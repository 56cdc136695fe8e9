"""`python -m raydw.testinputs OUT [--spec SPEC]`: write a spec's inputs (default: the paper's) under OUT in the real
formats, random content, then print how to run the spec on them. Bad input exits 2 before anything is written."""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    from raydw.cli import positive_int, spec_path
    from raydw.outputs import output_dir
    from raydw.spec import SpecError, load_spec
    from raydw.testinputs import InputsError, Sizes, plan, usage, write_inputs

    ap = argparse.ArgumentParser(prog="python -m raydw.testinputs", description=__doc__)
    ap.add_argument("out", help="folder to write into (created; its files are replaced)")
    ap.add_argument("--spec", default="paper", help="sweep YAML, or 'paper' / 'demo' (default: paper)")
    ap.add_argument("--test-images", type=positive_int, default=Sizes.test_images,
                    help=f"images per downstream test set (default {Sizes.test_images}; training sets are the real size)")
    ap.add_argument("--train-jpegs", type=positive_int, default=Sizes.train_jpegs, help="JPEGs per ImageNet class in train/")
    ap.add_argument("--val-jpegs", type=positive_int, default=Sizes.val_jpegs, help="JPEGs per ImageNet class in val/")
    ap.add_argument("--keep-published", action="store_true", help="keep the published-layout files under OUT/published")
    a = ap.parse_args(argv)
    try:
        spec = load_spec(spec_path(a.spec))
        from pathlib import Path

        plan(spec, Path(a.out).expanduser().resolve())  # refuse before creating OUT
        output_dir(a.out, "OUT")
        write_inputs(spec, a.out, Sizes(test_images=a.test_images, train_jpegs=a.train_jpegs, val_jpegs=a.val_jpegs,
                                        keep_published=a.keep_published))
    except (SpecError, InputsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(usage(a.out, a.spec))
    return 0


if __name__ == "__main__":
    sys.exit(main())
