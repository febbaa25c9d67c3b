"""Reads the event file written by tests/tools/write_tb_events with the real tensorboard
package and checks every tag, step and value three ways: the raw records
(LegacyEventFileLoader: TFRecord framing and CRCs, Event/Summary protos as written), the
records as TensorBoard's data path migrates them (EventFileLoader turns simple_value into a
scalar tensor of the "scalars" plugin), and EventAccumulator as the UI backend sees the run.
Prints "tensorboard events: N passed, M failed"."""
import os
import re
import subprocess
import sys
import tempfile

import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import (
    EventFileLoader,
    LegacyEventFileLoader,
)
from tensorboard.util import tensor_util


def expected_scalars():
    """tag -> [(step, float32 value)], the same formulas as write_tb_events.cpp."""
    f32 = np.float32
    exp = {"train/loss": [], "train/lr": [], "eval/loss": []}
    for s in range(1, 51):
        exp["train/loss"].append((s, f32(3.0 / (1.0 + 0.1 * s))))
        exp["train/lr"].append((s, f32(2e-4 * (1.0 - s / 50.0))))
        if s % 10 == 0:
            exp["eval/loss"].append((s, f32(2.5 - 0.01 * s)))
    edge = [0.0, -1.5, 1e30, 1e-30, 65504.5, 3.4e38]
    exp["edge/values"] = [(s, f32(v)) for s, v in enumerate(edge)] + [(1 << 40, f32(7.0))]
    return exp


def main():
    bin_dir = os.environ.get("FTUNE_BIN", "build")
    tool = os.path.join(bin_dir, "tools", "write_tb_events")
    passed, failed = 0, 0

    def check(cond, what):
        nonlocal passed, failed
        if cond:
            passed += 1
        else:
            failed += 1
            print("FAIL:", what)

    with tempfile.TemporaryDirectory() as tmp:
        log_dir = os.path.join(tmp, "tensorboard")
        out = subprocess.run([tool, log_dir], check=True, capture_output=True, text=True)
        path = out.stdout.strip()
        files = os.listdir(log_dir)
        check(files == [os.path.basename(path)], f"one event file in {log_dir}: {files}")
        check(re.fullmatch(r"events\.out\.tfevents\.\d{10}\..+\.\d+\.\d+", files[0]) is not None,
              f"file name pattern: {files[0]}")

        # Raw records through tensorboard's own TFRecord reader (checks the CRCs).
        events = list(LegacyEventFileLoader(path).Load())
        check(events[0].file_version == "brain.Event:2",
              f"first event file_version: {events[0]}")
        check(not events[0].HasField("summary"), "first event has no summary")
        expected = expected_scalars()
        n_points = sum(len(v) for v in expected.values())
        check(len(events) == 1 + n_points, f"{len(events)} events, want {1 + n_points}")

        # Every point in write order via the loader.
        got_raw = {}
        for ev in events[1:]:
            check(len(ev.summary.value) == 1, "one value per event")
            v = ev.summary.value[0]
            check(v.WhichOneof("value") == "simple_value", f"simple_value in {v.tag}")
            check(abs(ev.wall_time - events[0].wall_time) < 60, "wall_time near file creation")
            got_raw.setdefault(v.tag, []).append((ev.step, np.float32(v.simple_value)))
        for tag, points in expected.items():
            check(got_raw.get(tag) == points, f"loader: {tag}: {got_raw.get(tag)} != {points}")

        # Migrated as TensorBoard's data path does: scalar tensors of the scalars plugin.
        got_migrated = {}
        for ev in list(EventFileLoader(path).Load())[1:]:
            v = ev.summary.value[0]
            check(v.metadata.plugin_data.plugin_name == "scalars", f"scalars plugin for {v.tag}")
            arr = tensor_util.make_ndarray(v.tensor)
            check(arr.shape == () and arr.dtype == np.float32, f"{v.tag}: scalar float32 tensor")
            got_migrated.setdefault(v.tag, []).append((ev.step, np.float32(arr)))
        for tag, points in expected.items():
            check(got_migrated.get(tag) == points, f"migrated: {tag}: {got_migrated.get(tag)}")

        # As TensorBoard's backend sees the run.
        acc = EventAccumulator(log_dir, size_guidance={"scalars": 0})
        acc.Reload()
        tags = sorted(acc.Tags()["scalars"])
        check(tags == sorted(expected), f"accumulator tags {tags}")
        for tag, points in expected.items():
            got = [(e.step, np.float32(e.value)) for e in acc.Scalars(tag)]
            check(len(got) == len(points), f"{tag}: {len(got)} points, want {len(points)}")
            for (gs, gv), (ws, wv) in zip(got, points):
                check(gs == ws and gv == wv, f"{tag}: got ({gs}, {gv}) want ({ws}, {wv})")

    print(f"tensorboard events: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
