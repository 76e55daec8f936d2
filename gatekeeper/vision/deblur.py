"""A closer look at a blurred plate: the plate box deconvolved with a bank of blur kernels.

An exit camera sees a moving car: motion blur of a few pixels, or a plate out of focus. The
row finder then finds no row of separate characters and the recogniser reads mush, so the
session's plate is in no crop and the driver waits for an attendant. The blur is unknown, but
its kind is not: a short, roughly horizontal streak, or a round defocus. So the region around
the plate detector's surest box is Wiener-deconvolved with each kernel of a small bank, and each
sharpened copy is cut like the reader cuts rows (the box read whole, and the best row found
inside it). The closed-vocabulary scorer then takes whichever copy spells a session best, under
the same thresholds, calibrated on this evidence (docs/anpr.md, "Closer look").

Pure numpy/OpenCV, no I/O. Costs about 1-1.5 s CPU on a 2-core x86 (up to 45 crops to recognise), so the
lane asks for it only where it would otherwise call the attendant.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Callable

import cv2
import numpy as np

from gatekeeper.vision.plate_finder import TextRow, plate_bands, row_crop, rows_in_plate_box, stretch_contrast

Box = tuple[float, float, float, float]

#: Motion streaks (pixels, degrees from horizontal) and defocus blurs (Gaussian sigma, pixels) tried.
MOTION_LENGTHS = (4, 6, 8, 10)
MOTION_ANGLES = (-20.0, 0.0, 20.0)
DEFOCUS_SIGMAS = (1.0, 1.5, 2.0)
#: Wiener noise-to-signal ratio: lower sharpens more and rings more (0.005 / 0.02 measured, docs/anpr.md).
WIENER_K = 0.01

#: Each sharpened copy is also cut as this band of the box (share of its height, centre down it):
#: a US plate's characters, without the state's name and the dealer's text (plate_finder.plate_bands).
CLOSER_BAND = (0.55, 0.55)


def motion_kernel(length: int, angle: float) -> np.ndarray:
    """A straight streak of ``length`` pixels at ``angle`` degrees, summing to 1."""
    kernel = np.zeros((length, length), np.float32)
    kernel[length // 2, :] = 1.0 / length
    rot = cv2.getRotationMatrix2D((length / 2 - 0.5, length / 2 - 0.5), angle, 1.0)
    kernel = cv2.warpAffine(kernel, rot, (length, length))
    return kernel / max(float(kernel.sum()), 1e-6)


def defocus_kernel(sigma: float) -> np.ndarray:
    """A Gaussian blur of ``sigma`` pixels, summing to 1."""
    size = int(2 * round(3 * sigma) + 1)
    g = cv2.getGaussianKernel(size, sigma)
    return (g @ g.T).astype(np.float32)


@lru_cache(maxsize=1)
def kernel_bank() -> tuple[np.ndarray, ...]:
    """Every kernel the closer look tries: the motion streaks, then the defocus blurs."""
    motion = [motion_kernel(n, a) for n in MOTION_LENGTHS for a in MOTION_ANGLES]
    return tuple(motion + [defocus_kernel(s) for s in DEFOCUS_SIGMAS])


def wiener(grey: np.ndarray, kernel: np.ndarray, k: float = WIENER_K) -> np.ndarray:
    """``grey`` deconvolved with ``kernel`` (Wiener filter, circular): the image before that blur."""
    h, w = grey.shape[:2]
    kh, kw = kernel.shape
    if kh > h or kw > w:
        return grey
    psf = np.zeros((h, w), np.float32)
    psf[:kh, :kw] = kernel
    psf = np.roll(psf, (-(kh // 2), -(kw // 2)), axis=(0, 1))
    spectrum = np.fft.rfft2(psf)
    restore = np.conj(spectrum) / (np.abs(spectrum) ** 2 + k)
    out = np.fft.irfft2(np.fft.rfft2(grey.astype(np.float32)) * restore, s=(h, w))
    return np.clip(out, 0, 255).astype(np.uint8)


def plate_region(grey: np.ndarray, box: Box) -> tuple[np.ndarray, Box]:
    """The plate box with room around it (half a width each side, a height above and below),
    and the box in that region's pixels: enough margin for the kernels and a misplaced box."""
    x, y, w, h = box
    x0, y0 = int(max(0, x - 0.5 * w)), int(max(0, y - 1.0 * h))
    x1, y1 = int(min(grey.shape[1], x + 1.5 * w)), int(min(grey.shape[0], y + 2.0 * h))
    return grey[y0:y1, x0:x1], (x - x0, y - y0, w, h)


def deblurred_crops(
    grey: np.ndarray, box: Box, *, whole_row: Callable[[Box], TextRow], pad_x: float, pad_y: float, real_x: float,
) -> list[np.ndarray]:
    """Recogniser crops of the plate in ``box`` (full-resolution pixels), one or two per kernel.

    ``whole_row(local_box)`` is the box read whole as a row (``reader.box_row`` at scale 1);
    the best row the finder sees inside the sharpened box is cut too.
    """
    region, local = plate_region(grey, box)
    if region.size == 0 or min(region.shape[:2]) < 8:
        return []
    crops: list[np.ndarray] = []
    for kernel in kernel_bank():
        sharp = wiener(region, kernel)
        for row in [whole_row(local), *rows_in_plate_box(sharp, local, 1.0, max_rows=1)]:
            crop, _ = row_crop(sharp, row, 1.0, pad_x=pad_x, pad_y=pad_y, real_x=real_x)
            if crop.size:
                crops.append(stretch_contrast(crop))
        crops += plate_bands(sharp, local, shares=CLOSER_BAND[:1], centres=CLOSER_BAND[1:])
    return crops
