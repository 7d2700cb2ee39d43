"""Paste-back benchmark: ours vs insightface's own, on a 1080p frame, in one run.

    python bench/paste_back.py [--repeats 30] [--frames 40]

(a) paste-back: a 1080p frame with a real face (the astronaut photo, scaled to a close-up
    talking head, ~450 px face). insightface's `INSwapper.get(frame, face, source,
    paste_back=True)` minus `paste_back=False` (same crop and inference, so the difference is
    its paste-back alone) vs our `processors.swap.paste.paste_back` on the very same swapped
    crop and matrix. Median of `--repeats` interleaved runs. MAD: mean absolute difference of
    the two results (8-bit, all channels) inside the face's box.
(b) the whole swap step (`SwapProcessor`: detect, align, swap, paste back, annotate) on CPU
    with the test models (tests/face_models.py) at 640×360 and at 1080p, frames per second.

The models are the test models with the real signatures, so inference costs here say nothing
about inswapper_128; the paste-back numbers are independent of the model.
Last line: `paste-back: X× insightface, MAD: Y`.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import tempfile
import time
import warnings
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.domain import VideoInfo  # noqa: E402
from processors.base import ProcessorContext  # noqa: E402
from processors.faces import align_matrix  # noqa: E402
from processors.media.frames import FrameBatch  # noqa: E402
from processors.swap.paste import paste_back  # noqa: E402
from tests.face_models import (  # noqa: E402
    ASTRONAUT_CUT,
    ASTRONAUT_FACE,
    TILE,
    KnownFace,
    build_detector,
    build_face_store,
    frame_faces,
    two_people,
)

HD = (1920, 1080)
SCALE, AT = 5.0, (480, 60)  # the 192 px astronaut tile, 5× (face ≈ 450 px), placed here


def hd_frame() -> tuple[np.ndarray, KnownFace]:
    import skimage.data

    cx, cy = ASTRONAUT_CUT
    tile = skimage.data.astronaut()[cy : cy + TILE, cx : cx + TILE]
    big = cv2.resize(tile, None, fx=SCALE, fy=SCALE, interpolation=cv2.INTER_CUBIC)
    frame = np.zeros((HD[1], HD[0], 3), np.uint8)
    h, w = min(big.shape[0], HD[1] - AT[1]), min(big.shape[1], HD[0] - AT[0])
    frame[AT[1] : AT[1] + h, AT[0] : AT[0] + w] = big[:h, :w]

    def place(x: float, y: float) -> tuple[float, float]:
        return (x - cx) * SCALE + AT[0], (y - cy) * SCALE + AT[1]

    x0, y0, x1, y1 = ASTRONAUT_FACE.box
    face = KnownFace((*place(x0, y0), *place(x1, y1)), tuple(place(*p) for p in ASTRONAUT_FACE.kps))
    return frame, face


def quiet() -> contextlib.AbstractContextManager:
    return contextlib.redirect_stdout(io.StringIO())  # insightface prints per call


def bench_paste(store: Path, repeats: int) -> tuple[float, float, float, float]:
    from insightface.app.common import Face as InsightFace
    from insightface.model_zoo import model_zoo

    with quiet():
        swapper = model_zoo.get_model(
            str(store / "test_swapper.onnx"), providers=["CPUExecutionProvider"]
        )
    frame_rgb, face = hd_frame()
    frame = np.ascontiguousarray(frame_rgb[..., ::-1])  # insightface works in BGR
    target = InsightFace(bbox=np.array(face.box, np.float32), kps=np.array(face.kps, np.float32))
    rng = np.random.default_rng(1)
    source = InsightFace(embedding=rng.standard_normal(512).astype(np.float32))

    theirs_full, theirs_crop, ours = [], [], []
    for _ in range(repeats):  # interleaved, so load on the machine hits all three alike
        t = time.perf_counter()
        theirs_img = swapper.get(frame, target, source, paste_back=True)
        theirs_full.append(time.perf_counter() - t)
        t = time.perf_counter()
        fake, matrix = swapper.get(frame, target, source, paste_back=False)
        theirs_crop.append(time.perf_counter() - t)
        mine = frame.copy()
        t = time.perf_counter()
        paste_back(mine, fake, matrix)
        ours.append(time.perf_counter() - t)
    # Our matrix is our own alignment; check it is the one insightface used.
    assert np.allclose(matrix, align_matrix(np.array(face.kps), 128), atol=1e-3)
    theirs = max(statistics.median(theirs_full) - statistics.median(theirs_crop), 1e-9)
    mine_t = statistics.median(ours)
    x0, y0, x1, y1 = (round(v) for v in face.box)
    mad = float(np.abs(mine[y0:y1, x0:x1].astype(int) - theirs_img[y0:y1, x0:x1]).mean())
    return theirs, mine_t, mad, statistics.median(theirs_crop)


def bench_step(frames: int) -> list[tuple[str, float]]:
    from processors.chain import build_processor

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        os.environ["DROPBATCH_MODEL_CACHE"] = str(tmp_path / "cache")
        (tmp_path / "faces").mkdir()
        cv2.imwrite(
            str(tmp_path / "faces" / "cameraman.png"),
            cv2.cvtColor(two_people(astronaut=False), cv2.COLOR_RGB2BGR),
        )
        small_store = build_face_store(tmp_path / "small")
        hd_store = build_face_store(tmp_path / "hd")
        frame, face = hd_frame()
        ratio = 640 / HD[0]  # the detector sees the frame letterboxed to 640
        scaled = KnownFace(
            tuple(v * ratio for v in face.box), tuple((x * ratio, y * ratio) for x, y in face.kps)
        )
        # The source image (640×360, the cameraman) must be found by the same detector.
        build_detector(hd_store / "test_det.onnx", [scaled, frame_faces()[1]])
        _repin(hd_store)
        for label, store, image in (
            ("640x360", small_store, two_people()),
            ("1920x1080", hd_store, frame),
        ):
            h, w = image.shape[:2]
            info = VideoInfo(
                duration=1, fps_num=25, fps_den=1, frame_count=frames, width=w, height=h
            )
            ctx = ProcessorContext(
                info=info, rate=Fraction(25), width=w, height=h, folder=tmp_path,
                model_store=str(store),
            )  # fmt: skip
            options = {
                "analyser": "test_faces", "model": "test_swapper",
                "source": "faces/cameraman.png", "target": "largest",
            }  # fmt: skip
            with quiet():
                proc = build_processor("swap", options, ctx)
                batch = np.stack([image] * 8)
                start, done, index = time.perf_counter(), 0, 0
                while index < frames:
                    out = proc.push(FrameBatch(batch, np.arange(index, index + 8, dtype=np.int64)))
                    index += 8
                    done += len(out)
                done += len(proc.flush())
                elapsed = time.perf_counter() - start
            swapped = (
                sum(1 for f in out.annotations["faces"][0] if f.identity is not None)
                if len(out)
                else 0
            )
            assert swapped == 1
            results.append((label, done / elapsed))
    return results


def _repin(store: Path) -> None:
    import hashlib

    import yaml

    catalog_file = store / "catalog.yaml"
    catalog = yaml.safe_load(catalog_file.read_text())
    entry = catalog["models"]["test_faces"]
    data = (store / "test_det.onnx").read_bytes()
    entry["sha256"]["test_det.onnx"] = hashlib.sha256(data).hexdigest()
    entry["size"]["test_det.onnx"] = len(data)
    catalog_file.write_text(yaml.safe_dump(catalog))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--frames", type=int, default=40)
    args = parser.parse_args()
    # insightface 0.7.3's alignment calls an API scikit-image 0.26 deprecates; not ours to fix.
    warnings.filterwarnings("ignore", category=FutureWarning)
    cv2.setNumThreads(1)  # one core each, like a task held to one core; fair to both sides
    print(f"cpu: {os.cpu_count()} cores, opencv {cv2.__version__}, numpy {np.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        store = build_face_store(Path(tmp))
        theirs, mine, mad, crop = bench_paste(store, args.repeats)
    print(f"insightface paste-back (1080p, 1 face): {theirs * 1000:.2f} ms")
    print(f"our paste-back        (1080p, 1 face): {mine * 1000:.2f} ms")
    print(f"  (crop + swap inference, same for both: {crop * 1000:.2f} ms)")
    for label, fps in bench_step(args.frames):
        print(f"swap step on CPU, test models, {label}: {fps:.1f} fps")
    print(f"paste-back: {theirs / mine:.1f}× insightface, MAD: {mad:.2f}")


if __name__ == "__main__":
    main()
