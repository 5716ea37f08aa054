"""A small visible provenance label ("AI-generated") drawn into an output image or frame."""

from __future__ import annotations

import cv2
import numpy as np

LABEL_TEXT = "AI-generated"


def draw_label(rgb: np.ndarray, text: str = LABEL_TEXT) -> np.ndarray:
    """Draw ``text`` on a dark box in the bottom-left corner. ``(H, W, 3)`` uint8 RGB in, a new array out."""
    out = np.ascontiguousarray(rgb).copy()
    h, w = out.shape[:2]
    scale = max(0.35, min(h, w) / 900)
    thick = max(1, round(scale * 2))
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    pad = max(2, th // 3)
    x0, y1 = pad, h - pad
    cv2.rectangle(out, (x0 - pad + pad, y1 - th - base - 2 * pad), (x0 + tw + 2 * pad, y1), (0, 0, 0), -1)
    cv2.putText(out, text, (x0 + pad, y1 - base - pad // 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thick,
                cv2.LINE_AA)
    return out
