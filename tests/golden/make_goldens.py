#!/usr/bin/env python3
"""Writes the golden fixtures in tests/golden/fixtures/<variant>/ with HF Transformers + PEFT.

For each tiny random Llama-family model (see VARIANTS) it saves the HF model folder, a PEFT LoRA
adapter with random non-zero A and B, one packed batch, and what HF + PEFT compute on it: logits,
the loss, every LoRA gradient, and three AdamW steps (losses, pre-clip grad norms, final LoRA
weights). ftune's golden tests load the same folders and must reproduce these numbers.

Semantics (the reference ftune must match, src/core/batch.h): every document of the packed batch
is run through HF on its own (batch 1, no padding, positions 0..len-1), the per-document logits
are put back into the flat [N, V] layout (padding rows stay zero, logits_valid = 0), targets are
target[i] = labels[i+1] when token i+1 is in i's document else -100, and
loss = sum CE(logits[i], target[i]) / count over the targets that are not -100.

Everything runs on CPU in float32 with one thread and explicitly seeded generators, so the result
does not depend on HF's own weight init (our own re-init overwrites it) nor on the device.
No network: HF_HUB_OFFLINE is set and nothing is loaded from the hub.

Usage: python tests/golden/make_goldens.py [--out DIR] [--variant NAME ...]
"""
import argparse
import json
import math
import os
import shutil
import sys
from pathlib import Path

# PEFT stores target_modules as a set, so adapter_config.json lists them in hash order; a fixed
# hash seed makes reruns byte-identical. It must be set before the interpreter starts: re-exec.
if os.environ.get("PYTHONHASHSEED") != "0":
    os.environ["PYTHONHASHSEED"] = "0"
    os.execv(sys.executable, [sys.executable] + sys.argv)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ["CUDA_VISIBLE_DEVICES"] = ""  # the reference runs on CPU, also on the GPU machine

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

import peft  # noqa: E402
import transformers  # noqa: E402
from peft import LoraConfig, get_peft_model  # noqa: E402
from transformers import (  # noqa: E402
    AutoConfig,
    AutoModelForCausalLM,
    LlamaConfig,
    MistralConfig,
    Qwen2Config,
)

IGNORE = -100
PAD_ID = 0
ROWS, SEQ_LEN = 2, 24
# Row 0 packs two documents, row 1 holds one document followed by padding.
ROW_DOCS = [[13, 11], [20]]
PROMPT_LEN = 4  # the first tokens of every document are masked (label -100), like a prompt

# Re-init stds: HF's 0.02 gives near-uniform attention and softmax, which would hide RoPE or
# masking bugs. q/k get more so the attention scores spread (attention entropy well below uniform).
WEIGHT_STD = 0.1  # every other Linear weight
QK_STD = 0.2  # q_proj, k_proj
EMBED_STD = 0.2  # embed_tokens and lm_head (logit std around 1.5)
BIAS_STD = 0.1  # Qwen2 q/k/v biases
NORM_JITTER = 0.1  # norm weights = 1 + NORM_JITTER * randn
LORA_STD = 0.1  # lora_A and lora_B ~ N(0, LORA_STD)

OPTIM = {"lr": 1e-2, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.01,
         "max_grad_norm": 1.0}
STEPS = 3
ALL_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

COMMON = dict(vocab_size=256, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, intermediate_size=160, max_position_embeddings=512,
              initializer_range=0.02, hidden_act="silu", bos_token_id=1, eos_token_id=2,
              pad_token_id=PAD_ID)

# config_style: "v5" keeps the config.json save_pretrained writes (rope_parameters);
# "v4" rewrites it by hand into the transformers 4.x form (top-level rope_theta + rope_scaling).
VARIANTS = {
    "llama": dict(
        cls=LlamaConfig, seed=1001, config_style="v4",
        config=dict(rms_norm_eps=1e-5, tie_word_embeddings=False,
                    rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
        lora=dict(r=4, alpha=8, rslora=False, targets=ALL_TARGETS)),
    "llama_tied_rope3": dict(
        cls=LlamaConfig, seed=1002, config_style="v4",
        config=dict(rms_norm_eps=1e-5, tie_word_embeddings=True, head_dim=16,
                    rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0,
                                     "factor": 8.0, "low_freq_factor": 1.0,
                                     "high_freq_factor": 4.0,
                                     "original_max_position_embeddings": 64}),
        lora=dict(r=4, alpha=8, rslora=True, targets=ALL_TARGETS)),
    "mistral": dict(
        cls=MistralConfig, seed=1003, config_style="v5",
        config=dict(rms_norm_eps=1e-5, tie_word_embeddings=False, head_dim=16,
                    sliding_window=None,
                    rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
        lora=dict(r=4, alpha=8, rslora=False, targets=["q_proj", "v_proj"])),
    "qwen2": dict(
        cls=Qwen2Config, seed=1004, config_style="v5",
        config=dict(rms_norm_eps=1e-6, tie_word_embeddings=False, use_sliding_window=False,
                    rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}),
        lora=dict(r=4, alpha=8, rslora=False, targets=ALL_TARGETS)),
}


def fail(msg):
    raise SystemExit(f"make_goldens: {msg}")


# ---------------------------------------------------------------------------------------------
# Inputs


def make_batch(gen):
    """The packed batch, flattened to N = ROWS*SEQ_LEN tokens (layout of src/core/batch.h)."""
    input_ids, labels, position_ids, doc_start, docs = [], [], [], [], []
    for r, lengths in enumerate(ROW_DOCS):
        base = r * SEQ_LEN
        offset = 0
        for length in lengths:
            ids = torch.randint(1, COMMON["vocab_size"], (length,), generator=gen).tolist()
            start = base + offset
            docs.append((start, length))
            input_ids += ids
            labels += [IGNORE] * PROMPT_LEN + ids[PROMPT_LEN:]
            position_ids += list(range(length))
            doc_start += [start] * length
            offset += length
        for p in range(SEQ_LEN - offset):  # padding: each token its own one-token document
            input_ids.append(PAD_ID)
            labels.append(IGNORE)
            position_ids.append(0)
            doc_start.append(base + offset + p)
    n = ROWS * SEQ_LEN
    if len(input_ids) != n:
        fail(f"batch layout has {len(input_ids)} tokens, expected {n}")
    i32 = lambda v: torch.tensor(v, dtype=torch.int32)  # noqa: E731
    batch = {"input_ids": i32(input_ids), "labels": i32(labels),
             "position_ids": i32(position_ids), "doc_start": i32(doc_start),
             "rows_seq": i32([ROWS, SEQ_LEN])}
    return batch, docs


def next_token_targets(batch):
    """target[i] = labels[i+1] when i+1 is in i's document, else -100 (batch.h)."""
    labels, doc_start = batch["labels"].long(), batch["doc_start"]
    n = labels.numel()
    targets = torch.full((n,), IGNORE, dtype=torch.long)
    same_doc = doc_start[1:] == doc_start[:-1]
    targets[:-1] = torch.where(same_doc, labels[1:], torch.full_like(labels[1:], IGNORE))
    return targets


# ---------------------------------------------------------------------------------------------
# Model


def reinit_weights(model, gen):
    """Overwrites every parameter from our own generator so activations are not tiny and the
    result does not depend on HF's init order. Tied weights appear once in named_parameters."""
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            if name.endswith("norm.weight"):
                p.copy_(1.0 + NORM_JITTER * torch.randn(p.shape, generator=gen))
            elif name.endswith(".bias"):
                p.copy_(BIAS_STD * torch.randn(p.shape, generator=gen))
            elif name.endswith(("q_proj.weight", "k_proj.weight")):
                p.copy_(QK_STD * torch.randn(p.shape, generator=gen))
            elif name.endswith(("embed_tokens.weight", "lm_head.weight")):
                p.copy_(EMBED_STD * torch.randn(p.shape, generator=gen))
            elif name.endswith(".weight"):
                p.copy_(WEIGHT_STD * torch.randn(p.shape, generator=gen))
            else:
                fail(f"unexpected parameter {name}")


def rewrite_config_v4(path):
    """Turns the v5 config.json (rope_parameters) into the transformers 4.x form: top-level
    rope_theta, rope_scaling (null for default RoPE), torch_dtype instead of dtype."""
    cfg = json.loads(path.read_text())
    rope = dict(cfg.pop("rope_parameters"))
    cfg["rope_theta"] = rope.pop("rope_theta")
    rope_type = rope.get("rope_type", "default")
    extra = {k: v for k, v in rope.items() if k != "rope_type"}
    if rope_type == "default":
        if extra:
            fail(f"{path}: default RoPE with extra parameters {extra}")
        cfg["rope_scaling"] = None
    else:
        cfg["rope_scaling"] = rope  # keeps rope_type, as Llama-3.1 hub configs do
    if "dtype" in cfg:
        cfg["torch_dtype"] = cfg.pop("dtype")
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def rope_of(config):
    """The RoPE parameters HF resolved from a config, as a plain dict."""
    rp = getattr(config, "rope_parameters", None)
    if rp is None:
        fail("config has no rope_parameters (transformers < 5?)")
    return {k: v for k, v in dict(rp).items() if v is not None}


def expected_inv_freq(config):
    """RoPE inverse frequencies from the formula in shared/specs/FORMATS.md (llama3 scaling
    included), independent of HF's code."""
    rope = rope_of(config)
    d = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    inv = [1.0 / rope["rope_theta"] ** (2 * i / d) for i in range(d // 2)]
    if rope.get("rope_type", "default") == "default":
        return inv
    if rope["rope_type"] != "llama3":
        fail(f"no reference for rope_type {rope['rope_type']}")
    orig, factor = rope["original_max_position_embeddings"], rope["factor"]
    lo, hi = rope["low_freq_factor"], rope["high_freq_factor"]
    out = []
    for f in inv:
        wl = 2 * math.pi / f
        if wl < orig / hi:
            out.append(f)
        elif wl > orig / lo:
            out.append(f / factor)
        else:
            s = (orig / wl - lo) / (hi - lo)
            out.append((1 - s) * f / factor + s * f)
    scaled = sum(a != b for a, b in zip(out, inv))
    if not 0 < scaled < len(inv):
        fail(f"llama3 scaling changes {scaled} of {len(inv)} frequencies; pick other sizes")
    return out


def check_inv_freq(model, config):
    """Compares HF's rotary buffer (an internal attribute, so only when present) with ours."""
    ours = torch.tensor(expected_inv_freq(config), dtype=torch.float64)
    rotary = getattr(getattr(model, "model", None), "rotary_emb", None)
    theirs = getattr(rotary, "inv_freq", None)
    if theirs is None:
        return "not checked (no model.rotary_emb.inv_freq)"
    diff = ((theirs.double() - ours).abs() / ours).max().item()
    if diff > 1e-6:
        fail(f"HF inv_freq {theirs.tolist()} differs from the FORMATS.md formula {ours.tolist()}")
    return f"max rel diff {diff:.1e}"


# ---------------------------------------------------------------------------------------------
# Reference computation


def per_document_logits(model, batch, docs):
    """Runs each document alone (batch 1, positions 0..len-1) and scatters its logits into the
    flat [N, V] layout; padding rows stay zero."""
    n = batch["input_ids"].numel()
    vocab = COMMON["vocab_size"]
    pieces, index = [], []
    for start, length in docs:
        ids = batch["input_ids"][start:start + length].long().unsqueeze(0)
        out = model(input_ids=ids, use_cache=False)
        pieces.append(out.logits[0])
        index += list(range(start, start + length))
    valid = torch.zeros(n, dtype=torch.bool)
    valid[index] = True
    logits = torch.zeros(n, vocab, dtype=pieces[0].dtype)
    logits = logits.index_put((torch.tensor(index),), torch.cat(pieces, 0))
    return logits, valid


def loss_of(logits, targets):
    keep = targets != IGNORE
    count = int(keep.sum())
    total = F.cross_entropy(logits[keep].float(), targets[keep], reduction="sum")
    return total / count, count


def block_diagonal_check(model, batch, logits, valid):
    """Nice-to-have cross-check: the whole [ROWS, SEQ_LEN] batch with an additive 4-D
    block-diagonal causal mask and the packed position_ids must give the same logits."""
    doc = batch["doc_start"].view(ROWS, SEQ_LEN)
    pos = torch.arange(SEQ_LEN)
    allowed = (doc[:, :, None] == doc[:, None, :]) & (pos[None, :, None] >= pos[None, None, :])
    mask = torch.zeros(ROWS, 1, SEQ_LEN, SEQ_LEN)
    mask.masked_fill_(~allowed[:, None], torch.finfo(torch.float32).min)
    try:
        out = model(input_ids=batch["input_ids"].long().view(ROWS, SEQ_LEN), attention_mask=mask,
                    position_ids=batch["position_ids"].long().view(ROWS, SEQ_LEN),
                    use_cache=False)
    except Exception as e:  # the 4-D mask path is not a stable public API
        return f"skipped ({type(e).__name__}: {e})"
    packed = out.logits.reshape(-1, logits.shape[-1])
    diff = (packed[valid] - logits[valid]).abs().max().item()
    if diff > 1e-4:
        fail(f"packed 4-D-mask logits differ from per-document logits by {diff}")
    return f"max |diff| {diff:.2e}"


def adapter_key(param_name):
    """PEFT parameter name -> key in adapter_model.safetensors (drops the adapter name)."""
    for part in ("lora_A", "lora_B"):
        param_name = param_name.replace(f".{part}.default.", f".{part}.")
    return param_name


def run_reference(name, pmodel, lora, keys, batch, docs):
    """Forward + backward on the batch, then STEPS AdamW steps with gradient clipping.
    lora: sorted (name, param) of the trainable LoRA weights; keys: their adapter keys.
    Returns the tensors of expected.safetensors and the numbers of expected.json."""
    targets = next_token_targets(batch)
    for _, p in lora:
        p.grad = None
    logits, valid = per_document_logits(pmodel, batch, docs)
    loss, count = loss_of(logits, targets)
    if not math.isfinite(loss.item()):
        fail(f"{name}: loss is {loss.item()}")
    loss.backward()
    keep = targets != IGNORE
    per_token = torch.zeros(logits.shape[0])
    per_token[keep] = F.cross_entropy(logits[keep].detach(), targets[keep], reduction="none")
    expected = {"logits": logits.detach().clone(), "logits_valid": valid.to(torch.uint8),
                "targets": targets.to(torch.int32), "per_token_loss": per_token}
    for n, p in lora:
        if p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().max() == 0:
            fail(f"{name}: gradient of {n} is missing, non-finite or zero")
        if (p.grad == 0).float().mean() > 0.05:
            fail(f"{name}: gradient of {n} is mostly zero")
        expected[keys[n] + ".grad"] = p.grad.detach().clone()

    params = [p for _, p in lora]
    opt = torch.optim.AdamW(params, lr=OPTIM["lr"], betas=tuple(OPTIM["betas"]),
                            eps=OPTIM["eps"], weight_decay=OPTIM["weight_decay"],
                            foreach=False)
    losses, norms = [], []
    for _ in range(STEPS):
        opt.zero_grad(set_to_none=True)
        step_logits, _ = per_document_logits(pmodel, batch, docs)
        step_loss, _ = loss_of(step_logits, targets)  # computed before this step's update
        step_loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm=OPTIM["max_grad_norm"])
        losses.append(step_loss.item())
        norms.append(norm.item())  # the pre-clip total norm
        opt.step()
    with torch.no_grad():
        after_logits, _ = per_document_logits(pmodel, batch, docs)
        loss_after, _ = loss_of(after_logits, targets)
    for n, p in lora:
        expected[keys[n] + ".after3"] = p.detach().clone()
    if abs(losses[0] - loss.item()) > 1e-6:
        fail(f"{name}: first step loss {losses[0]} != initial loss {loss.item()}")
    if not all(math.isfinite(x) for x in losses + norms + [loss_after.item()]):
        fail(f"{name}: non-finite losses or norms {losses} {norms}")
    numbers = {"loss": loss.item(), "count": count, "losses": losses, "grad_norms": norms,
               "loss_after": loss_after.item()}
    return expected, numbers


def lora_parameters(name, pmodel):
    """Sorted (name, param) of the trainable weights, which must be exactly LoRA A/B."""
    lora = sorted(((n, p) for n, p in pmodel.named_parameters() if p.requires_grad),
                  key=lambda kv: kv[0])
    if not lora or any(".lora_A." not in n and ".lora_B." not in n for n, _ in lora):
        fail(f"{name}: trainable parameters are not exactly the LoRA weights")
    return lora


def docs_of(batch, valid):
    """(start, length) of every document that is not padding (logits_valid = 1)."""
    doc_start = batch["doc_start"].tolist()
    docs = []
    for i, s in enumerate(doc_start):
        if s == i and valid[i]:
            length = 1
            while i + length < len(doc_start) and doc_start[i + length] == i:
                length += 1
            docs.append((i, length))
    return docs


def check_variant(name, out, rtol, atol):
    """Reloads a committed fixture folder (base + adapter from disk, as a user would) and
    recomputes everything; returns the worst mismatch. Used to validate the fixtures on
    another machine or library version without rewriting them."""
    from peft import PeftModel
    want = load_file(out / "expected.safetensors")
    want_json = json.loads((out / "expected.json").read_text())
    batch = load_file(out / "inputs.safetensors")
    docs = docs_of(batch, want["logits_valid"].bool())
    base = AutoModelForCausalLM.from_pretrained(out, attn_implementation="eager",
                                                dtype=torch.float32)
    pmodel = PeftModel.from_pretrained(base, out / "adapter", is_trainable=True).eval()
    lora = lora_parameters(name, pmodel)
    keys = {n: adapter_key(n) for n, _ in lora}
    got, numbers = run_reference(name, pmodel, lora, keys, batch, docs)
    if set(got) != set(want):
        fail(f"{name}: recomputed tensors {sorted(set(got) ^ set(want))[:4]} differ in name")
    worst = 0.0
    for k, ref in want.items():
        err = ((got[k].double() - ref.double()).abs() / (atol + rtol * ref.double().abs())).max()
        worst = max(worst, err.item())
        if err > 1:
            fail(f"{name}: {k} differs beyond atol {atol} + rtol {rtol}")
    for k in ("loss", "losses", "grad_norms", "loss_after", "count"):
        a, b = torch.tensor(numbers[k], dtype=torch.float64), torch.tensor(want_json[k],
                                                                           dtype=torch.float64)
        err = ((a - b).abs() / (atol + rtol * b.abs())).max().item()
        worst = max(worst, err)
        if err > 1:
            fail(f"{name}: {k} is {numbers[k]}, fixture says {want_json[k]}")
    return worst


# ---------------------------------------------------------------------------------------------


def file_sizes(root):
    return {str(p.relative_to(root)): p.stat().st_size for p in sorted(root.rglob("*"))
            if p.is_file()}


def make_variant(name, spec, out_root):
    out = out_root / name
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    torch.manual_seed(spec["seed"])
    gen = torch.Generator().manual_seed(spec["seed"])

    # --- base model ------------------------------------------------------------------------
    config = spec["cls"](**COMMON, **spec["config"])
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager",
                                             dtype=torch.float32)
    model.eval()  # no dropout anywhere (attention_dropout is 0 as well)
    reinit_weights(model, gen)
    rope_check = check_inv_freq(model, config)
    model.save_pretrained(out, safe_serialization=True)
    base_keys = set(load_file(out / "model.safetensors"))
    if config.tie_word_embeddings and "lm_head.weight" in base_keys:
        fail(f"{name}: tied model wrote lm_head.weight")
    if not config.tie_word_embeddings and "lm_head.weight" not in base_keys:
        fail(f"{name}: untied model lacks lm_head.weight")
    if spec["config_style"] == "v4":
        rewrite_config_v4(out / "config.json")
    written = json.loads((out / "config.json").read_text())
    style = "v4" if "rope_theta" in written and "rope_parameters" not in written else "v5"
    if style != spec["config_style"]:
        fail(f"{name}: config.json is in {style} style, expected {spec['config_style']}")
    reread = AutoConfig.from_pretrained(out)
    if rope_of(reread) != rope_of(config):
        fail(f"{name}: config.json rereads as RoPE {rope_of(reread)}, not {rope_of(config)}")

    # --- inputs ----------------------------------------------------------------------------
    batch, docs = make_batch(gen)
    save_file(batch, str(out / "inputs.safetensors"))

    # The saved folder must load back into the same function (checks the v4 rewrite too).
    with torch.no_grad():
        base_logits, valid = per_document_logits(model, batch, docs)
        loaded = AutoModelForCausalLM.from_pretrained(out, attn_implementation="eager",
                                                      dtype=torch.float32).eval()
        reloaded_logits, _ = per_document_logits(loaded, batch, docs)
        if docs_of(batch, valid) != docs:
            fail(f"{name}: documents {docs} do not follow from doc_start")
        if not torch.equal(base_logits, reloaded_logits):
            fail(f"{name}: the saved model folder does not reproduce the logits")
        del loaded

    # --- LoRA ------------------------------------------------------------------------------
    lcfg = spec["lora"]
    lora_config = LoraConfig(r=lcfg["r"], lora_alpha=lcfg["alpha"], lora_dropout=0.0,
                             target_modules=list(lcfg["targets"]), use_rslora=lcfg["rslora"],
                             bias="none", task_type="CAUSAL_LM")
    pmodel = get_peft_model(model, lora_config)
    pmodel.eval()
    lora = lora_parameters(name, pmodel)
    with torch.no_grad():
        for _, p in lora:
            p.copy_(LORA_STD * torch.randn(p.shape, generator=gen))
    pmodel.save_pretrained(out / "adapter")
    readme = out / "adapter" / "README.md"  # PEFT's model card: not needed, keeps the fixture small
    if readme.exists():
        readme.unlink()
    adapter_keys = set(load_file(out / "adapter" / "adapter_model.safetensors"))
    keys = {n: adapter_key(n) for n, _ in lora}
    if set(keys.values()) != adapter_keys:
        fail(f"{name}: PEFT parameter names do not map onto adapter keys: "
             f"{sorted(set(keys.values()) ^ adapter_keys)[:4]}")
    expected_layers = COMMON["num_hidden_layers"] * len(lcfg["targets"]) * 2
    if len(adapter_keys) != expected_layers:
        fail(f"{name}: adapter has {len(adapter_keys)} tensors, expected {expected_layers}")

    with torch.no_grad():  # before run_reference, whose optimizer steps change the LoRA weights
        lora_logits, valid = per_document_logits(pmodel, batch, docs)
        check = block_diagonal_check(pmodel, batch, lora_logits, valid)
    expected, numbers = run_reference(name, pmodel, lora, keys, batch, docs)
    logits = expected["logits"]
    if not torch.equal(logits, lora_logits):
        fail(f"{name}: logits are not reproducible between two identical forwards")

    save_file({k: v.contiguous() for k, v in expected.items()},
              str(out / "expected.safetensors"))
    rope = rope_of(config)
    summary = {
        "variant": name,
        "architecture": type(model).__name__,
        **numbers,
        "optimizer": OPTIM,
        "lora": {"r": lcfg["r"], "alpha": lcfg["alpha"], "rslora": lcfg["rslora"],
                 "targets": list(lcfg["targets"]),
                 "scaling": lcfg["alpha"] / (math.sqrt(lcfg["r"]) if lcfg["rslora"]
                                             else lcfg["r"])},
        "rope": rope,
        "inv_freq": expected_inv_freq(config),
        "inv_freq_check": rope_check,
        "rms_norm_eps": config.rms_norm_eps,
        "tie_word_embeddings": bool(config.tie_word_embeddings),
        "attn_implementation": "eager",
        "seed": spec["seed"],
        "logits_std": logits[valid].std().item(),
        "block_diagonal_check": check,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "peft": peft.__version__},
        "config_style": style,
    }
    (out / "expected.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary, file_sizes(out)


def write_manifest(root):
    """fixtures/manifest.json: one line per variant folder present, what it covers."""
    manifest = {}
    for folder in sorted(p for p in root.iterdir() if (p / "expected.json").is_file()):
        s = json.loads((folder / "expected.json").read_text())
        manifest[folder.name] = {
            "architecture": s["architecture"], "config_style": s["config_style"],
            "tie_word_embeddings": s["tie_word_embeddings"], "rope": s["rope"],
            "rms_norm_eps": s["rms_norm_eps"], "lora": s["lora"], "loss": s["loss"],
            "count": s["count"], "versions": s["versions"],
            "bytes": sum(file_sizes(folder).values())}
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "fixtures")
    ap.add_argument("--variant", action="append", choices=sorted(VARIANTS),
                    help="only this variant (repeatable); default all")
    ap.add_argument("--check", action="store_true",
                    help="do not write: reload the fixtures from --out and verify that this "
                         "machine's torch/transformers/peft reproduce them within tolerance")
    ap.add_argument("--rtol", type=float, default=1e-4, help="--check: relative tolerance")
    ap.add_argument("--atol", type=float, default=1e-5, help="--check: absolute tolerance")
    args = ap.parse_args()

    transformers.utils.logging.disable_progress_bar()
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float32)
    torch.use_deterministic_algorithms(True)
    names = args.variant or list(VARIANTS)
    if args.check:
        for name in names:
            worst = check_variant(name, args.out / name, args.rtol, args.atol)
            print(f"{name:18s} reproduces the fixture: worst error {worst:.3f} of tolerance "
                  f"(atol {args.atol} + rtol {args.rtol}*|ref|)")
        print(f"checked {len(names)} variant(s) in {args.out} with torch {torch.__version__}, "
              f"transformers {transformers.__version__}, peft {peft.__version__}: OK")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    grand_total = 0
    for name in names:
        s, sizes = make_variant(name, VARIANTS[name], args.out)
        total = sum(sizes.values())
        grand_total += total
        print(f"{name:18s} {s['architecture']:18s} config {s['config_style']}  "
              f"loss {s['loss']:.6f} (count {s['count']})  "
              f"losses {[round(x, 5) for x in s['losses']]}  "
              f"norms {[round(x, 4) for x in s['grad_norms']]}  "
              f"after {s['loss_after']:.6f}\n    4-D mask check: {s['block_diagonal_check']}; "
              f"inv_freq check: {s['inv_freq_check']}")
        print("    " + ", ".join(f"{k} {v / 1024:.1f} KiB" for k, v in sizes.items())
              + f"  = {total / 1024:.1f} KiB")
    write_manifest(args.out)
    print(f"wrote {len(names)} variant(s) to {args.out} ({grand_total / 1024:.1f} KiB); "
          f"torch {torch.__version__}, transformers {transformers.__version__}, "
          f"peft {peft.__version__}")
    if grand_total > 3 * 1024 * 1024:
        fail(f"fixtures are {grand_total} bytes, over 3 MiB")


if __name__ == "__main__":
    sys.exit(main())
