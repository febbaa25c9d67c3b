#!/usr/bin/env python3
"""QLoRA interop check (needs a GPU, torch, transformers, peft and bitsandbytes: the device
machine, with the bitsandbytes wheel carried as in the device tool's README).

1. Makes a bitsandbytes 4-bit copy of an HF model folder with transformers
   (BitsAndBytesConfig(load_in_4bit, nf4, double quant, compute bfloat16), save_pretrained),
   tokenizer files copied beside it.
2. Trains a LoRA adapter with ftune on that NF4 base (`ftune train model.path=<bnb copy>`, a
   few steps on the GPU in bf16), and once more from the unquantized folder with
   model.load_in_4bit=true: both runs' first-step losses must agree (quantize-on-load gives
   bitsandbytes' codes).
3. Loads the same bnb-4bit model with AutoModelForCausalLM + PeftModel.from_pretrained(adapter),
   unchanged, and compares HF + PEFT + bitsandbytes losses on a few texts with `ftune eval`:
   base model alone (what the first training step sees, LoRA B = 0) and with the trained
   adapter, at bf16 tolerance.

  python3 tests/interop/check_qlora.py --ftune build/ftune [--model DIR] [--steps 4]

Without --model it uses the built-in tiny model (ftune writes it as <out>/base_model).
Prints one JSON line and "qlora interop: N passed, M failed"; exit code 1 on any failure.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch  # noqa: E402
from peft import PeftModel  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig  # noqa: E402

TEXTS = ["The capital of France is Paris.", "2 + 2 = 4, and 3 + 5 = 8.",
         "Reverse the words: apple banana cherry.",
         "A quantized base model keeps four bits per weight and a scale per block of 64."]
TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "generation_config.json"]
REL_TOL = 2e-2  # bf16 activations on both sides, fp32 accumulation


def run(cmd):
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.stderr.write(out.stderr)
        raise SystemExit("failed: " + " ".join(cmd))
    return out


def make_bnb_copy(dense: str, dest: str):
    qc = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                            bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch.bfloat16)
    m = AutoModelForCausalLM.from_pretrained(dense, quantization_config=qc, dtype=torch.bfloat16,
                                             device_map="cuda")
    m.save_pretrained(dest, safe_serialization=True)
    for f in TOKENIZER_FILES:
        if os.path.exists(os.path.join(dense, f)):
            shutil.copy(os.path.join(dense, f), os.path.join(dest, f))


def hf_loss(model, tok):
    """Mean token cross-entropy over TEXTS, each encoded with EOS appended (ftune's text format)."""
    total, count = 0.0, 0
    with torch.no_grad():
        for t in TEXTS:
            ids = torch.tensor([tok.encode(t) + [tok.eos_token_id]], device="cuda")
            logits = model(input_ids=ids).logits[0, :-1].double()
            tgt = ids[0, 1:]
            total += torch.nn.functional.cross_entropy(logits, tgt, reduction="sum").item()
            count += tgt.numel()
    return total / count, count


def ftune_eval(ftune, model, data, adapter=None):
    cmd = [ftune, "eval", "--model", model, "--data", data, "--format", "text", "--device", "cuda"]
    if adapter:
        cmd += ["--adapter", adapter]
    return json.loads(run(cmd).stdout)


def first_loss(out_dir):
    with open(os.path.join(out_dir, "metrics.jsonl")) as f:
        for line in f:
            j = json.loads(line)
            if "loss" in j:
                return j["loss"]
    raise SystemExit("no loss in " + out_dir)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ftune", required=True)
    ap.add_argument("--model", help="unquantized HF model folder with tokenizer files")
    ap.add_argument("--steps", type=int, default=4)
    args = ap.parse_args()
    ftune = os.path.abspath(args.ftune)
    results, failures = {}, []

    def check(name, got, want, tol=REL_TOL):
        rel = abs(got - want) / max(abs(want), 1e-12)
        results[name] = {"ftune": got, "reference": want, "relative_difference": rel}
        if not rel < tol:
            failures.append(name)

    with tempfile.TemporaryDirectory() as d:
        dense = args.model
        if dense is None:
            run([ftune, "train", "train.max_steps=1", "train.output_dir=" + os.path.join(d, "seed")])
            dense = os.path.join(d, "seed", "base_model")
        bnb = os.path.join(d, "bnb4bit")
        make_bnb_copy(dense, bnb)
        data = os.path.join(d, "data.jsonl")
        with open(data, "w") as f:
            for i in range(16):
                f.write(json.dumps({"text": TEXTS[i % len(TEXTS)]}) + "\n")
        common = ["train.max_steps=%d" % args.steps, "data.train=" + data, "data.format=text",
                  "data.shuffle=false", "train.device=cuda", "model.dtype=bfloat16",
                  "train.learning_rate=1e-3", "lora.r=8", "lora.alpha=16"]
        out_bnb = os.path.join(d, "run_bnb")
        run([ftune, "train", "model.path=" + bnb, "model.tokenizer=" + bnb,
             "train.output_dir=" + out_bnb] + common)
        out_q = os.path.join(d, "run_quantize_on_load")
        run([ftune, "train", "model.path=" + dense, "model.load_in_4bit=true",
             "train.output_dir=" + out_q] + common)
        check("first_step_loss: load_in_4bit vs bnb checkpoint", first_loss(out_q),
              first_loss(out_bnb), 1e-3)

        tok = AutoTokenizer.from_pretrained(bnb)
        base = AutoModelForCausalLM.from_pretrained(bnb, dtype=torch.bfloat16, device_map="cuda")
        base.eval()
        hf_base, count = hf_loss(base, tok)
        fe = ftune_eval(ftune, bnb, data=_eval_file(d))
        check("base loss (first step, LoRA B = 0): ftune eval vs HF + bnb", fe["loss"], hf_base)
        if fe["tokens"] != count:
            failures.append("token count")
        peft_model = PeftModel.from_pretrained(base, os.path.join(out_bnb, "adapter"))
        peft_model.eval()
        hf_adapted, _ = hf_loss(peft_model, tok)
        fa = ftune_eval(ftune, bnb, data=_eval_file(d), adapter=os.path.join(out_bnb, "adapter"))
        check("adapter loss: ftune eval vs HF + PEFT + bnb", fa["loss"], hf_adapted)
        results["adapter_changes_loss"] = hf_adapted != hf_base
        if hf_adapted == hf_base:
            failures.append("adapter had no effect")
    print(json.dumps(results))
    print("qlora interop: %d passed, %d failed" % (len(results) - len(failures), len(failures)))
    for f in failures:
        print("FAILED:", f)
    sys.exit(1 if failures else 0)


def _eval_file(d):
    path = os.path.join(d, "eval.jsonl")
    if not os.path.exists(path):
        with open(path, "w") as f:
            for t in TEXTS:
                f.write(json.dumps({"text": t}) + "\n")
    return path


if __name__ == "__main__":
    main()
