"""The commands that prepare inputs: `raydw convert`, `raydw fetch`, `raydw data`."""
from __future__ import annotations

import sys
from pathlib import Path

from raydw.outputs import output_dir, output_file
from raydw.spec import SpecError


def cmd_convert(a) -> int:
    from raydw.models.convert import CheckpointError, convert_file

    output_file(a.output, "convert OUTPUT")
    if Path(a.input).exists() and Path(a.output).exists() and Path(a.input).resolve() == Path(a.output).resolve():
        raise SpecError(f"convert: OUTPUT {a.output} is the INPUT file; give another name (the input would be replaced)")
    try:
        info = convert_file(a.input, a.output, fmt=a.format, arch=a.arch, trust=a.trust)
    except (CheckpointError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{info['source']} ({info['format']}, sha256 {info['source_sha256']})\n"
          f"  -> {info['out']} ({info['arch']}, {info['num_classes']} classes, weights-only, sha256 {info['sha256']})")
    if info["normalizer"]:
        print(f"  the file normalized inputs inside the model with {info['normalizer']} (dropped: raydw normalizes itself)")
    return 0


def cmd_fetch(a) -> int:
    from raydw.models.convert import CheckpointError
    from raydw.models.fetch import FetchError, fetch

    if a.cache:
        output_dir(a.cache, "--cache")
    try:
        fetch(a.name, cache=a.cache, url=a.url, trust=a.trust, force=a.force)
    except (FetchError, CheckpointError, KeyError) as e:
        print(f"error: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
        return 2
    return 0


def cmd_data(a) -> int:
    from raydw.data.prepare import PrepareError, prepare, verify

    try:
        if a.data_cmd == "prepare":
            prepare(a.name, a.root)
            return 0
        bad = verify(a.name, a.root)
    except (PrepareError, KeyError, ValueError) as e:
        print(f"error: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
        return 2
    for b in bad:
        print(f"md5 mismatch: {b}")
    print(f"{a.name} under {a.root}: " + (f"{len(bad)} file(s) differ from the real ones" if bad else "all files match the real md5"))
    return 1 if bad else 0
