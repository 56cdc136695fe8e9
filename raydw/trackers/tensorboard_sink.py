"""TensorBoard: one run folder per cell, <logdir>/<sweep>/<label>-<cell id>, written with tensorboardX (the writer
Ray Tune's own TBX logger uses). Tuning trials sit in one folder per group, <logdir>/<sweep>/tune-<group>/, so
TensorBoard's run filter groups them. Tags and params are the run's hparams (the HParams tab); epoch rows are
scalars at step = epoch; test SA / RA are scalars test/sa, test/ra at step = the cell's epochs.
"""
from __future__ import annotations

import re
import time
from pathlib import Path

from raydw.trackers.runinfo import EPOCH_METRICS, RunInfo, final_metrics, numbers

_UNSAFE = re.compile(r"[^A-Za-z0-9._=-]+")


def run_dir(logdir: str, info: RunInfo) -> Path:
    safe = lambda s: _UNSAFE.sub("_", s).strip("_")  # noqa: E731 - labels hold spaces; folder names should not
    d = Path(logdir).expanduser() / safe(info.sweep)
    if info.group:
        d = d / f"{safe(info.group)}-{(info.tune_id or '')[:8]}"
    return d / f"{safe(info.name.removesuffix(' [tune trial]'))}-{info.cell_id}"


class TensorboardSink:
    def __init__(self, logdir: str):
        import tensorboardX  # noqa: F401 - fail here, at setup, if it is missing

        self.logdir = logdir
        self.name = f"tensorboard ({logdir})"

    def open(self, info: RunInfo):
        from tensorboardX import SummaryWriter
        from tensorboardX.summary import hparams

        from raydw.trackers.events import scalars

        d = run_dir(self.logdir, info)
        held = scalars(d).get("train_loss", {}) if d.exists() else {}  # a resumed cell continues its folder
        # The writer names its file by the second and host: a second writer in the same second (a resumed cell)
        # would overwrite the first's file, so the name also gets the time in ns.
        w = SummaryWriter(str(d), flush_secs=5, filename_suffix=f".{time.time_ns()}")
        if not held:
            h = {**info.tags, **info.params}
            exp, ssi, sei = hparams(h, {f"test/{m}": None for m in ("sa", "ra")})
            for s in (exp, ssi):
                w.file_writer.add_summary(s)
        return (w, info), (max(held) + 1 if held else 0)

    def epoch(self, handle, epoch: int, row: dict) -> None:
        w, _ = handle
        for k, v in numbers(row, EPOCH_METRICS).items():
            w.add_scalar(k, v, epoch)
        w.flush()

    def finish(self, handle, row: dict | None, status: str) -> None:
        from tensorboardX.summary import hparams

        w, info = handle
        step = int((row or {}).get("epochs") or 0)
        fm = final_metrics(row or {})
        for k, col in (("test/sa", "test_sa"), ("test/ra", "test_ra")):
            if col in fm:
                w.add_scalar(k, fm[col], step)
        for k, v in fm.items():
            if k not in ("test_sa", "test_ra"):
                w.add_scalar(f"final/{k}", v, step)
        w.add_text("status", status + (f": {str(row['error']).splitlines()[0][:500]}" if row and row.get("error") else ""), step)
        _, _, sei = hparams({"cell_id": info.cell_id}, {})
        if status == "failed":
            from tensorboardX.proto.api_pb2 import Status

            sei.value[0].metadata.plugin_data.content = _end_status(sei, Status.Value("STATUS_FAILURE"))
        w.file_writer.add_summary(sei)
        w.close()

    def close(self) -> None:
        pass

    def abandon(self, handle) -> None:
        """A run of a tracker that failed: close its writer without another word. A writer left open keeps its
        thread and an atexit hook that flush into the failing file and print a traceback each (24 lines at exit)."""
        w, _ = handle
        try:
            w.close()
        except Exception:  # noqa: BLE001 - it failed already, and that was said
            for ew in getattr(w, "all_writers", {}).values():  # tensorboardX's own flag: its atexit close does nothing
                ev = getattr(ew, "event_writer", None)
                if ev is None:
                    continue
                ev._closed = True
                try:  # its logging thread, else it outlives the queue torn down at exit and prints a traceback
                    ev._worker.stop()
                except Exception:  # noqa: BLE001
                    pass


def _end_status(sei, status) -> bytes:
    from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData

    d = HParamsPluginData()
    d.ParseFromString(sei.value[0].metadata.plugin_data.content)
    d.session_end_info.status = status
    return d.SerializeToString()
