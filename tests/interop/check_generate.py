#!/usr/bin/env python3
"""Golden check of `ftune generate` against HF generate (needs torch, transformers, peft: run on
the GPU machine or a venv that has them).

For a base model and (optionally) a PEFT adapter, ftune generates greedily with --json (prompt
and generated token ids, the stop ids it uses) and HF runs
model.generate(prompt_ids, do_sample=False, eos_token_id=<ftune's stop ids>) on the same
prompt ids; the generated ids must be identical. Prompts are raw text (tokenizer(text), with
BOS) and chat turns (ftune's --chat-template auto prompt must equal
apply_chat_template(..., add_generation_prompt=True) token for token).

ftune on the CPU computes in float32, as HF does here: ids must match exactly. With
--device cuda ftune runs in bfloat16 and may legitimately part from float32 greedy decoding
after a near tie; the script then reports the common prefix and requires --min-match tokens.

  python3 tests/interop/check_generate.py --ftune build/ftune --out outputs
  python3 tests/interop/check_generate.py --ftune build/ftune --model M --adapter A --device cuda
"""
import argparse, json, os, subprocess, sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

RAW = ["The capital of France is", "Once upon a time", "1, 2, 3, 4,"]
CHAT = ["What is the capital of France?", "Name three colors.", "Write a haiku about the sea."]


def ftune_generate(args, prompt, templated):
    cmd = [args.ftune, "generate", "--model", args.model, "--prompt", prompt, "--json",
           "--max-new-tokens", str(args.max_new_tokens), "--device", args.device]
    if args.adapter:
        cmd += ["--adapter", args.adapter]
    if templated:
        cmd += ["--chat-template", "auto"]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        print(out.stderr)
        sys.exit(1)
    return json.loads(out.stdout.splitlines()[0])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ftune", required=True)
    ap.add_argument("--out", help="ftune train output_dir (base_model/ and adapter/ inside)")
    ap.add_argument("--model", help="HF model folder (instead of --out)")
    ap.add_argument("--adapter", help="PEFT adapter folder (optional)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where ftune runs")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--min-match", type=int, default=8, help="--device cuda: tokens that must agree")
    ap.add_argument("--no-chat", action="store_true", help="skip the chat-template prompts")
    args = ap.parse_args()
    if args.out:
        args.model = args.model or os.path.join(args.out, "base_model")
        if args.adapter is None and os.path.isdir(os.path.join(args.out, "adapter")):
            args.adapter = os.path.join(args.out, "adapter")
    if not args.model:
        ap.error("give --out or --model")

    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    if args.adapter:
        from peft import PeftModel
        model = PeftModel.from_pretrained(model, args.adapter)
    model.eval()
    tok = AutoTokenizer.from_pretrained(args.model)

    cases = [(p, False) for p in RAW]
    if not args.no_chat and tok.chat_template:
        cases += [(p, True) for p in CHAT]
    passed = failed = 0
    for prompt, templated in cases:
        f = ftune_generate(args, prompt, templated)
        if templated:
            want_prompt = tok.apply_chat_template([{"role": "user", "content": prompt}],
                                                  add_generation_prompt=True, tokenize=True)
            if hasattr(want_prompt, "keys"):  # transformers 5 returns a BatchEncoding
                want_prompt = want_prompt["input_ids"]
        else:
            want_prompt = tok(prompt)["input_ids"]
        problems = []
        if list(want_prompt) != f["prompt_ids"]:
            problems.append("prompt ids differ: HF %r, ftune %r" % (list(want_prompt), f["prompt_ids"]))
        ids = torch.tensor([f["prompt_ids"]])
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                 max_new_tokens=args.max_new_tokens, do_sample=False,
                                 eos_token_id=f["stop_ids"], pad_token_id=f["stop_ids"][0],
                                 temperature=None, top_p=None, top_k=None)
        hf = out[0, ids.shape[1]:].tolist()
        got = f["ids"]
        common = 0
        while common < min(len(hf), len(got)) and hf[common] == got[common]:
            common += 1
        if args.device == "cpu":
            if hf != got:
                problems.append("generated ids differ at %d: HF %r, ftune %r" %
                                (common, hf[common:common + 8], got[common:common + 8]))
        elif common < min(args.min_match, len(hf), len(got)):
            problems.append("only %d leading tokens agree (HF %r, ftune %r)" % (common, hf, got))
        print(json.dumps({"prompt": prompt, "chat": templated, "agree": common, "hf": hf,
                          "ftune": got, "ftune_text": f["text"], "ok": not problems}))
        if problems:
            failed += 1
            print("FAIL %r: %s" % (prompt, "; ".join(problems)))
        else:
            passed += 1
    print("generate interop: %d passed, %d failed" % (passed, failed))
    sys.exit(0 if failed == 0 and passed > 0 else 1)


if __name__ == "__main__":
    main()
