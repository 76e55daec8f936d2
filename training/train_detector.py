"""Train the plate detector on synthetic scenes and export it to ONNX.

    python training/train_detector.py --fonts /tmp/fonts --samples 12000 --steps 4000 --seed 1 \
        --out /tmp/plate_det.onnx

A tiny fully-convolutional network (about 60 k parameters, depthwise-separable blocks,
a feature pyramid back to stride 4) maps a grey frame, brought to about 960 px on its
longer side, to a per-cell plate probability at 1/4 of that size. The runtime
(:mod:`gatekeeper.vision.plate_detector`) turns connected blobs of that map into boxes. A mask
rather than a box regression: plates are few, rarely touch, come in every aspect ratio
and perspective, and a blob's extent is the box; the training target is simply the warped
plate quad (see ``training/scene_synth.py``).

Only synthetic data: the benchmark photos are never seen here. Everything is seeded
(``--seed``); one thread by default (the machine is shared).
"""

from __future__ import annotations

import argparse
import hashlib
import math
import multiprocessing as mp
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.plate_synth import find_fonts  # noqa: E402
from training.scene_synth import STRIDE, SceneSynth  # noqa: E402


# --------------------------------------------------------------------------- network
def cbr(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class Block(nn.Module):
    """Depthwise 3x3 (optionally dilated) + pointwise, residual."""

    def __init__(self, c: int, dilation: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c, c, 3, 1, dilation, dilation=dilation, groups=c, bias=False), nn.BatchNorm2d(c),
            nn.ReLU(inplace=True), nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.body(x))


class PlateNet(nn.Module):
    """Grey image (N,1,H,W) in 0..255, H and W multiples of 32 -> plate logits (N,1,H/4,W/4)."""

    def __init__(self, width: int = 24) -> None:
        super().__init__()
        self.s2 = cbr(1, 8, 2)
        self.s4 = nn.Sequential(cbr(8, 16, 2), Block(16))
        self.s8 = nn.Sequential(cbr(16, 32, 2), Block(32), Block(32))
        self.s16 = nn.Sequential(cbr(32, 48, 2), Block(48), Block(48, 2))
        self.s32 = nn.Sequential(cbr(48, 64, 2), Block(64), Block(64, 2))
        self.lat = nn.ModuleList(nn.Conv2d(c, width, 1) for c in (16, 32, 48, 64))
        self.head = nn.Sequential(Block(width), Block(width, 2), nn.Conv2d(width, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - 128.0) / 64.0
        f4 = self.s4(self.s2(x))
        f8 = self.s8(f4)
        f16 = self.s16(f8)
        f32 = self.s32(f16)
        p = self.lat[3](f32)
        for f, lat in ((f16, self.lat[2]), (f8, self.lat[1]), (f4, self.lat[0])):
            p = F.interpolate(p, scale_factor=2.0, mode="nearest") + lat(f)
        return self.head(p)


# --------------------------------------------------------------------------- data
def _render(args: tuple[list[Path], list[Path], int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    fonts, photos, seed, count, size = args
    synth = SceneSynth(fonts, seed=seed, size=size, photos=photos)
    images = np.empty((count, size, size), np.uint8)
    masks = np.empty((count, size // STRIDE, size // STRIDE), np.float32)
    for i in range(count):
        images[i], masks[i] = synth.sample()
    return images, masks


def render_pool(fonts: list[Path], photos: list[Path], *, seed: int, count: int, size: int,
                workers: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` samples in chunks of 250, each chunk seeded from ``seed`` and its index (reproducible)."""
    chunks = [(fonts, photos, seed * 100_003 + k, min(250, count - k * 250), size)
              for k in range(math.ceil(count / 250))]
    if workers > 1:
        with mp.get_context("fork").Pool(workers) as pool:
            parts = pool.map(_render, chunks)
    else:
        parts = [_render(c) for c in chunks]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


# --------------------------------------------------------------------------- training
def loss_fn(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    bce = F.binary_cross_entropy_with_logits(logits, target, pos_weight=torch.tensor(2.0))
    p = torch.sigmoid(logits)
    inter = (p * target).sum(dim=(1, 2, 3))
    dice = 1 - (2 * inter + 1) / (p.sum(dim=(1, 2, 3)) + target.sum(dim=(1, 2, 3)) + 1)
    return bce + 0.5 * dice.mean()


@torch.no_grad()
def evaluate(net: PlateNet, images: np.ndarray, masks: np.ndarray) -> dict[str, float]:
    """Pixel precision/recall at 0.5 and plate-level recall (a plate hit when any of its cells fires)."""
    net.eval()
    tp = fp = fn = 0.0
    plates = found = empty_fired = empties = 0
    for i in range(0, len(images), 32):
        x = torch.from_numpy(images[i: i + 32]).float()[:, None]
        prob = torch.sigmoid(net(x))[:, 0].numpy()
        t = masks[i: i + 32] > 0.5
        pred = prob > 0.5
        tp += float((pred & t).sum())
        fp += float((pred & ~t).sum())
        fn += float((~pred & t).sum())
        for k in range(len(t)):
            if masks[i + k].max() < 0.2:
                empties += 1
                empty_fired += int(pred[k].any())
            else:
                plates += 1
                found += int((pred[k] & (masks[i + k] > 0.2)).any())
    net.train()
    return {"precision": tp / max(tp + fp, 1), "recall": tp / max(tp + fn, 1),
            "plate_recall": found / max(plates, 1), "empty_fired": empty_fired / max(empties, 1)}


def export(net: PlateNet, path: Path) -> str:
    """ONNX with dynamic height and width; returns its sha256."""
    net.eval()
    dummy = torch.zeros(1, 1, 544, 960)
    torch.onnx.export(net, (dummy,), str(path), input_names=["image"], output_names=["plate_logits"],
                      dynamic_axes={"image": {2: "height", 3: "width"}, "plate_logits": {2: "h4", 3: "w4"}},
                      opset_version=17, dynamo=False)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fonts", type=Path, action="append", default=[])
    parser.add_argument("--photos", type=Path, action="append", default=[],
                        help="folder of public-domain/CC0 background photos (see training/README.md)")
    parser.add_argument("--samples", type=int, default=12000)
    parser.add_argument("--val", type=int, default=500)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--render-workers", type=int, default=2, help="processes for the one-off rendering burst")
    parser.add_argument("--cache", type=Path, help="npz of rendered samples (written if missing)")
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--init", type=Path, help="start from this checkpoint (.stepN.pt) instead of random weights")
    parser.add_argument("--export-from", type=Path, help="only export this checkpoint (.stepN.pt) to --out")
    args = parser.parse_args(argv)
    if args.export_from:
        net = PlateNet()
        net.load_state_dict(torch.load(args.export_from))
        print(f"exported {args.out} sha256 {export(net, args.out)}")
        return 0

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    fonts = find_fonts(args.fonts + [Path("/usr/share/fonts/truetype/dejavu")])
    photos = sorted(p for folder in args.photos for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg"))
    t0 = time.time()
    if args.cache and args.cache.exists():
        data = np.load(args.cache)
        images, masks, val_images, val_masks = data["images"], data["masks"], data["val_images"], data["val_masks"]
    else:
        images, masks = render_pool(fonts, photos, seed=args.seed, count=args.samples, size=args.size,
                                    workers=args.render_workers)
        val_images, val_masks = render_pool(fonts, photos, seed=args.seed + 7919, count=args.val, size=args.size,
                                            workers=args.render_workers)
        if args.cache:
            np.savez(args.cache, images=images, masks=masks, val_images=val_images, val_masks=val_masks)
    print(f"data: {len(images)} train, {len(val_images)} val, {time.time() - t0:.0f} s", flush=True)

    net = PlateNet()
    if args.init:
        net.load_state_dict(torch.load(args.init))
    print(f"parameters: {sum(p.numel() for p in net.parameters())}", flush=True)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.05)
    t0 = time.time()
    running = 0.0
    for step in range(1, args.steps + 1):
        idx = rng.integers(0, len(images), args.batch)
        x = images[idx].astype(np.float32)
        y = masks[idx]
        # Cheap extra variety: mirror, and a second exposure change.
        flip = rng.random(args.batch) < 0.5
        x[flip] = x[flip, :, ::-1]
        y = y.copy()
        y[flip] = y[flip, :, ::-1]
        gain = rng.uniform(0.7, 1.3, (args.batch, 1, 1)).astype(np.float32)
        x = np.clip((x - 128) * gain + 128 + rng.uniform(-30, 30, (args.batch, 1, 1)), 0, 255).astype(np.float32)
        logits = net(torch.from_numpy(np.ascontiguousarray(x))[:, None])
        loss = loss_fn(logits, torch.from_numpy(np.ascontiguousarray(y))[:, None])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        running = 0.98 * running + 0.02 * float(loss) if step > 1 else float(loss)
        if step % 100 == 0:
            print(f"step {step} loss {running:.4f} {time.time() - t0:.0f} s", flush=True)
        if step % args.eval_every == 0 or step == args.steps:
            print(f"step {step} val {evaluate(net, val_images, val_masks)}", flush=True)
            torch.save(net.state_dict(), args.out.with_suffix(f".step{step}.pt"))
    digest = export(net, args.out)
    print(f"exported {args.out} ({args.out.stat().st_size} bytes) sha256 {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
