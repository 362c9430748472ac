// The glue of a detect-then-landmark vision pipeline (MediaPipe's hands), formula for
// formula as crates/vision/src/lib.rs, which follows MediaPipe's calculators:
// SsdAnchorsCalculator, TensorsToDetectionsCalculator, NonMaxSuppressionCalculator
// (WEIGHTED), ImageToTensorCalculator's region and letterbox, DetectionLetterboxRemoval,
// DetectionsToRects + RectTransformation, TensorsToLandmarks + LandmarkProjection.
// The crops run on the GPU (the warp_perspective_f32 kernel); this file is the host side.

export interface AnchorOptions {
  input_width: number;
  input_height: number;
  num_layers: number;
  min_scale: number;
  max_scale: number;
  anchor_offset_x: number;
  anchor_offset_y: number;
  strides: number[];
  aspect_ratios: number[];
  interpolated_scale_aspect_ratio: number;
  reduce_boxes_in_lowest_layer: boolean;
  fixed_anchor_size: boolean;
}

export interface DecodeOptions {
  num_boxes: number;
  num_coords: number;
  box_coord_offset: number;
  keypoint_coord_offset: number;
  num_keypoints: number;
  num_values_per_keypoint: number;
  x_scale: number;
  y_scale: number;
  w_scale: number;
  h_scale: number;
  reverse_output_order: boolean;
  apply_exponential_on_box_size: boolean;
  sigmoid_score: boolean;
  score_clipping_thresh: number;
  min_score_thresh: number;
}

export interface Anchor {
  x: number;
  y: number;
  w: number;
  h: number;
}

/** Normalized to the tensor, then (after the letterbox is removed) to the frame. */
export interface Detection {
  score: number;
  xmin: number;
  ymin: number;
  width: number;
  height: number;
  keypoints: [number, number][];
}

/** A rotated rectangle; rotation in radians, clockwise on the image (y down). */
export interface Rect {
  x_center: number;
  y_center: number;
  width: number;
  height: number;
  rotation: number;
}

export interface Letterbox {
  left: number;
  top: number;
  right: number;
  bottom: number;
}

export interface RectTransform {
  scale_x: number;
  scale_y: number;
  shift_x: number;
  shift_y: number;
  square_long: boolean;
}

// The anchors and the decoding round each step to f32 (Math.fround), as the Rust glue and
// MediaPipe's C++ compute them; the later steps (NMS, rectangles, projection) run in f64,
// whose differences from f32 are far below a pixel.
const f = Math.fround;

function anchorScale(min: number, max: number, index: number, count: number): number {
  return count === 1 ? f(f(min + max) * 0.5) : f(min + f(f(f(max - min) * index) / (count - 1)));
}

export function ssdAnchors(o: AnchorOptions): Anchor[] {
  const anchors: Anchor[] = [];
  let layer = 0;
  while (layer < o.num_layers) {
    const ratios: number[] = [];
    const scales: number[] = [];
    let last = layer;
    while (last < o.num_layers && o.strides[last] === o.strides[layer]) {
      const scale = anchorScale(o.min_scale, o.max_scale, last, o.num_layers);
      if (last === 0 && o.reduce_boxes_in_lowest_layer) {
        ratios.push(1, 2, 0.5);
        scales.push(f(0.1), scale, scale);
      } else {
        for (const r of o.aspect_ratios) {
          ratios.push(r);
          scales.push(scale);
        }
        if (o.interpolated_scale_aspect_ratio > 0) {
          const next = last === o.num_layers - 1 ? 1 : anchorScale(o.min_scale, o.max_scale, last + 1, o.num_layers);
          scales.push(f(Math.sqrt(f(scale * next))));
          ratios.push(o.interpolated_scale_aspect_ratio);
        }
      }
      last++;
    }
    const widths = ratios.map((r, k) => f(scales[k] * f(Math.sqrt(r))));
    const heights = ratios.map((r, k) => f(scales[k] / f(Math.sqrt(r))));
    const stride = o.strides[layer];
    const rows = Math.ceil(o.input_height / stride);
    const cols = Math.ceil(o.input_width / stride);
    for (let y = 0; y < rows; y++) {
      for (let x = 0; x < cols; x++) {
        for (let k = 0; k < heights.length; k++) {
          anchors.push({
            x: f(f(x + o.anchor_offset_x) / cols),
            y: f(f(y + o.anchor_offset_y) / rows),
            w: o.fixed_anchor_size ? 1 : widths[k],
            h: o.fixed_anchor_size ? 1 : heights[k],
          });
        }
      }
    }
    layer = last;
  }
  return anchors;
}

export function decode(boxes: Float32Array, scores: Float32Array, anchors: Anchor[], o: DecodeOptions): Detection[] {
  if (anchors.length !== o.num_boxes || boxes.length !== o.num_boxes * o.num_coords || scores.length !== o.num_boxes) {
    throw new Error(`${anchors.length} anchors, ${boxes.length} box values, ${scores.length} scores for ${o.num_boxes} boxes of ${o.num_coords} values`);
  }
  const out: Detection[] = [];
  for (let i = 0; i < anchors.length; i++) {
    const a = anchors[i];
    let score = scores[i];
    if (o.sigmoid_score) {
      // MediaPipe clips only on the way into the sigmoid.
      if (o.score_clipping_thresh > 0) score = Math.min(Math.max(score, -o.score_clipping_thresh), o.score_clipping_thresh);
      score = f(1 / f(1 + f(Math.exp(-score))));
    }
    if (score < o.min_score_thresh) continue;
    const b = i * o.num_coords;
    const at = b + o.box_coord_offset;
    let [x, y, w, h] = o.reverse_output_order ? [boxes[at], boxes[at + 1], boxes[at + 2], boxes[at + 3]] : [boxes[at + 1], boxes[at], boxes[at + 3], boxes[at + 2]];
    x = f(f(f(x / o.x_scale) * a.w) + a.x);
    y = f(f(f(y / o.y_scale) * a.h) + a.y);
    if (o.apply_exponential_on_box_size) {
      h = f(f(Math.exp(f(h / o.h_scale))) * a.h);
      w = f(f(Math.exp(f(w / o.w_scale))) * a.w);
    } else {
      h = f(f(h / o.h_scale) * a.h);
      w = f(f(w / o.w_scale) * a.w);
    }
    const keypoints: [number, number][] = [];
    for (let k = 0; k < o.num_keypoints; k++) {
      const p = b + o.keypoint_coord_offset + k * o.num_values_per_keypoint;
      const [kx, ky] = o.reverse_output_order ? [boxes[p], boxes[p + 1]] : [boxes[p + 1], boxes[p]];
      keypoints.push([f(f(f(kx / o.x_scale) * a.w) + a.x), f(f(f(ky / o.y_scale) * a.h) + a.y)]);
    }
    // MediaPipe drops boxes of negative (or undefined) size.
    if (!(w >= 0 && h >= 0)) continue;
    out.push({ score, xmin: f(x - f(w / 2)), ymin: f(y - f(h / 2)), width: w, height: h, keypoints });
  }
  return out;
}

export function iou(a: Detection, b: Detection): number {
  const iw = Math.min(a.xmin + a.width, b.xmin + b.width) - Math.max(a.xmin, b.xmin);
  const ih = Math.min(a.ymin + a.height, b.ymin + b.height) - Math.max(a.ymin, b.ymin);
  if (iw <= 0 || ih <= 0) return 0;
  const inter = iw * ih;
  const union = a.width * a.height + b.width * b.height - inter;
  return union > 0 ? inter / union : 0;
}

/** WEIGHTED non-maximum suppression (at most `max` kept; 0: no limit). */
export function weightedNms(detections: Detection[], threshold: number, max: number): Detection[] {
  // Equal scores keep their anchor order (MediaPipe's std::sort leaves ties unspecified).
  let order = detections.map((_, i) => i).sort((a, b) => detections[b].score - detections[a].score || a - b);
  const out: Detection[] = [];
  while (order.length) {
    const top = order[0];
    const best = detections[top];
    // The best always leaves the list, even when it does not overlap itself (NaN).
    const taken = (i: number) => i === top || iou(detections[i], best) > threshold;
    const candidates = order.filter(taken);
    const rest = order.filter((i) => !taken(i));
    const merged: Detection = { ...best, keypoints: best.keypoints.map((k) => [k[0], k[1]] as [number, number]) };
    if (candidates.length) {
      const total = candidates.reduce((s, i) => s + detections[i].score, 0);
      const mean = (g: (d: Detection) => number) => candidates.reduce((s, i) => s + g(detections[i]) * detections[i].score, 0) / total;
      const xmin = mean((d) => d.xmin);
      const ymin = mean((d) => d.ymin);
      const xmax = mean((d) => d.xmin + d.width);
      const ymax = mean((d) => d.ymin + d.height);
      Object.assign(merged, { xmin, ymin, width: xmax - xmin, height: ymax - ymin });
      merged.keypoints = merged.keypoints.map((_, k) => [mean((d) => d.keypoints[k][0]), mean((d) => d.keypoints[k][1])]);
    }
    out.push(merged);
    if (max > 0 && out.length >= max) break;
    order = rest;
  }
  return out;
}

export function removeLetterbox(lb: Letterbox, d: Detection): Detection {
  const sx = 1 - lb.left - lb.right;
  const sy = 1 - lb.top - lb.bottom;
  return {
    score: d.score,
    xmin: (d.xmin - lb.left) / sx,
    ymin: (d.ymin - lb.top) / sy,
    width: d.width / sx,
    height: d.height / sy,
    keypoints: d.keypoints.map((k) => [(k[0] - lb.left) / sx, (k[1] - lb.top) / sy]),
  };
}

/** The warp matrix (output pixel -> frame point) and letterbox of a region (pixels). */
export function imageToTensor(roi: Rect, keepAspectRatio: boolean, outW: number, outH: number): [Float32Array, Letterbox] {
  const r = { ...roi };
  let lb: Letterbox = { left: 0, top: 0, right: 0, bottom: 0 };
  if (keepAspectRatio) {
    const tensorRatio = outH / outW;
    const roiRatio = r.height / r.width;
    let vertical = 0;
    let horizontal = 0;
    if (tensorRatio > roiRatio) {
      const h = r.width * tensorRatio;
      vertical = (h - r.height) / h;
      r.height = h;
    } else {
      const w = r.height / tensorRatio;
      horizontal = (w - r.width) / w;
      r.width = w;
    }
    lb = { left: horizontal / 2, top: vertical / 2, right: horizontal / 2, bottom: vertical / 2 };
  }
  const s = Math.sin(r.rotation);
  const c = Math.cos(r.rotation);
  const ku = r.width / outW;
  const kv = r.height / outH;
  const m = Float32Array.of(c * ku, -s * kv, r.x_center - (c * r.width) / 2 + (s * r.height) / 2, s * ku, c * kv, r.y_center - (s * r.width) / 2 - (c * r.height) / 2, 0, 0, 1);
  return [m, lb];
}

export function normalizeRadians(a: number): number {
  return a - 2 * Math.PI * Math.floor((a + Math.PI) / (2 * Math.PI));
}

export function detectionRect(d: Detection, w: number, h: number, start: number, end: number, targetAngle: number): Rect {
  const x0 = d.keypoints[start][0] * w;
  const y0 = d.keypoints[start][1] * h;
  const x1 = d.keypoints[end][0] * w;
  const y1 = d.keypoints[end][1] * h;
  return {
    x_center: d.xmin + d.width / 2,
    y_center: d.ymin + d.height / 2,
    width: d.width,
    height: d.height,
    rotation: normalizeRadians(targetAngle - Math.atan2(-(y1 - y0), x1 - x0)),
  };
}

export function transformRect(r: Rect, w: number, h: number, t: RectTransform): Rect {
  const out = { ...r };
  if (r.rotation === 0) {
    out.x_center += r.width * t.shift_x;
    out.y_center += r.height * t.shift_y;
  } else {
    const s = Math.sin(r.rotation);
    const c = Math.cos(r.rotation);
    out.x_center += (w * r.width * t.shift_x * c - h * r.height * t.shift_y * s) / w;
    out.y_center += (w * r.width * t.shift_x * s + h * r.height * t.shift_y * c) / h;
  }
  if (t.square_long) {
    const long = Math.max(r.width * w, r.height * h);
    out.width = long / w;
    out.height = long / h;
  }
  out.width *= t.scale_x;
  out.height *= t.scale_y;
  return out;
}

/** Landmarks in tensor pixels -> normalized to the frame (z by the tensor width, normalize_z, the rect's width). */
export function projectLandmarks(raw: Float32Array, tensorW: number, tensorH: number, normalizeZ: number, lb: Letterbox, rect: Rect): [number, number, number][] {
  const s = Math.sin(rect.rotation);
  const c = Math.cos(rect.rotation);
  const out: [number, number, number][] = [];
  for (let i = 0; i + 2 < raw.length; i += 3) {
    const x = (raw[i] / tensorW - lb.left) / (1 - lb.left - lb.right) - 0.5;
    const y = (raw[i + 1] / tensorH - lb.top) / (1 - lb.top - lb.bottom) - 0.5;
    const z = raw[i + 2] / tensorW / normalizeZ;
    out.push([(c * x - s * y) * rect.width + rect.x_center, (s * x + c * y) * rect.height + rect.y_center, z * rect.width]);
  }
  return out;
}
