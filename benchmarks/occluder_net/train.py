"""Train the occluder net (faceweave/models/occluder_net.py) on synthetic occluders over captured face crops.

    PYTHONPATH=$PWD python benchmarks/occluder_net/capture.py --out .occnet/crops.npz
    PYTHONPATH=$PWD python benchmarks/occluder_net/train.py --data .occnet/crops.npz \
        --out .occnet/occluder_net.safetensors --seconds 370 --batch 64 --workers 15 --device cuda

(the run of docs/quality.md: an H100 with 16 cores, 10 115 steps of 64 in 370 s; the samples' drawing, on 15
worker processes, was the bound.)

Every sample is a captured crop of a tune person (capture.py), moved (rotation, scale, shift, a smooth random
displacement for another face shape; the mesh's masks jittered apart from the image as a mesh misplaced by an occluder
is), its skin tone, hue and exposure changed, with zero to two occluders drawn on it by this file's own generator:

- a flat patch (rectangle, ellipse or polygon) in the face's own skin colour, another face's, or any colour;
- a textured object (a bar, an ellipse or a polygon) cut from a Big Buck Bunny frame or a photo's background;
- a hand: a palm and fingers of random size and pose, filled with the skin of another crop or of the face itself;
- hair: bundles of curved strands 0.7-3 px wide, dark, brown, grey or fair, across the forehead and eyes.

Two samples in seven carry no occluder (the net must keep nothing on a plain face). The label is the
occluder's coverage; the loss is binary cross-entropy, weighted to the face mask (grown) where the swap reads it.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from faceweave.models.occluder_net import GRID, OccluderNet, occluder_input

G = GRID


class Sampler:
    """Draws ``(image (G,G,3) float32 [0,1], masks (G,G,4) float32, label (G,G) float32)`` training samples."""

    def __init__(self, crops: np.ndarray, textures: np.ndarray, seed: int) -> None:
        self.crops, self.textures = crops, textures
        self.rng = np.random.default_rng(seed)

    # -- the face --------------------------------------------------------------------------------------------
    def _face(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        rng = self.rng
        c = self.crops[k].astype(np.float32) / 255
        if rng.random() < 0.5:
            c = c[:, ::-1]
        angle, scale = rng.uniform(-15, 15), rng.uniform(0.85, 1.15)
        m = cv2.getRotationMatrix2D((G / 2, G / 2), angle, scale)
        m[:, 2] += rng.uniform(-6, 6, 2)
        c = cv2.warpAffine(np.ascontiguousarray(c), m, (G, G), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        if rng.random() < 0.7:  # another face shape: a smooth random displacement, image and masks alike
            c = self._elastic(c, rng.uniform(1.0, 3.5))
        image, masks = c[..., :3], c[..., 3:]
        if rng.random() < 0.7:  # the mesh misplaced a little
            j = np.float32([[1, 0, rng.uniform(-2.5, 2.5)], [0, 1, rng.uniform(-2.5, 2.5)]])
            masks = cv2.warpAffine(masks, j, (G, G), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        return self._tone(image), masks

    def _elastic(self, c: np.ndarray, amplitude: float) -> np.ndarray:
        rng = self.rng
        field = cv2.resize(rng.normal(0, 1, (6, 6, 2)).astype(np.float32), (G, G), interpolation=cv2.INTER_CUBIC)
        yy, xx = np.mgrid[0:G, 0:G].astype(np.float32)
        return cv2.remap(c, xx + amplitude * field[..., 0], yy + amplitude * field[..., 1], cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REFLECT)

    def _tone(self, rgb: np.ndarray) -> np.ndarray:
        """Another skin tone and exposure: LAB lightness scaled, (a, b) rotated and shifted, a smooth colour field."""
        rng = self.rng
        lab = cv2.cvtColor(np.clip(rgb, 0, 1).astype(np.float32), cv2.COLOR_RGB2LAB)
        lab[..., 0] *= rng.uniform(0.45, 1.15)
        a, b = lab[..., 1].copy(), lab[..., 2].copy()
        t, gain = math.radians(rng.uniform(-30, 30)), rng.uniform(0.6, 1.4)
        lab[..., 1] = gain * (a * math.cos(t) - b * math.sin(t)) + rng.uniform(-6, 8)
        lab[..., 2] = gain * (a * math.sin(t) + b * math.cos(t)) + rng.uniform(-10, 12)
        field = cv2.resize(rng.normal(0, 1, (4, 4, 3)).astype(np.float32), (rgb.shape[1], rgb.shape[0]),
                           interpolation=cv2.INTER_CUBIC)
        lab += field * (rng.uniform(0, 6), rng.uniform(0, 4), rng.uniform(0, 4))
        return np.clip(cv2.cvtColor(lab, cv2.COLOR_LAB2RGB), 0, 1)

    def _box(self, masks: np.ndarray) -> tuple[float, float, float, float]:
        ys, xs = np.nonzero(masks[..., 0] > 0.5)
        if len(ys) == 0:
            return G * 0.3, G * 0.7, G * 0.3, G * 0.7
        return float(ys.min()), float(ys.max()), float(xs.min()), float(xs.max())

    def _skin_texture(self, scale: float, own: np.ndarray | None = None) -> np.ndarray:
        """Skin of another crop (or ``own``, this sample's crop and masks), magnified around its cheeks, toned:
        ``(G, G, 3)``."""
        rng = self.rng
        o = own if own is not None else self.crops[rng.integers(len(self.crops))].astype(np.float32) / 255
        ys, xs = np.nonzero(o[..., 4] > 0.5)  # the skin mask
        cy, cx = (ys.mean(), xs.mean()) if len(ys) else (G / 2, G / 2)
        m = cv2.getRotationMatrix2D((cx, cy), rng.uniform(0, 360), scale)
        m[:, 2] += (G / 2 - cx, G / 2 - cy)
        skin = cv2.warpAffine(np.ascontiguousarray(o[..., :3]), m, (G, G), borderMode=cv2.BORDER_REFLECT)
        return self._tone(skin) if own is None or rng.random() < 0.3 else skin

    def _other_texture(self) -> np.ndarray:
        rng = self.rng
        if rng.random() < 0.7:
            t = self.textures[rng.integers(len(self.textures))].astype(np.float32) / 255
            s = rng.uniform(0.6, 2.0)
            t = cv2.resize(t, None, fx=s, fy=s)
            if t.shape[0] < G or t.shape[1] < G:
                t = cv2.resize(t, (max(G, t.shape[1]), max(G, t.shape[0])))
        else:  # a photo's background: the crop's margin, outside the face
            o = self.crops[rng.integers(len(self.crops))].astype(np.float32) / 255
            t = cv2.resize(o[:40, :, :3], (G * 2, 80))
            t = np.concatenate([t, t[::-1]] * 2, 0)
        y, x = rng.integers(0, t.shape[0] - G + 1), rng.integers(0, t.shape[1] - G + 1)
        return t[y:y + G, x:x + G, :3].copy()

    # -- the occluders ---------------------------------------------------------------------------------------
    def _shape(self, box: tuple[float, float, float, float], kind: str) -> np.ndarray:
        rng = self.rng
        y0, y1, x0, x1 = box
        size = max(y1 - y0, x1 - x0)
        canvas = np.zeros((G * 4, G * 4), np.uint8)  # drawn at 4× and shrunk: antialiased edges
        cy, cx = rng.uniform(y0, y1), rng.uniform(x0, x1)
        if kind == "rect":
            w, h = rng.uniform(0.15, 0.6) * size, rng.uniform(0.12, 0.5) * size
            pts = cv2.boxPoints(((cx, cy), (w, h), rng.choice([0, 0, rng.uniform(-40, 40)])))
            cv2.fillPoly(canvas, [np.int32(pts * 4)], 255)
        elif kind == "ellipse":
            cv2.ellipse(canvas, (int(cx * 4), int(cy * 4)),
                        (int(rng.uniform(0.08, 0.3) * size * 4), int(rng.uniform(0.06, 0.25) * size * 4)),
                        rng.uniform(0, 180), 0, 360, 255, -1)
        elif kind == "poly":
            n = rng.integers(3, 8)
            ang = np.sort(rng.uniform(0, 2 * np.pi, n))
            r = rng.uniform(0.1, 0.35, n) * size
            pts = np.stack([cx + r * np.cos(ang), cy + r * np.sin(ang)], 1)
            cv2.fillPoly(canvas, [np.int32(pts * 4)], 255)
        elif kind == "bar":  # a microphone, a pen, a cup's edge: a capsule from outside the face inward
            a = rng.uniform(0, 2 * np.pi)
            length, width = rng.uniform(0.4, 1.2) * size, rng.uniform(0.08, 0.25) * size
            p0 = (cx, cy)
            p1 = (cx + length * np.cos(a), cy + length * np.sin(a))
            cv2.line(canvas, (int(p0[0] * 4), int(p0[1] * 4)), (int(p1[0] * 4), int(p1[1] * 4)), 255,
                     int(width * 4))
            cv2.circle(canvas, (int(p0[0] * 4), int(p0[1] * 4)), int(width * 2), 255, -1)
        elif kind == "hand":
            s = rng.uniform(0.3, 0.7) * size
            a = rng.uniform(0, 2 * np.pi)
            ca, sa = np.cos(a), np.sin(a)

            def at(u: float, v: float) -> tuple[int, int]:  # hand coordinates (u across, v along) → canvas
                return int((cx + u * ca - v * sa) * 4), int((cy + u * sa + v * ca) * 4)

            cv2.ellipse(canvas, at(0, 0), (int(s * 0.42 * 4), int(s * 0.5 * 4)), math.degrees(a), 0, 360, 255, -1)
            for k in range(4):
                u = (k - 1.5) * s * 0.22
                length = s * rng.uniform(0.55, 0.85)
                cv2.line(canvas, at(u, -s * 0.3), at(u + rng.uniform(-0.1, 0.1) * s, -s * 0.3 - length), 255,
                         int(s * rng.uniform(0.15, 0.2) * 4))
            if rng.random() < 0.7:  # the thumb
                cv2.line(canvas, at(s * 0.35, s * 0.1), at(s * 0.8, -s * 0.3), 255, int(s * 0.2 * 4))
            if rng.random() < 0.5:  # the wrist, out of the frame
                cv2.line(canvas, at(0, s * 0.3), at(0, s * 2.5), 255, int(s * 0.6 * 4))
        return cv2.resize(canvas, (G, G), interpolation=cv2.INTER_AREA).astype(np.float32) / 255

    def _shade(self, fill: np.ndarray) -> np.ndarray:
        rng = self.rng
        yy, xx = np.mgrid[0:G, 0:G].astype(np.float32) / G
        g = 1 + rng.uniform(-0.25, 0.25) * (xx - 0.5) + rng.uniform(-0.25, 0.25) * (yy - 0.5)
        return np.clip(fill * g[..., None], 0, 1)

    def _flat(self, image: np.ndarray, masks: np.ndarray, box) -> tuple[np.ndarray, np.ndarray]:  # noqa: ANN001
        rng = self.rng
        alpha = self._shape(box, rng.choice(["rect", "rect", "ellipse", "poly"]))
        u = rng.random()
        if u < 0.45:  # the face's own skin colour (the hardest for colour cues)
            w = masks[..., 1:2]
            colour = (image * w).sum((0, 1)) / max(float(w.sum()), 1) * rng.uniform(0.92, 1.08, 3)
        elif u < 0.7:
            colour = np.median(self._skin_texture(1.0).reshape(-1, 3), 0)
        else:
            colour = rng.uniform(0, 1, 3)
        fill = np.broadcast_to(colour, (G, G, 3)).astype(np.float32)
        if rng.random() < 0.5:
            fill = self._shade(fill)
        fill = fill + rng.normal(0, rng.uniform(0, 0.01), fill.shape).astype(np.float32)
        return fill, alpha

    def _object(self, image, masks, box) -> tuple[np.ndarray, np.ndarray]:  # noqa: ANN001
        alpha = self._shape(box, self.rng.choice(["bar", "bar", "ellipse", "poly", "rect"]))
        return self._shade(self._other_texture()), alpha

    def _hand(self, image, masks, box) -> tuple[np.ndarray, np.ndarray]:  # noqa: ANN001
        rng = self.rng
        alpha = self._shape(box, "hand")
        # half the hands are the face's own skin: the net must see the hand's outline and the face's structure
        # under it, not a skin it does not know (a net taught only foreign skin called an unseen person's face a hand)
        own = np.concatenate([image, masks], -1) if rng.random() < 0.5 else None
        fill = self._shade(self._skin_texture(rng.uniform(1.3, 2.5), own))
        if rng.random() < 0.5:  # a hand lit like the face: the target's own skin level
            w = masks[..., 1:2]
            own = (image * w).sum((0, 1)) / max(float(w.sum()), 1)
            fill = np.clip(fill * own / np.maximum(np.median(fill.reshape(-1, 3), 0), 1e-3), 0, 1)
        if rng.random() < 0.5:
            fill = cv2.GaussianBlur(fill, (0, 0), rng.uniform(0.5, 1.5))
        return fill, alpha

    def _hair(self, image, masks, box) -> tuple[np.ndarray, np.ndarray]:  # noqa: ANN001
        rng = self.rng
        y0, y1, x0, x1 = box
        size = max(y1 - y0, x1 - x0)
        canvas = np.zeros((G * 4, G * 4), np.float32)
        base = rng.choice([rng.uniform(0.02, 0.15, 3), rng.uniform(0.15, 0.35, 3) * (1.0, 0.8, 0.6),
                           rng.uniform(0.5, 0.8, 3) * (1.0, 0.9, 0.7), np.full(3, rng.uniform(0.5, 0.8))])
        fill = np.broadcast_to(base, (G, G, 3)).astype(np.float32) * rng.uniform(0.8, 1.2, (G, G, 1))
        for _ in range(rng.integers(1, 4)):  # bundles
            sx, sy = rng.uniform(x0, x1), y0 - rng.uniform(0.05, 0.25) * size
            ex, ey = sx + rng.uniform(-0.5, 0.5) * size, rng.uniform(y0 + 0.2 * size, y0 + 0.75 * size)
            mx, my = (sx + ex) / 2 + rng.uniform(-0.2, 0.2) * size, (sy + ey) / 2
            for _ in range(rng.integers(3, 25)):
                d = rng.normal(0, 0.08 * size, 3)
                t = np.linspace(0, 1, 24)[:, None]
                p = ((1 - t) ** 2 * (sx + d[0], sy) + 2 * (1 - t) * t * (mx + d[1], my)
                     + t ** 2 * (ex + d[2], ey + rng.normal(0, 0.05 * size)))
                cv2.polylines(canvas, [np.int32(p * 4)], False, 1.0, max(1, int(rng.uniform(0.7, 3.0) * 4)))
        alpha = cv2.resize(canvas, (G, G), interpolation=cv2.INTER_AREA) * rng.uniform(0.85, 1.0)
        return np.clip(fill, 0, 1), alpha

    def sample(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rng = self.rng
        image, masks = self._face(int(rng.integers(len(self.crops))))
        label = np.zeros((G, G), np.float32)
        box = self._box(masks)
        n = rng.choice([0, 0, 1, 1, 1, 1, 2])
        for _ in range(n):
            kind = rng.choice([self._flat, self._object, self._hand, self._hair], p=[0.25, 0.25, 0.25, 0.25])
            fill, alpha = kind(image, masks, box)
            image = (image * (1 - alpha[..., None]) + fill * alpha[..., None]).astype(np.float32)
            label = np.maximum(label, alpha)
        image = self._exposure(image)
        return image.astype(np.float32), masks.astype(np.float32), label

    def _exposure(self, image: np.ndarray) -> np.ndarray:
        """The whole photo: gamma, noise, blur or JPEG."""
        rng = self.rng
        image = np.clip(image, 0, 1) ** rng.uniform(0.7, 1.4)
        u = rng.random()
        if u < 0.25:
            ok, buf = cv2.imencode(".jpg", (image * 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY,
                                                                             int(rng.integers(20, 90))])
            image = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED).astype(np.float32) / 255
        elif u < 0.4:
            image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.4, 1.2))
        elif u < 0.55:
            image = image + rng.normal(0, rng.uniform(0.005, 0.03), image.shape)
        return np.clip(image, 0, 1)


class Stream(torch.utils.data.IterableDataset):
    def __init__(self, path: Path, seed: int) -> None:
        self.path, self.seed = path, seed

    def __iter__(self):  # noqa: ANN204
        info = torch.utils.data.get_worker_info()
        cv2.setNumThreads(1)  # one process per core: no nested thread pools
        torch.set_num_threads(1)
        data = np.load(self.path)
        sampler = Sampler(data["crops"], data["textures"], self.seed + (info.id if info else 0))
        while True:
            image, masks, label = sampler.sample()
            yield torch.from_numpy(image).permute(2, 0, 1), torch.from_numpy(masks).permute(2, 0, 1), \
                torch.from_numpy(label)[None]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seconds", type=float, default=300)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    dev = torch.device(args.device)
    net = OccluderNet().to(dev)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    loader = torch.utils.data.DataLoader(Stream(args.data, args.seed * 1000), batch_size=args.batch,
                                         num_workers=args.workers, pin_memory=dev.type == "cuda",
                                         persistent_workers=args.workers > 0)
    t0, step, log = time.perf_counter(), 0, []
    running = None
    for image, masks, label in loader:
        elapsed = time.perf_counter() - t0
        if elapsed > args.seconds:
            break
        frac = elapsed / args.seconds
        for group in opt.param_groups:  # warm-up, then cosine to 0 over the time budget
            group["lr"] = args.lr * min(1.0, step / 200) * 0.5 * (1 + math.cos(math.pi * frac))
        image, masks, label = (t.to(dev, non_blocking=True) for t in (image, masks, label))
        x = occluder_input(image, masks[:, :1], masks[:, 1:2], masks[:, 2:3], masks[:, 3:4])  # as the swap does
        face = F.max_pool2d(masks[:, :1], 9, 1, 4)  # the face mask, grown
        weight = 0.05 + face
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            logits = net(x)
        loss = (F.binary_cross_entropy_with_logits(logits.float(), label, reduction="none") * weight).sum() \
            / weight.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        running = float(loss.detach()) if running is None else 0.98 * running + 0.02 * float(loss.detach())
        step += 1
        if step % 100 == 0:
            log.append({"step": step, "seconds": round(elapsed, 1), "loss": round(running, 5)})
            print(json.dumps(log[-1]), flush=True)
    from safetensors.torch import save_file

    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().float().cpu().contiguous() for k, v in net.state_dict().items()}, str(args.out))
    args.out.with_suffix(".json").write_text(json.dumps({"steps": step, "batch": args.batch, "log": log}))
    print(f"{step} steps, {step * args.batch} samples -> {args.out}")


if __name__ == "__main__":
    main()
