"""Runs `ftune train` (the default job, shortened) and reads what it wrote with the real
tools: the TensorBoard event file through tensorboard's EventAccumulator, metrics.jsonl with
json, config.resolved.yaml by training from it again, and the adapter with the Python safetensors package. The loss TensorBoard shows must be the loss
metrics.jsonl holds, step by step. Prints "train outputs: N passed, M failed"."""
import glob
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
from safetensors.numpy import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def main():
    ftune = os.path.join(os.environ.get("FTUNE_BIN", "build"), "ftune")
    passed, failed = 0, 0

    def check(cond, what):
        nonlocal passed, failed
        if cond:
            passed += 1
        else:
            failed += 1
            print("FAILED:", what)

    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "out")
        r = subprocess.run([ftune, "train", "train.max_steps=12", "train.eval_steps=6",
                            "train.output_dir=" + out, "logging.console=plain"],
                           capture_output=True, text=True)
        check(r.returncode == 0, "ftune train exit code 0: " + r.stderr[-2000:])
        if r.returncode != 0:
            print("train outputs: %d passed, %d failed" % (passed, failed))
            return 1
        # Plain progress lines when stderr is not a terminal.
        check("step 12/12" in r.stderr and "\r" not in r.stderr, "plain progress lines")

        metrics = [json.loads(l) for l in open(os.path.join(out, "metrics.jsonl"))]
        steps = [m for m in metrics if "loss" in m and "eval_loss" not in m]
        evals = [m for m in metrics if "eval_loss" in m]
        check([m["step"] for m in steps] == list(range(1, 13)), "metrics.jsonl steps 1..12")
        check(len(evals) == 2, "two evaluations (steps 6 and 12)")
        for m in evals:
            check(abs(m["eval_perplexity"] - np.exp(m["eval_loss"])) < 1e-6 * m["eval_perplexity"],
                  "eval_perplexity = exp(eval_loss)")

        files = glob.glob(os.path.join(out, "tensorboard", "events.out.tfevents.*"))
        check(len(files) == 1, "one event file")
        acc = EventAccumulator(os.path.join(out, "tensorboard"))
        acc.Reload()
        tags = acc.Tags()["scalars"]
        for t in ("train/loss", "train/learning_rate", "train/grad_norm", "eval/loss"):
            check(t in tags, "tag " + t)
        tb_loss = {e.step: e.value for e in acc.Scalars("train/loss")}
        for m in steps:
            check(m["step"] in tb_loss and abs(tb_loss[m["step"]] - m["loss"]) <= 1e-6 * abs(m["loss"]),
                  "TensorBoard loss at step %d equals metrics.jsonl" % m["step"])
        tb_lr = {e.step: e.value for e in acc.Scalars("train/learning_rate")}
        for m in steps:
            check(abs(tb_lr[m["step"]] - m["lr"]) <= 1e-6 * max(m["lr"], 1e-12), "lr at step %d" % m["step"])

        adapter = load_file(os.path.join(out, "adapter", "adapter_model.safetensors"))
        cfg = json.load(open(os.path.join(out, "adapter", "adapter_config.json")))
        check(cfg["peft_type"] == "LORA" and cfg["r"] == 16, "adapter_config.json")
        check(len(adapter) == 2 * 2 * len(cfg["target_modules"]), "one A and B per layer and module")
        for k, v in adapter.items():
            check(k.startswith("base_model.model.model.layers.") and v.dtype == np.float32, k)
            if k.endswith("lora_B.weight"):
                check(np.abs(v).max() > 0, k + " trained away from zero")

        # The resolved config reloads to the same job.
        r2 = subprocess.run([ftune, "train", os.path.join(out, "config.resolved.yaml"),
                             "train.output_dir=" + os.path.join(d, "again"), "train.max_steps=1",
                             "logging.console=none"], capture_output=True, text=True)
        check(r2.returncode == 0, "config.resolved.yaml loads: " + r2.stderr[-2000:])

    print("train outputs: %d passed, %d failed" % (passed, failed))
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
