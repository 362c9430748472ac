//! The glue of a detect-then-landmark vision pipeline (MediaPipe's hands, face mesh and
//! pose share its shape): a letterboxed frame into an SSD detector, its raw outputs decoded
//! against the anchors, weighted non-maximum suppression, a rotated region of interest from
//! two keypoints of each detection, a crop of that region into the landmark model, and its
//! landmarks projected back onto the frame.
//!
//! Everything here follows the MediaPipe calculator of the same name, formula for formula,
//! so the oracle for the whole pipeline is MediaPipe itself: `SsdAnchorsCalculator`
//! ([`ssd_anchors`]), `TensorsToDetectionsCalculator` ([`decode`]),
//! `NonMaxSuppressionCalculator` with the WEIGHTED algorithm ([`weighted_nms`]),
//! `ImageToTensorCalculator`'s region and letterbox ([`image_to_tensor`]),
//! `DetectionLetterboxRemovalCalculator` ([`Letterbox::remove`]),
//! `DetectionsToRectsCalculator` and `RectTransformationCalculator` ([`detection_rect`],
//! [`transform_rect`]), `TensorsToLandmarksCalculator` and `LandmarkProjectionCalculator`
//! ([`project_landmarks`]). The crops themselves run on the GPU: [`warp`] builds the plan
//! of the `warp_perspective_f32` kernel, which the native runner and the package share.
//!
//! The numbers for MediaPipe's hand tracking (palm_detection_lite + hand_landmark_lite)
//! are [`HandsConfig::mediapipe_lite`], read from the graph configs of the `mediapipe`
//! 0.10.14 wheel.

pub mod hands;
pub mod warp;

use serde::{Deserialize, Serialize};

/// `SsdAnchorsCalculatorOptions`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AnchorOptions {
    pub input_width: u32,
    pub input_height: u32,
    pub num_layers: usize,
    pub min_scale: f32,
    pub max_scale: f32,
    pub anchor_offset_x: f32,
    pub anchor_offset_y: f32,
    pub strides: Vec<u32>,
    pub aspect_ratios: Vec<f32>,
    pub interpolated_scale_aspect_ratio: f32,
    pub reduce_boxes_in_lowest_layer: bool,
    pub fixed_anchor_size: bool,
}

/// One anchor, normalized to the input tensor.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Anchor {
    pub x_center: f32,
    pub y_center: f32,
    pub w: f32,
    pub h: f32,
}

fn anchor_scale(min: f32, max: f32, index: usize, count: usize) -> f32 {
    if count == 1 {
        (min + max) * 0.5
    } else {
        min + (max - min) * index as f32 / (count - 1) as f32
    }
}

/// The anchors of an SSD detector, in the order its outputs list them: layer groups of
/// equal stride, then rows, columns and the anchors of one cell.
pub fn ssd_anchors(o: &AnchorOptions) -> Vec<Anchor> {
    let mut anchors = Vec::new();
    let mut layer = 0;
    while layer < o.num_layers {
        let mut heights = Vec::new();
        let mut widths = Vec::new();
        let mut ratios = Vec::new();
        let mut scales = Vec::new();
        let mut last = layer;
        while last < o.num_layers && o.strides[last] == o.strides[layer] {
            let scale = anchor_scale(o.min_scale, o.max_scale, last, o.num_layers);
            if last == 0 && o.reduce_boxes_in_lowest_layer {
                ratios.extend([1.0, 2.0, 0.5]);
                scales.extend([0.1, scale, scale]);
            } else {
                for &r in &o.aspect_ratios {
                    ratios.push(r);
                    scales.push(scale);
                }
                if o.interpolated_scale_aspect_ratio > 0.0 {
                    let next = if last == o.num_layers - 1 {
                        1.0
                    } else {
                        anchor_scale(o.min_scale, o.max_scale, last + 1, o.num_layers)
                    };
                    scales.push((scale * next).sqrt());
                    ratios.push(o.interpolated_scale_aspect_ratio);
                }
            }
            last += 1;
        }
        for (r, s) in ratios.iter().zip(&scales) {
            let root = r.sqrt();
            heights.push(s / root);
            widths.push(s * root);
        }
        let stride = o.strides[layer] as f32;
        let rows = (o.input_height as f32 / stride).ceil() as usize;
        let cols = (o.input_width as f32 / stride).ceil() as usize;
        for y in 0..rows {
            for x in 0..cols {
                for k in 0..heights.len() {
                    let (w, h) = if o.fixed_anchor_size {
                        (1.0, 1.0)
                    } else {
                        (widths[k], heights[k])
                    };
                    anchors.push(Anchor {
                        x_center: (x as f32 + o.anchor_offset_x) / cols as f32,
                        y_center: (y as f32 + o.anchor_offset_y) / rows as f32,
                        w,
                        h,
                    });
                }
            }
        }
        layer = last;
    }
    anchors
}

/// `TensorsToDetectionsCalculatorOptions` (one class).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DecodeOptions {
    pub num_boxes: usize,
    pub num_coords: usize,
    pub box_coord_offset: usize,
    pub keypoint_coord_offset: usize,
    pub num_keypoints: usize,
    pub num_values_per_keypoint: usize,
    pub x_scale: f32,
    pub y_scale: f32,
    pub w_scale: f32,
    pub h_scale: f32,
    pub reverse_output_order: bool,
    pub apply_exponential_on_box_size: bool,
    pub sigmoid_score: bool,
    /// Raw scores are clipped to [-t, t] before the sigmoid (0: not clipped).
    pub score_clipping_thresh: f32,
    pub min_score_thresh: f32,
}

/// A detection, normalized to the tensor (then, after [`Letterbox::remove`], to the frame).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    pub score: f32,
    pub xmin: f32,
    pub ymin: f32,
    pub width: f32,
    pub height: f32,
    /// (x, y) of each keypoint.
    pub keypoints: Vec<[f32; 2]>,
}

/// The detections of one image whose score passes: boxes and keypoints decoded against
/// the anchors, scores through the clip and the sigmoid.
pub fn decode(
    raw_boxes: &[f32],
    raw_scores: &[f32],
    anchors: &[Anchor],
    o: &DecodeOptions,
) -> Result<Vec<Detection>, String> {
    if anchors.len() != o.num_boxes
        || raw_boxes.len() != o.num_boxes * o.num_coords
        || raw_scores.len() != o.num_boxes
    {
        return Err(format!(
            "{} anchors, {} box values, {} scores for {} boxes of {} values",
            anchors.len(),
            raw_boxes.len(),
            raw_scores.len(),
            o.num_boxes,
            o.num_coords
        ));
    }
    let mut out = Vec::new();
    for (i, a) in anchors.iter().enumerate() {
        let mut score = raw_scores[i];
        if o.sigmoid_score {
            // MediaPipe clips only on the way into the sigmoid.
            if o.score_clipping_thresh > 0.0 {
                score = score.clamp(-o.score_clipping_thresh, o.score_clipping_thresh);
            }
            score = 1.0 / (1.0 + (-score).exp());
        }
        if score < o.min_score_thresh {
            continue;
        }
        let b = &raw_boxes[i * o.num_coords..(i + 1) * o.num_coords];
        let at = o.box_coord_offset;
        let (mut x, mut y, mut w, mut h) = if o.reverse_output_order {
            (b[at], b[at + 1], b[at + 2], b[at + 3])
        } else {
            (b[at + 1], b[at], b[at + 3], b[at + 2])
        };
        x = x / o.x_scale * a.w + a.x_center;
        y = y / o.y_scale * a.h + a.y_center;
        if o.apply_exponential_on_box_size {
            h = (h / o.h_scale).exp() * a.h;
            w = (w / o.w_scale).exp() * a.w;
        } else {
            h = h / o.h_scale * a.h;
            w = w / o.w_scale * a.w;
        }
        let keypoints = (0..o.num_keypoints)
            .map(|k| {
                let at = o.keypoint_coord_offset + k * o.num_values_per_keypoint;
                let (kx, ky) = if o.reverse_output_order {
                    (b[at], b[at + 1])
                } else {
                    (b[at + 1], b[at])
                };
                [
                    kx / o.x_scale * a.w + a.x_center,
                    ky / o.y_scale * a.h + a.y_center,
                ]
            })
            .collect();
        // MediaPipe drops boxes of negative (or undefined) size.
        if !(w >= 0.0 && h >= 0.0) {
            continue;
        }
        out.push(Detection {
            score,
            xmin: x - w / 2.0,
            ymin: y - h / 2.0,
            width: w,
            height: h,
            keypoints,
        });
    }
    Ok(out)
}

/// Intersection over union of two boxes (0 when either is empty).
pub fn iou(a: &Detection, b: &Detection) -> f32 {
    let (ax1, ay1) = (a.xmin + a.width, a.ymin + a.height);
    let (bx1, by1) = (b.xmin + b.width, b.ymin + b.height);
    let iw = ax1.min(bx1) - a.xmin.max(b.xmin);
    let ih = ay1.min(by1) - a.ymin.max(b.ymin);
    if iw <= 0.0 || ih <= 0.0 {
        return 0.0;
    }
    let inter = iw * ih;
    let union = a.width * a.height + b.width * b.height - inter;
    if union > 0.0 { inter / union } else { 0.0 }
}

/// MediaPipe's WEIGHTED non-maximum suppression: the best remaining detection takes every
/// remaining one that overlaps it by more than `threshold` (itself included), and its box
/// and keypoints become their score-weighted mean; its score stays. At most `max` are kept
/// (0: no limit).
pub fn weighted_nms(detections: &[Detection], threshold: f32, max: usize) -> Vec<Detection> {
    let mut order: Vec<usize> = (0..detections.len()).collect();
    // Equal scores keep their anchor order (MediaPipe's std::sort leaves ties unspecified).
    order.sort_by(|&a, &b| {
        detections[b]
            .score
            .partial_cmp(&detections[a].score)
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let mut out = Vec::new();
    while let Some(&top) = order.first() {
        let best = &detections[top];
        // The best always leaves the list, even when it does not overlap itself (NaN).
        let (candidates, rest): (Vec<usize>, Vec<usize>) = order
            .iter()
            .partition(|&&i| i == top || iou(&detections[i], best) > threshold);
        let mut merged = best.clone();
        if !candidates.is_empty() {
            let total: f32 = candidates.iter().map(|&i| detections[i].score).sum();
            let mean = |f: &dyn Fn(&Detection) -> f32| {
                candidates
                    .iter()
                    .map(|&i| f(&detections[i]) * detections[i].score)
                    .sum::<f32>()
                    / total
            };
            let xmin = mean(&|d| d.xmin);
            let ymin = mean(&|d| d.ymin);
            let xmax = mean(&|d| d.xmin + d.width);
            let ymax = mean(&|d| d.ymin + d.height);
            merged.xmin = xmin;
            merged.ymin = ymin;
            merged.width = xmax - xmin;
            merged.height = ymax - ymin;
            for k in 0..merged.keypoints.len() {
                merged.keypoints[k] = [mean(&|d| d.keypoints[k][0]), mean(&|d| d.keypoints[k][1])];
            }
        }
        out.push(merged);
        if max > 0 && out.len() >= max {
            break;
        }
        order = rest;
    }
    out
}

/// A rotated rectangle: center and size (normalized to the frame, or in pixels, as said
/// where used), rotation in radians (clockwise on the image, y down).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rect {
    pub x_center: f32,
    pub y_center: f32,
    pub width: f32,
    pub height: f32,
    pub rotation: f32,
}

/// The share of the tensor each side of a letterbox fills with border.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Letterbox {
    pub left: f32,
    pub top: f32,
    pub right: f32,
    pub bottom: f32,
}

impl Letterbox {
    /// `DetectionLetterboxRemovalCalculator`: a detection in tensor coordinates to frame
    /// coordinates (both normalized).
    pub fn remove(&self, d: &Detection) -> Detection {
        let [xmin, ymin] = self.remove_point([d.xmin, d.ymin]);
        Detection {
            score: d.score,
            xmin,
            ymin,
            width: d.width / (1.0 - self.left - self.right),
            height: d.height / (1.0 - self.top - self.bottom),
            keypoints: d.keypoints.iter().map(|&k| self.remove_point(k)).collect(),
        }
    }

    /// `LandmarkLetterboxRemovalCalculator` for one point.
    pub fn remove_point(&self, p: [f32; 2]) -> [f32; 2] {
        let sx = 1.0 - self.left - self.right;
        let sy = 1.0 - self.top - self.bottom;
        [(p[0] - self.left) / sx, (p[1] - self.top) / sy]
    }
}

/// `ImageToTensorCalculator`'s geometry: the region `roi` (pixels) of the frame as an
/// `out_w` x `out_h` tensor, its aspect kept by padding the region (letterbox) when
/// `keep_aspect_ratio`. Returns the matrix the `warp_perspective` kernel takes (output
/// pixel -> frame point, as OpenCV's warpPerspective maps the rotated rectangle's corners
/// onto the tensor's: top-left to (0, 0), bottom-right to (out_w, out_h)) and the
/// letterbox.
pub fn image_to_tensor(
    roi: Rect,
    keep_aspect_ratio: bool,
    out_w: u32,
    out_h: u32,
) -> ([f32; 9], Letterbox) {
    let mut r = roi;
    let mut lb = Letterbox::default();
    if keep_aspect_ratio {
        let tensor_ratio = out_h as f32 / out_w as f32;
        let roi_ratio = r.height / r.width;
        let (vertical, horizontal);
        if tensor_ratio > roi_ratio {
            let new_height = r.width * tensor_ratio;
            vertical = (new_height - r.height) / new_height;
            horizontal = 0.0;
            r.height = new_height;
        } else {
            let new_width = r.height / tensor_ratio;
            horizontal = (new_width - r.width) / new_width;
            vertical = 0.0;
            r.width = new_width;
        }
        lb = Letterbox {
            left: horizontal / 2.0,
            top: vertical / 2.0,
            right: horizontal / 2.0,
            bottom: vertical / 2.0,
        };
    }
    let (s, c) = r.rotation.sin_cos();
    let (ku, kv) = (r.width / out_w as f32, r.height / out_h as f32);
    let m = [
        c * ku,
        -s * kv,
        r.x_center - c * r.width / 2.0 + s * r.height / 2.0,
        s * ku,
        c * kv,
        r.y_center - s * r.width / 2.0 - c * r.height / 2.0,
        0.0,
        0.0,
        1.0,
    ];
    (m, lb)
}

/// An angle in [-pi, pi).
pub fn normalize_radians(a: f32) -> f32 {
    let two_pi = 2.0 * std::f32::consts::PI;
    a - two_pi * ((a + std::f32::consts::PI) / two_pi).floor()
}

/// `DetectionsToRectsCalculator` with rotation: the detection's box as a rectangle
/// (normalized), turned so the vector from keypoint `start` to keypoint `end` points at
/// `target_angle` (radians, counter-clockwise from +x as the image is seen).
pub fn detection_rect(
    d: &Detection,
    image_w: u32,
    image_h: u32,
    start: usize,
    end: usize,
    target_angle: f32,
) -> Rect {
    let (x0, y0) = (
        d.keypoints[start][0] * image_w as f32,
        d.keypoints[start][1] * image_h as f32,
    );
    let (x1, y1) = (
        d.keypoints[end][0] * image_w as f32,
        d.keypoints[end][1] * image_h as f32,
    );
    Rect {
        x_center: d.xmin + d.width / 2.0,
        y_center: d.ymin + d.height / 2.0,
        width: d.width,
        height: d.height,
        rotation: normalize_radians(target_angle - (-(y1 - y0)).atan2(x1 - x0)),
    }
}

/// `RectTransformationCalculatorOptions`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RectTransform {
    pub scale_x: f32,
    pub scale_y: f32,
    pub shift_x: f32,
    pub shift_y: f32,
    pub square_long: bool,
}

/// `RectTransformationCalculator` on a normalized rectangle of a `image_w` x `image_h`
/// frame: shifted along its own axes, made square on its long side (in pixels), scaled.
pub fn transform_rect(r: Rect, image_w: u32, image_h: u32, t: &RectTransform) -> Rect {
    let (iw, ih) = (image_w as f32, image_h as f32);
    let mut out = r;
    if r.rotation == 0.0 {
        out.x_center += r.width * t.shift_x;
        out.y_center += r.height * t.shift_y;
    } else {
        let (s, c) = r.rotation.sin_cos();
        let x_shift = (iw * r.width * t.shift_x * c - ih * r.height * t.shift_y * s) / iw;
        let y_shift = (iw * r.width * t.shift_x * s + ih * r.height * t.shift_y * c) / ih;
        out.x_center += x_shift;
        out.y_center += y_shift;
    }
    if t.square_long {
        let long = (r.width * iw).max(r.height * ih);
        out.width = long / iw;
        out.height = long / ih;
    }
    out.width *= t.scale_x;
    out.height *= t.scale_y;
    out
}

/// `TensorsToLandmarksCalculator` + `LandmarkLetterboxRemovalCalculator` +
/// `LandmarkProjectionCalculator`: `raw` holds (x, y, z) per landmark in tensor pixels;
/// the result is normalized to the frame (z divided by the tensor width and
/// `normalize_z`, then scaled by the rectangle's width; the letterbox leaves it).
pub fn project_landmarks(
    raw: &[f32],
    tensor_w: u32,
    tensor_h: u32,
    normalize_z: f32,
    letterbox: &Letterbox,
    rect: &Rect,
) -> Vec<[f32; 3]> {
    let (s, c) = rect.rotation.sin_cos();
    raw.chunks_exact(3)
        .map(|p| {
            let [x, y] = letterbox.remove_point([p[0] / tensor_w as f32, p[1] / tensor_h as f32]);
            let (x, y) = (x - 0.5, y - 0.5);
            let z = p[2] / tensor_w as f32 / normalize_z;
            [
                (c * x - s * y) * rect.width + rect.x_center,
                (s * x + c * y) * rect.height + rect.y_center,
                z * rect.width,
            ]
        })
        .collect()
}

#[cfg(test)]
mod tests;
