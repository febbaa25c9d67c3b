#!/usr/bin/env python3
"""Interop check (needs torch, transformers, peft: run on the GPU machine or a venv that has them).

Loads an ftune output folder the way a user would: the base model folder with
AutoModelForCausalLM, the adapter with PeftModel.from_pretrained, unchanged. Then compares
PEFT's loss on a few token sequences with `ftune eval` on the same text, and the adapter's
weights with what ftune wrote.

  python3 tests/interop/check_peft_load.py --ftune build/ftune --out outputs
"""
import argparse, json, os, subprocess, sys, tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch  # noqa: E402
from peft import PeftModel  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ftune", required=True)
    ap.add_argument("--out", required=True, help="ftune train output_dir")
    args = ap.parse_args()
    base = os.path.join(args.out, "base_model")
    adapter = os.path.join(args.out, "adapter")
    model = AutoModelForCausalLM.from_pretrained(base, torch_dtype=torch.float32)
    model = PeftModel.from_pretrained(model, adapter)
    model.eval()
    tok = AutoTokenizer.from_pretrained(base)
    texts = ["The capital of France is Paris.", "2 + 2 = 4, and 3 + 5 = 8.",
             "Reverse the words: apple banana cherry."]
    total, count = 0.0, 0
    with torch.no_grad():
        for t in texts:
            ids = torch.tensor([tok.encode(t)])
            logits = model(input_ids=ids).logits[0, :-1].double()
            tgt = ids[0, 1:]
            total += torch.nn.functional.cross_entropy(logits, tgt, reduction="sum").item()
            count += tgt.numel()
    peft_loss = total / count
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "eval.jsonl")
        with open(path, "w") as f:
            for t in texts:
                f.write(json.dumps({"text": t}) + "\n")
        out = subprocess.run([args.ftune, "eval", "--model", base, "--adapter", adapter, "--data", path,
                              "--format", "text", "--device", "cpu"], capture_output=True, text=True)
        if out.returncode != 0:
            print(out.stderr)
            sys.exit(1)
        res = json.loads(out.stdout)
    # ftune's text format appends the tokenizer's EOS (tokenizer_config.json eos_token).
    eos = tok.eos_token_id
    total2, count2 = 0.0, 0
    with torch.no_grad():
        for t in texts:
            ids = torch.tensor([tok.encode(t) + [eos]])
            logits = model(input_ids=ids).logits[0, :-1].double()
            tgt = ids[0, 1:]
            total2 += torch.nn.functional.cross_entropy(logits, tgt, reduction="sum").item()
            count2 += tgt.numel()
    peft_loss_eos = total2 / count2
    rel = abs(res["loss"] - peft_loss_eos) / peft_loss_eos
    print(json.dumps({"peft_loss": peft_loss, "peft_loss_with_eos": peft_loss_eos,
                      "ftune_eval": res, "relative_difference": rel}))
    ok = rel < 1e-4 and res["tokens"] == count2
    print("peft interop: %d passed, %d failed" % (int(ok), int(not ok)))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
