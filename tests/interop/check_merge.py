#!/usr/bin/env python3
"""Interop check for `ftune merge` (needs torch, transformers, peft: run it on the GPU machine or
in a venv that has them).

For each dtype, PEFT merges the adapter the way a user would (AutoModelForCausalLM in that
dtype, PeftModel.from_pretrained, merge_and_unload) and transformers loads ftune's merged folder
in the same dtype. Their weights and their logits on a few token sequences must agree:

  weights: per tensor, max |peft - ftune| <= rtol * |peft| + atol_rel * max|peft|
  logits:  max |peft - ftune| <= tol * max|peft logits|

  dtype   rtol     atol_rel  logits tol   why
  fp32    1e-6     1e-6      1e-4         both merge in fp32 (GEMM summation order differs)
  bf16    2^-7     2^-8      3e-2         PEFT rounds B@A to bf16 before adding it to W (two
                                          roundings), ftune rounds W + s*B@A once
  fp16    2^-10    2^-11     5e-3         as bf16, with fp16's 10-bit mantissa

  python3 tests/interop/check_merge.py --ftune build/ftune --base outputs/base_model --adapter outputs/adapter
  python3 tests/interop/check_merge.py --merged-root DIR ...   # folders DIR/merged-{fp32,bf16,fp16}
                                                               # made by `ftune merge` elsewhere
Prints "merge interop: N passed, M failed"; exit code 1 when any check fails.
"""
import argparse
import os
import subprocess
import sys
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch  # noqa: E402
import transformers  # noqa: E402
from peft import PeftModel  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
TOL = {"fp32": (1e-6, 1e-6, 1e-4), "bf16": (2 ** -7, 2 ** -8, 3e-2), "fp16": (2 ** -10, 2 ** -11, 5e-3)}


def load(path, dtype, device):
    kw = {"dtype": dtype} if int(transformers.__version__.split(".")[0]) >= 5 else {"torch_dtype": dtype}
    return AutoModelForCausalLM.from_pretrained(path, **kw).to(device).eval()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True, help="base HF model folder")
    ap.add_argument("--adapter", required=True, help="PEFT adapter folder")
    ap.add_argument("--ftune", help="ftune binary: merge here")
    ap.add_argument("--merged-root", help="folder holding merged-<dtype> folders made by ftune merge")
    ap.add_argument("--dtypes", default="fp32,bf16,fp16")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    if not args.ftune and not args.merged_root:
        ap.error("give --ftune or --merged-root")
    passed, failed = 0, 0

    def check(cond, what):
        nonlocal passed, failed
        passed += bool(cond)
        failed += not cond
        print(("ok     " if cond else "FAILED ") + what)

    with tempfile.TemporaryDirectory() as tmp:
        for name in args.dtypes.split(","):
            dt = DTYPES[name]
            if args.ftune:
                merged = os.path.join(tmp, "merged-" + name)
                r = subprocess.run([args.ftune, "merge", "--model", args.base, "--adapter", args.adapter,
                                    "--out", merged, "--dtype", name], capture_output=True, text=True)
                check(r.returncode == 0, f"{name}: ftune merge: {r.stderr.strip()[-500:]}")
                if r.returncode != 0:
                    continue
            else:
                merged = os.path.join(args.merged_root, "merged-" + name)
            peft = PeftModel.from_pretrained(load(args.base, dt, args.device), args.adapter).merge_and_unload()
            ours = load(merged, dt, args.device)
            rtol, atol_rel, ltol = TOL[name]
            ps, os_ = peft.state_dict(), ours.state_dict()
            check(sorted(ps) == sorted(os_), f"{name}: same parameter names ({len(ps)})")
            worst, worst_name = 0.0, ""
            for k in ps:
                if k not in os_:
                    continue
                a, b = ps[k].double(), os_[k].double()
                bound = rtol * a.abs() + atol_rel * a.abs().max()
                excess = ((a - b).abs() / bound.clamp_min(1e-30)).max().item()
                if excess > worst:
                    worst, worst_name = excess, k
            check(worst <= 1.0, f"{name}: weights within tolerance (worst {worst:.3g} of the bound, {worst_name})")
            g = torch.Generator().manual_seed(0)
            vocab = ours.config.vocab_size
            ids = torch.randint(0, vocab, (3, 24), generator=g).to(args.device)
            with torch.no_grad():
                lp = peft(input_ids=ids).logits.double()
                lo = ours(input_ids=ids).logits.double()
            rel = ((lp - lo).abs().max() / lp.abs().max()).item()
            check(rel <= ltol, f"{name}: logits max difference {rel:.3g} of max |logit| <= {ltol}")
            del peft, ours
    print("merge interop: %d passed, %d failed" % (passed, failed))
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
