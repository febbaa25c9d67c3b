#!/usr/bin/env python3
"""Builds the repo's small Llama-3-style tokenizer for the default job (assets/tokenizer/).

A byte-level BPE configured like Llama-3's tokenizer.json (FORMATS.md §5): Split with the Llama-3
regex (behavior Isolated) + ByteLevel(add_prefix_space=false, use_regex=false), ignore_merges,
ByteLevel decoder, post-processor Sequence[ByteLevel, TemplateProcessing adding
<|begin_of_text|>]. 1,008 learned ids (256 bytes + merges) trained with HF `tokenizers` on an
English conversational corpus generated here (deterministic), then 16 special tokens at
1,008..1,023 in Llama-3.1's order (<|begin_of_text|>, <|end_of_text|>, reserved, ...,
<|finetune_right_pad_id|>, ..., <|start_header_id|>, <|end_header_id|>, <|eom_id|>,
<|eot_id|>, <|python_tag|>, reserved): vocab size 1,024.
tokenizer_config.json carries the Llama-3 Instruct chat_template, bos/eos/pad tokens.

Run: python3 assets/tokenizer/make_tokenizer.py   (rewrites both files next to this script)
"""
import json
import os
import random

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                  r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
LEARNED_VOCAB = 1008
SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
            "<|reserved_special_token_1|>", "<|finetune_right_pad_id|>",
            "<|reserved_special_token_2|>", "<|start_header_id|>", "<|end_header_id|>",
            "<|eom_id|>", "<|eot_id|>", "<|python_tag|>"] + [
                f"<|reserved_special_token_{i}|>" for i in range(3, 8)]
# Meta-Llama-3-8B-Instruct's chat_template, verbatim.
CHAT_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | "
    "trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}"
    "{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ "
    "'<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")

TOPICS = {
    "cooking": ["pasta", "bread", "soup", "rice", "salad", "oven", "recipe", "garlic", "butter",
                "flour", "sugar", "salt", "pan", "dinner", "breakfast", "vegetables"],
    "travel": ["train", "flight", "hotel", "city", "museum", "beach", "ticket", "passport",
               "map", "station", "weekend", "trip", "mountains", "river", "airport"],
    "programming": ["function", "variable", "loop", "error", "file", "python", "code", "list",
                    "string", "compiler", "test", "bug", "server", "database", "memory"],
    "math": ["number", "sum", "fraction", "equation", "angle", "triangle", "percent", "average",
             "square", "root", "graph", "probability", "integer", "ratio"],
    "health": ["sleep", "water", "exercise", "walk", "stretch", "doctor", "rest", "diet",
               "morning", "routine", "heart", "breath", "habit"],
    "books": ["novel", "author", "chapter", "story", "poem", "library", "character", "plot",
              "history", "science", "reading", "page", "series"],
    "work": ["meeting", "email", "project", "deadline", "team", "manager", "report", "plan",
             "schedule", "budget", "goal", "task", "presentation"],
}
NAMES = ["Alice", "Bob", "Maria", "Sam", "Priya", "Chen", "Omar", "Lena", "Tom", "Grace"]
OPENERS = ["Hi!", "Hello,", "Hey there.", "Good morning!", "Thanks for the help earlier.",
           "Quick question:", "I need some advice.", "Can you help me?", ""]
QUESTIONS = [
    "How do I make {a} with {b}?", "What is the best way to learn about {a}?",
    "Can you explain how {a} and {b} are related?", "Why does my {a} keep failing?",
    "What should I know before I start with {a}?", "Could you give me three tips about {a}?",
    "Is it a good idea to use {a} for {b}?", "How long does it take to get used to {a}?",
    "What's the difference between {a} and {b}?", "I'm confused about {a}. Where do I begin?",
    "Can you summarize what {a} means in simple words?", "Which is better, {a} or {b}?",
    "How many {a} do I need for {n} people?", "What happens if I skip the {a}?",
]
ANSWERS = [
    "Sure! Start with the {a}, then add the {b}. It usually takes about {n} minutes.",
    "Great question. The {a} matters most, because it shapes everything else, including the {b}.",
    "Here are a few tips:\n1. Keep the {a} simple.\n2. Check the {b} often.\n3. Practice a little every day.",
    "It depends on your goal. If you care about the {a}, focus on that first; the {b} can wait.",
    "In short, {a} is about {b}. Think of it as a step-by-step process rather than one big jump.",
    "You don't need much: a {a}, some {b}, and around {n} minutes of patience.",
    "I'd recommend reading about {a} first. After that, try a small example with {b}.",
    "That's a common problem. Usually the {a} is the cause, so double-check it before the {b}.",
    "Both work, but {a} is easier for beginners, while {b} gives you more control later.",
    "Let's break it down: first the {a}, then the {b}, and finally review what you learned.",
    "Of course. I'm happy to help, {name}. We'll go through the {a} together.",
]
CLOSERS = ["Thanks, that helps a lot!", "Great, I'll try that.", "That makes sense now.",
           "Perfect, thank you!", "Could you say more about the second point?", "Got it."]
SYSTEMS = ["You are a helpful assistant.", "You are a friendly and concise assistant.",
           "You are an expert tutor who explains things clearly.",
           "Answer briefly and politely."]


def conversation(rng):
    topic = rng.choice(list(TOPICS))
    words = TOPICS[topic]

    def fill(template):
        a, b = rng.sample(words, 2)
        return template.format(a=a, b=b, n=rng.choice([2, 3, 4, 5, 10, 12, 15, 20, 30, 45, 60,
                                                      100, 250, 1000, 2024]),
                               name=rng.choice(NAMES))

    lines = []
    if rng.random() < 0.5:
        lines.append("system\n\n" + rng.choice(SYSTEMS))
    for turn in range(rng.randrange(1, 4)):
        opener = rng.choice(OPENERS) if turn == 0 else ""
        question = fill(rng.choice(QUESTIONS))
        lines.append("user\n\n" + (opener + " " + question).strip())
        lines.append("assistant\n\n" + fill(rng.choice(ANSWERS)))
        if rng.random() < 0.4:
            lines.append("user\n\n" + rng.choice(CLOSERS))
            lines.append("assistant\n\n" + rng.choice(["You're welcome!", "Glad I could help.",
                                                     "Anytime. Good luck with the " +
                                                     rng.choice(words) + "!"]))
    # Messages laid out as the chat template renders them, without the special tokens.
    return "\n\n".join(lines)


def build():
    rng = random.Random(20240501)
    corpus = [conversation(rng) for _ in range(4000)]
    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=LEARNED_VOCAB, min_frequency=2,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(corpus, trainer)
    assert tok.get_vocab_size() == LEARNED_VOCAB, tok.get_vocab_size()
    tok.add_special_tokens(SPECIALS)
    bos_id = tok.token_to_id("<|begin_of_text|>")
    assert bos_id == LEARNED_VOCAB and tok.get_vocab_size() == 1024
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True),
        processors.TemplateProcessing(
            single="<|begin_of_text|> $A",
            pair="<|begin_of_text|> $A <|begin_of_text|>:1 $B:1",
            special_tokens=[("<|begin_of_text|>", bos_id)])])
    j = json.loads(tok.to_str())
    j["model"]["ignore_merges"] = True
    return j


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    j = build()
    with open(os.path.join(here, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(j, f, ensure_ascii=False, separators=(",", ":"))
    config = {
        "added_tokens_decoder": {
            str(t["id"]): {k: t[k] for k in ["content", "lstrip", "normalized", "rstrip",
                                             "single_word", "special"]}
            for t in j["added_tokens"]},
        "bos_token": "<|begin_of_text|>",
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": True,
        "eos_token": "<|eot_id|>",
        "model_input_names": ["input_ids", "attention_mask"],
        "model_max_length": 8192,
        "pad_token": "<|finetune_right_pad_id|>",
        "tokenizer_class": "PreTrainedTokenizerFast",
    }
    with open(os.path.join(here, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, ensure_ascii=False, indent=2)
        f.write("\n")
    print(f"wrote {here}/tokenizer.json ({len(j['model']['vocab'])} learned + "
          f"{len(j['added_tokens'])} special tokens) and tokenizer_config.json")


if __name__ == "__main__":
    main()
