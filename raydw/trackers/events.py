"""Read TensorBoard event files back (TFRecord framing of Event protos): scalars per tag and step, and the
hparams a run declares. Used to continue a resumed cell's TensorBoard run, and by the tests."""
from __future__ import annotations

import struct
from pathlib import Path


def events(folder: str | Path):
    """Every Event in the folder's event files (not its sub-folders), file by file in name (= time) order."""
    from tensorboardX.proto.event_pb2 import Event

    for f in sorted(Path(folder).glob("events.out.tfevents.*")):
        data = f.read_bytes()
        pos = 0
        while pos + 12 <= len(data):  # uint64 length, uint32 crc of it, data, uint32 crc of the data
            (n,) = struct.unpack("<Q", data[pos:pos + 8])
            body = data[pos + 12:pos + 12 + n]
            if len(body) < n:  # a record cut short by a crash: the rest of the file is not readable
                break
            e = Event()
            e.ParseFromString(body)
            yield e
            pos += 12 + n + 4


def scalars(folder: str | Path) -> dict[str, dict[int, float]]:
    """tag -> {step: value} of the scalar summaries."""
    out: dict[str, dict[int, float]] = {}
    for e in events(folder):
        for v in e.summary.value:
            if v.WhichOneof("value") == "simple_value":
                out.setdefault(v.tag, {})[e.step] = v.simple_value
    return out


def hparams(folder: str | Path) -> dict[str, object]:
    """The hparams of the run's session-start summary (the HParams plugin's)."""
    from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData

    out: dict[str, object] = {}
    for e in events(folder):
        for v in e.summary.value:
            if v.tag == "_hparams_/session_start_info":
                d = HParamsPluginData()
                d.ParseFromString(v.metadata.plugin_data.content)
                for k, val in d.session_start_info.hparams.items():
                    out[k] = getattr(val, val.WhichOneof("kind"))
    return out
