"""Results as data: what a segmentation box reports besides pictures (numpy and OpenCV only).

- `shares`: per-class pixel shares of a mask.
- `regions`: per-class connected components as exact polygons (pixel-corner rings, holes) with area and box.
- `rle`: COCO run-length encoding (what `pycocotools.mask.decode` reads), per component.
- `raster`: polygons back to masks (even-odd fill at pixel centres), the inverse of `regions`.
- `records`: the per-frame dict; `emit`: JSON lines to a file, stdout or a file per stream.
- `smoothing`: temporal smoothing of video masks (`ema:A`, `hold:D`, `flow:A:D` over probabilities, `vote:K`
  over masks);
  `scenecut`: when to reset it.
- `reference`: what the export stores as `cfnet.reference` (class shares and confidence on calibration
  images); `drift`: the run-time drift score against it and the alert.
- `stage`: one stream's results per frame, in order (`StreamResults`, `ResultsConfig`); the stream pipeline
  wires it in `runtime.stream.results`.
- `options`: the command line's results options (click) and the `ResultsConfig` they make; `defaults`: their
  choices and defaults (constants only, so the command line's face loads no numpy).
"""
