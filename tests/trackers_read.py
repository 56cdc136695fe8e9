"""Read what the trackers wrote, with their own formats: W&B's offline run files (the .wandb transaction log:
LevelDB-style 32 KiB blocks of records, each a wandb Record proto)."""
from __future__ import annotations

import json
import struct
from pathlib import Path

_BLOCK, _HEADER = 32768, 7


def wandb_records(path: Path):
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    pos, buf = _HEADER, b""
    while pos + 7 <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < 7:  # a block's tail too short for a record header is padding
            pos += left
            continue
        _crc, n, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if n == 0 and kind == 0:
            break
        buf += data[pos + 7:pos + 7 + n]
        pos += 7 + n
        if kind in (1, 4):  # FULL or LAST: a whole record
            r = pb.Record()
            r.ParseFromString(buf)
            buf = b""
            yield r


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)  # wandb-core writes history keys as nested_key


def wandb_runs(root: Path) -> list[dict]:
    """Each offline run under root: name, group, job_type, tags, config, history rows, summary, exit code."""
    out = []
    for f in sorted(root.glob("wandb/offline-run-*/run-*.wandb")):
        run = {"history": [], "summary": {}, "file": f}
        for r in wandb_records(f):
            t = r.WhichOneof("record_type")
            if t == "run":
                run.update(name=r.run.display_name, id=r.run.run_id, group=r.run.run_group, job_type=r.run.job_type,
                           tags=list(r.run.tags), config={i.key: json.loads(i.value_json) for i in r.run.config.update})
            elif t == "history":
                run["history"].append({_key(i): json.loads(i.value_json) for i in r.history.item})
            elif t == "summary":
                run["summary"].update({_key(i): json.loads(i.value_json) for i in r.summary.update if _key(i)})
            elif t == "exit":
                run["exit_code"] = r.exit.exit_code
        out.append(run)
    return out
