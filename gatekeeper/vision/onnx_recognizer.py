"""The lane's recogniser: the shipped ONNX exports run by onnxruntime, without torch.

Why: torch (CPU build: ~700 MB installed, ~600 MB resident, 3-6 s to load) carried a
recogniser of a few MB. The same network exported by training/export_onnx.py runs in
onnxruntime at about half the time per crop, a fraction of the memory and a fraction of
a second's load. Each ``.onnx`` file is checked against the SHA-256 in
``recognizers.json`` before it is loaded: a truncated or swapped file fails at start-up
with the file's name, never as odd plates at the barrier.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from gatekeeper.vision.recognizer import (
    EASYOCR_RECOGNIZER_FILE,
    PLATE_RECOGNIZER,
    RECOGNIZERS,
    ModelNotFoundError,
    by_width,
    own_frames,
    pad_batch,
    prepare_crop,
)

log = logging.getLogger(__name__)

#: Where the exports and their manifest ship: beside the plate tuning they were made from.
MODELS_DIR = Path(__file__).resolve().parent / "models"
MANIFEST = "recognizers.json"
_EXPORT_HINT = "reinstall gatekeeper, or make it again with training/export_onnx.py"


def sha256_of(path: Path) -> str:
    """The file's SHA-256 (hex), read in blocks: what the model manifests and `gatekeeper doctor` compare."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def manifest_entry(folder: Path, name: str) -> dict[str, Any]:
    """The manifest's record for recogniser ``name`` in ``folder``, or a clear error."""
    path = folder / MANIFEST
    if not path.is_file():
        hint = ""
        if (folder / EASYOCR_RECOGNIZER_FILE).is_file():
            hint = f"; {folder} holds EasyOCR's torch weights: set anpr.runtime = \"torch\" to use them"
        raise ModelNotFoundError(f"recogniser manifest {path} not found: {_EXPORT_HINT}{hint}")
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))["recognizers"][name]
        missing = [key for key in ("file", "sha256", "alphabet", "input_height") if key not in entry]
        if missing:
            raise KeyError(", ".join(missing))
    except KeyError as exc:
        raise ModelNotFoundError(f"recogniser manifest {path} has no usable entry for {name!r} ({exc}): "
                                 f"{_EXPORT_HINT}") from None
    except (OSError, ValueError, TypeError) as exc:
        raise ModelNotFoundError(f"recogniser manifest {path} is unreadable ({exc}): {_EXPORT_HINT}") from None
    return entry


def verified_model(folder: Path, name: str) -> tuple[Path, dict[str, Any]]:
    """The ``.onnx`` file of ``name`` after its SHA-256 matched the manifest, and its record."""
    entry = manifest_entry(folder, name)
    path = folder / entry["file"]
    if not path.is_file():
        raise ModelNotFoundError(f"recogniser model {path} not found: {_EXPORT_HINT}")
    if sha256_of(path) != entry["sha256"]:
        raise ModelNotFoundError(
            f"recogniser model {path} does not match its checksum in {folder / MANIFEST} (altered or "
            f"truncated): {_EXPORT_HINT}"
        )
    return path, entry


class OnnxRecognizer:
    """``english_g2`` or ``plate_g2`` (see :mod:`gatekeeper.vision.recognizer`) through onnxruntime.

    Crops are prepared, batched by width and trimmed exactly as the torch recogniser does
    it (shared functions), so the reader cannot tell the two apart except by speed.
    One instance per process: the daemon's lanes share one reader.
    """

    def __init__(
        self,
        *,
        name: str = PLATE_RECOGNIZER,
        model_dir: Path | None = None,
        threads: int = 2,
        max_width: int = 640,
    ) -> None:
        if name not in RECOGNIZERS:
            raise ValueError(f"unknown recogniser {name!r}: expected one of {', '.join(RECOGNIZERS)}")
        started = time.perf_counter()
        path, entry = verified_model(Path(model_dir) if model_dir is not None else MODELS_DIR, name)
        import onnxruntime as ort

        options = ort.SessionOptions()
        # Threads per reader from config: one busy lane must not starve the other lane,
        # the sync and the watchdog. Inter-op parallelism buys nothing for this chain graph.
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Every crop width is a new shape: a memory pattern planned for one is useless for the next.
        options.enable_mem_pattern = False
        # The CPU arena would keep the largest batch's buffers for good: without it the
        # benchmark peaks 19 MB lower (214 -> 195 MB) at the same CPU per read.
        options.enable_cpu_mem_arena = False
        # Idle pool threads sleep instead of spinning: the spin is CPU taken from the other
        # lane, the camera and the sync (four crops, 2 threads: 112 ms CPU spinning, 81 without).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # checksum matched but the runtime refuses it (e.g. too old onnxruntime)
            raise ModelNotFoundError(f"recogniser model {path} cannot be loaded by onnxruntime "
                                     f"{ort.__version__}: {exc}") from exc
        self._input = self._session.get_inputs()[0].name
        self.alphabet: str = entry["alphabet"]
        self.input_height: int = int(entry["input_height"])
        self.name = name
        self.path = path
        self.threads = threads
        self._max_width = max_width
        self.load_seconds = time.perf_counter() - started
        log.info("recogniser %s loaded from %s in %.2f s", name, path, self.load_seconds)

    def probabilities(self, crops: Sequence[np.ndarray]) -> list[np.ndarray]:
        if self._session is None:
            raise RuntimeError("recogniser is closed")
        prepared = [prepare_crop(c, height=self.input_height, max_width=self._max_width) for c in crops]
        return by_width(prepared, self._run)

    def _run(self, prepared: list[np.ndarray]) -> list[np.ndarray]:
        batch = pad_batch(prepared)
        probs = self._session.run(None, {self._input: batch})[0]
        # Frames past the crop's own width only saw padding: drop them.
        return [probs[i, : own_frames(probs.shape[1], p.shape[1], batch.shape[3])] for i, p in enumerate(prepared)]

    def close(self) -> None:
        self._session = None


#: ``anpr.runtime``: ``onnx`` (the default, no torch) or ``torch`` (the ``train`` extra).
RUNTIMES = ("onnx", "torch")


def load_recognizer(
    *,
    runtime: str = "onnx",
    name: str = PLATE_RECOGNIZER,
    model_dir: Path | None = None,
    threads: int = 2,
    tuning_file: Path | None = None,
) -> Any:
    """The recogniser ``anpr.runtime`` names; torch is imported only for ``runtime="torch"``."""
    if runtime == "onnx":
        if tuning_file is not None:
            raise ValueError(
                "anpr.tuning_file needs anpr.runtime = \"torch\"; for the ONNX runtime export it with "
                "training/export_onnx.py --tuning-file FILE --out DIR and set anpr.model_dir = DIR"
            )
        return OnnxRecognizer(name=name, model_dir=model_dir, threads=threads)
    if runtime == "torch":
        try:
            import torch  # noqa: F401
        except ImportError:
            raise ModelNotFoundError(
                "anpr.runtime = \"torch\" needs torch and easyocr: pip install 'gatekeeper[train]'"
            ) from None
        from gatekeeper.vision.recognizer import EasyOcrRecognizer

        return EasyOcrRecognizer(model_dir=model_dir, threads=threads, name=name, tuning_file=tuning_file)
    raise ValueError(f"unknown recogniser runtime {runtime!r}: expected one of {', '.join(RUNTIMES)}")
