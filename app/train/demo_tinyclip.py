"""Train the tiny CLIP (open_clip classes, custom config) on synthetic birds and captions.

    python -m app.train.demo_tinyclip --steps 600 --seed 0 --out assets/demo

The model is built by ``open_clip.create_model_and_transforms`` from
``assets/demo/synthbirds-tinyclip.json`` and uses open_clip's own tokenizer, so the app loads it
through the same code path as a real CLIP. It trains on the seeded pool of rendered birds shared
with the classifiers (random flips). Each image gets a random true caption: a species-name
prompt, a genus prompt, or a description of some of its attributes, named by genus or not
("a blue bird with a red crown", "a Bluebird with a red crown"). Captions
repeat within a batch and one caption can be true of many images, so the contrastive loss is
multi-positive: caption j is a positive of image i when all its claims hold for i.

Writes ``synthbirds-tinyclip.safetensors`` (fp16) and ``synthbirds-tinyclip.meta.json``
(labels, templates, measured zero-shot species and concept accuracies) into ``--out``.
Token-embedding rows of tokens that never occur in a training caption never get a gradient;
they are zeroed before saving, which changes no caption the model was trained on.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from app.models.zoo.demo_assets import (
    DEMO_DIR,
    TINYCLIP_CONFIG,
    register_tinyclip_config,
)
from app.synthbirds import (
    GROUP_NAMES,
    IMAGE_SIZE,
    MEMBERS_PER_GROUP,
    NUM_SPECIES,
    SPECIES_ATTRIBUTES,
    SPECIES_NAMES,
    caption_facts,
    describe,
    random_caption,
    render_batch,
    species_prompt,
)
from app.train.demo_common import (
    POOL_DIR,
    epoch_batches,
    flip_half,
    rendered_pool,
    seed_everything,
    to_tensor,
    warmup_cosine,
)


def build_model():
    """(model, tokenizer, mean, std) for a freshly initialised tiny CLIP."""
    import open_clip

    name = register_tinyclip_config()
    model, _, _ = open_clip.create_model_and_transforms(name, pretrained=None)
    cfg = model.visual.preprocess_cfg
    return model, open_clip.get_tokenizer(name), list(cfg["mean"]), list(cfg["std"])


def multi_positive_loss(image_features, text_features, positives, logit_scale):
    """Symmetric InfoNCE where every true (image, caption) pair counts as a positive."""
    logits = logit_scale * image_features @ text_features.T  # (N images, M captions)
    pos = positives.float()
    neg_inf = torch.finfo(logits.dtype).min

    def side(lg, ps):
        log_probs = lg.log_softmax(dim=1)
        return -(log_probs.masked_fill(ps == 0, neg_inf).logsumexp(dim=1)).mean()

    return 0.5 * (side(logits, pos) + side(logits.T, pos.T))


def batch_captions(labels: np.ndarray, rng: np.random.Generator):
    """Unique captions for a batch and the (images x captions) positives matrix."""
    texts: dict[str, dict[str, str]] = {}
    for species in labels:
        text, claims = random_caption(int(species), rng)
        texts.setdefault(text, claims)
    facts = [caption_facts(int(s)) for s in labels]
    positives = torch.tensor(
        [
            [all(f.get(k) == v for k, v in claims.items()) for claims in texts.values()]
            for f in facts
        ]
    )
    return list(texts), positives


def train_step(
    model,
    tokenizer,
    optimizer,
    images: torch.Tensor,
    labels: np.ndarray,
    rng: np.random.Generator,
    seen_tokens: set | None = None,
) -> float:
    """One step on a normalised image batch."""
    model.train()
    texts, positives = batch_captions(labels, rng)
    tokens = tokenizer(texts)
    if seen_tokens is not None:
        seen_tokens.update(torch.unique(tokens).tolist())
    image_features = model.encode_image(images, normalize=True)
    text_features = model.encode_text(tokens, normalize=True)
    loss = multi_positive_loss(image_features, text_features, positives, model.logit_scale.exp())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        model.logit_scale.clamp_(0, 4.6052)
    return loss.item()


def concept_prompts() -> dict[str, dict[str, str]]:
    """Attribute -> {colour: prompt} over every value any species has."""
    table: dict[str, dict[str, str]] = {}
    for attrs in SPECIES_ATTRIBUTES:
        for key, colour in attrs.items():
            table.setdefault(key, {})[colour] = describe({key: colour})
    return table


@torch.no_grad()
def evaluate(
    model, tokenizer, n: int, seed: int, mean, std, split: str = "test", batch_size: int = 100
) -> dict[str, float]:
    """Zero-shot species and genus accuracy (prompts "a photo of a {name}.") and concept
    accuracy: for every attribute an image has, is its true value's prompt ("a bird with a red
    crown") the best among that attribute's values?"""
    model.eval()
    species_text = model.encode_text(
        tokenizer([species_prompt(s) for s in range(NUM_SPECIES)]), normalize=True
    )
    genus_text = model.encode_text(
        tokenizer([f"a photo of a {g}." for g in GROUP_NAMES]), normalize=True
    )
    concepts = concept_prompts()
    concept_text = {
        key: (list(values), model.encode_text(tokenizer(list(values.values())), normalize=True))
        for key, values in concepts.items()
    }
    correct = genus_correct = concept_hits = concept_total = 0
    per_key: dict[str, list[int]] = {key: [0, 0] for key in concepts}
    for start in range(0, n, batch_size):
        images, labels = render_batch(range(start, min(n, start + batch_size)), seed, split)
        feats = model.encode_image(to_tensor(images, mean, std), normalize=True)
        truth = torch.from_numpy(labels)
        correct += int(((feats @ species_text.T).argmax(1) == truth).sum())
        genus_correct += int(((feats @ genus_text.T).argmax(1) == truth // MEMBERS_PER_GROUP).sum())
        for key, (values, text) in concept_text.items():
            scores = (feats @ text.T).argmax(1)
            for row, species in enumerate(labels):
                truth = SPECIES_ATTRIBUTES[species].get(key)
                if truth is None:
                    continue
                hit = int(values[int(scores[row])] == truth)
                per_key[key][0] += hit
                per_key[key][1] += 1
                concept_hits += hit
                concept_total += 1
    result = {
        "zero_shot_species_accuracy": correct / max(n, 1),
        "zero_shot_genus_accuracy": genus_correct / max(n, 1),
        "concept_accuracy": concept_hits / max(concept_total, 1),
    }
    result.update({f"concept_accuracy/{k}": h / max(t, 1) for k, (h, t) in per_key.items()})
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--pool", type=int, default=9600, help="rendered training images")
    parser.add_argument("--pool-cache", type=Path, default=POOL_DIR)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test-seed", type=int, default=1234)
    parser.add_argument("--test-size", type=int, default=960)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=DEMO_DIR)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    seed_everything(args.seed, args.threads)
    started = time.time()
    model, tokenizer, mean, std = build_model()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [
        p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)
    ]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": args.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=args.lr,
        betas=(0.9, 0.98),
    )
    warmup = max(1, args.steps // 15)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, args.steps, warmup)
    )
    images, labels = rendered_pool(args.pool, args.seed, "train", args.threads, args.pool_cache)
    rng = np.random.default_rng(np.random.SeedSequence([args.seed, 7]))
    seen_tokens: set[int] = set()
    bar = tqdm(
        epoch_batches(len(labels), args.batch_size, args.steps, args.seed),
        total=args.steps,
        desc="tiny-clip",
        disable=args.no_progress,
        mininterval=10,
    )
    running = None
    for index, flip_rng in bar:
        x = flip_half(to_tensor(images[index], mean, std), flip_rng)
        loss = train_step(model, tokenizer, optimizer, x, labels[index], rng, seen_tokens)
        scheduler.step()
        running = loss if running is None else 0.95 * running + 0.05 * loss
        bar.set_postfix(loss=f"{running:.3f}", scale=f"{model.logit_scale.exp().item():.1f}")
    train_seconds = time.time() - started

    metrics = evaluate(model, tokenizer, args.test_size, args.test_seed, mean, std)
    print(
        f"zero-shot species accuracy: {metrics['zero_shot_species_accuracy']:.4f}, "
        f"concept accuracy: {metrics['concept_accuracy']:.4f} on {args.test_size} held-out "
        f"images (split 'test', seed {args.test_seed}); training took {train_seconds:.0f} s"
    )
    for key, value in metrics.items():
        if key.startswith("concept_accuracy/"):
            print(f"  {key}: {value:.4f}")

    args.out.mkdir(parents=True, exist_ok=True)
    from safetensors.torch import save_file

    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    embedding = state["token_embedding.weight"]
    unused = torch.ones(embedding.shape[0], dtype=torch.bool)
    unused[sorted(seen_tokens)] = False
    embedding[unused] = 0
    save_file(state, str(args.out / TINYCLIP_CONFIG.stem) + ".safetensors")
    meta = {
        "open_clip_model": TINYCLIP_CONFIG.stem,
        "config": TINYCLIP_CONFIG.name,
        "labels": list(SPECIES_NAMES),
        "species_template": "a photo of a {}.",
        "genera": list(GROUP_NAMES),
        "image_size": IMAGE_SIZE,
        "mean": mean,
        "std": std,
        **metrics,
        "test_size": args.test_size,
        "test_split": "test",
        "test_seed": args.test_seed,
        "tokens_trained": len(seen_tokens),
        "train": {
            "steps": args.steps,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "weight_decay": args.weight_decay,
            "pool": args.pool,
            "seed": args.seed,
            "threads": args.threads,
            "seconds": round(train_seconds),
            "command": "python -m app.train.demo_tinyclip " + " ".join(argv or sys.argv[1:]),
        },
    }
    (args.out / (TINYCLIP_CONFIG.stem + ".meta.json")).write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {args.out / TINYCLIP_CONFIG.stem}.safetensors and .meta.json")
    return meta


if __name__ == "__main__":
    main()
