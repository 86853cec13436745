"""Pick a camera's region of interest on a saved frame and write the preprocessing YAML.

    python -m hilserl_drivers.roi_tool FRAME.png --camera front --out config/cameras.yaml
    python -m hilserl_drivers.roi_tool FRAME.png --camera front --roi 40,20,200,200 --out ...

With a display (an OpenCV build with a GUI), the frame opens and the region is dragged
with the mouse (Enter confirms). Headless (this project's opencv-python-headless), pass
``--roi x,y,width,height``; ``--preview`` writes the frame with a 50-pixel grid to help read
coordinates, and the chosen region drawn on it. The YAML is the ``camera_preprocess``
node's section (merged into ``--out`` if it exists), with ``image_size``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import yaml

from hilserl_drivers.camera import Roi, crop_resize

NODE = "camera_preprocess"


def draw_preview(image: np.ndarray, roi: Roi | None, grid: int = 50) -> np.ndarray:
    """RGB ``image`` with grid lines every ``grid`` pixels (every 100 brighter) and ``roi`` in green."""
    out = image.copy()
    for x in range(0, out.shape[1], grid):
        out[:, x] = 255 if x % 100 == 0 else 160
    for y in range(0, out.shape[0], grid):
        out[y, :] = 255 if y % 100 == 0 else 160
    if roi is not None:
        x0, y0, x1, y1 = roi.x, roi.y, roi.x + roi.width - 1, roi.y + roi.height - 1
        for xs, ys in (((x0, x1 + 1), (y0, y0 + 1)), ((x0, x1 + 1), (y1, y1 + 1)),
                       ((x0, x0 + 1), (y0, y1 + 1)), ((x1, x1 + 1), (y0, y1 + 1))):
            out[ys[0]:ys[1], xs[0]:xs[1]] = (0, 255, 0)
    return out


def merge_yaml(path: Path, camera: str, roi: Roi, image_size: int) -> dict:
    """``path``'s YAML (or {}) with ``camera_preprocess`` updated for ``camera``."""
    data = yaml.safe_load(path.read_text()) if path.is_file() else {}
    data = data or {}
    params = data.setdefault(NODE, {}).setdefault("ros__parameters", {})
    names = list(params.get("camera_names", []))
    if camera not in names:
        names.append(camera)
    params["camera_names"] = names
    params["image_size"] = image_size
    params[f"{camera}.roi"] = [roi.x, roi.y, roi.width, roi.height]
    return data


def main(argv=None) -> int:
    import cv2

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("frame", help="a saved camera frame (PNG, JPEG)")
    parser.add_argument("--camera", required=True, help="camera name (as in camera_names)")
    parser.add_argument("--roi", help="x,y,width,height in pixels (else: drag it in a window)")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--out", required=True, help="parameter YAML to write or update")
    parser.add_argument("--preview", help="write the frame with a grid and the region here (PNG)")
    args = parser.parse_args(argv)
    bgr = cv2.imread(args.frame)
    if bgr is None:
        print(f"roi_tool: cannot read an image from {args.frame}", file=sys.stderr)
        return 2
    image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    try:
        if args.roi:
            roi = Roi.parse([int(v) for v in args.roi.split(",")], "--roi")
        else:
            try:
                x, y, w, h = cv2.selectROI(f"{args.camera}: drag the region, Enter", bgr)
                cv2.destroyAllWindows()
            except cv2.error as error:
                raise ValueError("no display to pick the region on (headless OpenCV): pass --roi x,y,w,h "
                                 "(--preview draws a grid to read coordinates)") from error
            roi = Roi.parse([x, y, w, h], "selection")
        roi.check_inside(image.shape[0], image.shape[1], "--roi")
    except ValueError as error:
        if args.preview:
            cv2.imwrite(args.preview, cv2.cvtColor(draw_preview(image, None), cv2.COLOR_RGB2BGR))
        print(f"roi_tool: {error}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.write_text(yaml.safe_dump(merge_yaml(out, args.camera, roi, args.image_size), sort_keys=False))
    if args.preview:
        cv2.imwrite(args.preview, cv2.cvtColor(draw_preview(image, roi), cv2.COLOR_RGB2BGR))
    crop = crop_resize(image, roi, args.image_size)
    print(f"{args.camera}: roi [{roi.x}, {roi.y}, {roi.width}, {roi.height}] of a {image.shape[1]}x"
          f"{image.shape[0]} frame -> {crop.shape[1]}x{crop.shape[0]}; wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
