"""Hand-tracking oracle: MediaPipe's own legacy Python solution on still photos.

Runs mediapipe.solutions.hands.Hands(static_image_mode=True, max_num_hands=2,
model_complexity=0, min_detection_confidence=0.5) (mediapipe==0.10.14, the wheel m2w
takes its .tflite files from) on each image and writes JSON.

Which models this loads (checked on the 0.10.14 wheel, see docs/HANDS_PIPELINE_NOTES.md):
  * The solution runs mediapipe/modules/hand_landmark/hand_landmark_tracking_cpu.binarypb
    (graph type HandLandmarkTrackingCpu) with side packets model_complexity=0,
    num_hands=2, use_prev_landmarks=False (= not static_image_mode).
  * Its subgraphs PalmDetectionCpu and HandLandmarkCpu (compiled into the bindings;
    expanded with mediapipe.python._framework_bindings.validated_graph_config) each pick
    the model path with a SwitchContainer whose SELECT side packet is model_complexity:
    case 0 = "mediapipe/modules/palm_detection/palm_detection_lite.tflite" and
    "mediapipe/modules/hand_landmark/hand_landmark_lite.tflite", case 1 = the *_full files.
  * Confirmed at run time with `strace -f -e trace=openat`: the process opens exactly
    palm_detection_lite.tflite, hand_landmark_lite.tflite, handedness.txt and the binarypb.
    sha256 (wheel): palm_detection_lite.tflite e9a4aaddf90dda56a87235303cf00e4c2d3fb28725f68fd88772997dac905c18,
    hand_landmark_lite.tflite 048edd3645c9bf7397d19a9f6e3a42957d6e414c9bea6598030a2e9b624156e6.
  * Hands() overrides two calculator options: palm TensorsToDetectionsCalculator
    min_score_thresh = min_detection_confidence (0.5) and the hand-presence
    ThresholdingCalculator threshold = min_tracking_confidence (default 0.5).

Images are decoded with Pillow (no EXIF transposition; the oracle images have no EXIF) to
8-bit RGB, or with --decoder cv2 (cv2.imread + BGR->RGB; OpenCV applies EXIF orientation).
The sha256 of both the file and the decoded RGB buffer is recorded, so a port can check it
feeds the very same pixels (JPEG decoders may differ by a few LSBs).

Besides the solution's outputs, a second instance of the same graph (same side packets and
options, extra output streams) records the intermediates: palm detections after NMS and
letterbox removal, and the hand ROIs derived from them. Its landmarks are checked equal to
the solution's.

Output (--out FILE.json):
  {"mediapipe_version", "solution": {...settings...}, "decoder",
   "images": [{"file", "sha256", "rgb_sha256", "width", "height",
     "hands": [{"handedness": {"label", "score", "index"},
                "landmarks": [{"x", "y", "z", "px", "py"} x21],   # normalized + pixels
                "world_landmarks": [{"x", "y", "z"} x21]}],
     "palm_detections": [{"score", "bbox": {"xmin","ymin","width","height"},
                          "keypoints": [{"x","y"} x7]}],              # normalized
     "hand_rects_from_palm_detections": [{"x_center","y_center","width","height",
                                          "rotation"}]}]}             # normalized, radians
Pixel coordinates are x*width, y*height (no half-pixel shift).

Needs a Python 3.11 venv with mediapipe==0.10.14 (see docs/HANDS_PIPELINE_NOTES.md for
the pinned list). Usage:
  python scripts/mediapipe_hands_oracle.py --images DIR_OR_FILES... --out oracle.json
or, as m2w's derived fixture `hands-oracle` (crates/setup runs it):
  python scripts/mediapipe_hands_oracle.py --src IMAGE_DIR --out DIR
which writes DIR/oracle.json and, for each image, DIR/<stem>.rgb.npy: the decoded 8-bit
RGB pixels MediaPipe saw ([height, width, 3]), so a port feeds exactly the same ones.
"""

import argparse
import hashlib
import json
import os
import sys

import numpy as np

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")

SETTINGS = dict(
    static_image_mode=True,
    max_num_hands=2,
    model_complexity=0,
    min_detection_confidence=0.5,
)


def list_images(args):
    files = []
    for a in args:
        if os.path.isdir(a):
            files += [
                os.path.join(a, f)
                for f in sorted(os.listdir(a))
                if f.lower().endswith(IMAGE_EXTS)
            ]
        else:
            files.append(a)
    if not files:
        raise SystemExit("no images given")
    return files


def load_rgb(path, decoder):
    if decoder == "pil":
        from PIL import Image

        with Image.open(path) as im:
            rgb = np.asarray(im.convert("RGB"))
    else:
        import cv2

        bgr = cv2.imread(path, cv2.IMREAD_COLOR)
        if bgr is None:
            raise SystemExit(f"cannot read {path}")
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(rgb, dtype=np.uint8)


def sha256_file(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def landmarks_json(lms, w, h):
    return [
        {"x": l.x, "y": l.y, "z": l.z, "px": l.x * w, "py": l.y * h}
        for l in lms.landmark
    ]


def detection_json(d):
    ld = d.location_data
    bb = ld.relative_bounding_box
    return {
        "score": list(d.score)[0] if d.score else None,
        "bbox": {"xmin": bb.xmin, "ymin": bb.ymin, "width": bb.width, "height": bb.height},
        "keypoints": [{"x": k.x, "y": k.y} for k in ld.relative_keypoints],
    }


def rect_json(r):
    return {
        "x_center": r.x_center,
        "y_center": r.y_center,
        "width": r.width,
        "height": r.height,
        "rotation": r.rotation,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", nargs="+", help="image files or folders")
    ap.add_argument("--src", help="a folder of images (fixture mode: --out is a folder)")
    ap.add_argument("--out", required=True, help="JSON file to write (a folder with --src)")
    ap.add_argument("--decoder", choices=["pil", "cv2"], default="pil")
    args = ap.parse_args()
    pixels_dir = None
    if args.src:
        args.images = [args.src]
        os.makedirs(args.out, exist_ok=True)
        pixels_dir = args.out
        args.out = os.path.join(args.out, "oracle.json")
    if not args.images:
        raise SystemExit("give --images or --src")

    import mediapipe as mp
    from mediapipe.python import solution_base
    from mediapipe.python.solutions import hands as mp_hands

    hands = mp_hands.Hands(**SETTINGS)
    # Same graph, same side packets and options as Hands(**SETTINGS), more outputs.
    probe = solution_base.SolutionBase(
        binary_graph_path=mp_hands._BINARYPB_FILE_PATH,
        side_inputs={
            "model_complexity": SETTINGS["model_complexity"],
            "num_hands": SETTINGS["max_num_hands"],
            "use_prev_landmarks": not SETTINGS["static_image_mode"],
        },
        calculator_params={
            "palmdetectioncpu__TensorsToDetectionsCalculator.min_score_thresh":
                SETTINGS["min_detection_confidence"],
            "handlandmarkcpu__ThresholdingCalculator.threshold": 0.5,
        },
        outputs=[
            "multi_hand_landmarks",
            "palm_detections",
            "hand_rects_from_palm_detections",
        ],
    )

    images = []
    for path in list_images(args.images):
        rgb = load_rgb(path, args.decoder)
        h, w = rgb.shape[:2]
        if pixels_dir:
            stem = os.path.splitext(os.path.basename(path))[0]
            np.save(os.path.join(pixels_dir, f"{stem}.rgb.npy"), rgb)
        res = hands.process(rgb)
        extra = probe.process(rgb)

        lms = res.multi_hand_landmarks or []
        hnd = res.multi_handedness or []
        wlms = res.multi_hand_world_landmarks or []
        out_hands = []
        for i, lm in enumerate(lms):
            c = hnd[i].classification[0]
            out_hands.append(
                {
                    "handedness": {"label": c.label, "score": c.score, "index": c.index},
                    "landmarks": landmarks_json(lm, w, h),
                    "world_landmarks": [
                        {"x": l.x, "y": l.y, "z": l.z} for l in wlms[i].landmark
                    ],
                }
            )

        probe_lms = extra.multi_hand_landmarks or []
        same = len(probe_lms) == len(lms) and all(
            a.SerializeToString() == b.SerializeToString() for a, b in zip(lms, probe_lms)
        )
        if not same:
            print(f"warning: {path}: probe graph landmarks differ from Hands()", file=sys.stderr)

        images.append(
            {
                "file": os.path.basename(path),
                "sha256": sha256_file(path),
                "rgb_sha256": hashlib.sha256(rgb.tobytes()).hexdigest(),
                "width": w,
                "height": h,
                "hands": out_hands,
                "palm_detections": [detection_json(d) for d in (extra.palm_detections or [])],
                "hand_rects_from_palm_detections": [
                    rect_json(r) for r in (extra.hand_rects_from_palm_detections or [])
                ],
                "probe_matches_solution": same,
            }
        )
        print(f"{path}: {w}x{h}, {len(out_hands)} hand(s)", file=sys.stderr)

    hands.close()
    probe.close()
    doc = {
        "mediapipe_version": mp.__version__,
        "solution": dict(SETTINGS, min_tracking_confidence=0.5,
                         graph="mediapipe/modules/hand_landmark/hand_landmark_tracking_cpu.binarypb",
                         models=["mediapipe/modules/palm_detection/palm_detection_lite.tflite",
                                 "mediapipe/modules/hand_landmark/hand_landmark_lite.tflite"]),
        "decoder": args.decoder,
        "images": images,
    }
    with open(args.out, "w") as f:
        json.dump(doc, f, indent=1)


if __name__ == "__main__":
    main()
