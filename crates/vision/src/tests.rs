use super::*;
use crate::hands::HandsConfig;

fn det(score: f32, xmin: f32, ymin: f32, w: f32, h: f32) -> Detection {
    Detection {
        score,
        xmin,
        ymin,
        width: w,
        height: h,
        keypoints: vec![[xmin, ymin]],
    }
}

#[test]
fn the_palm_detectors_anchors_are_two_per_cell_on_a_24_and_a_12_grid() {
    let a = ssd_anchors(&HandsConfig::mediapipe_lite().anchors);
    assert_eq!(a.len(), 24 * 24 * 2 + 12 * 12 * 6);
    let first = Anchor {
        x_center: 0.5 / 24.0,
        y_center: 0.5 / 24.0,
        w: 1.0,
        h: 1.0,
    };
    assert_eq!((a[0], a[1]), (first, first));
    // The stride-8 layer's cell (row 0, column 1), then the first stride-16 cell.
    assert_eq!(a[2].x_center, 1.5 / 24.0);
    assert_eq!(a[1152].x_center, 0.5 / 12.0);
    assert_eq!(a[1152 + 6].x_center, 1.5 / 12.0);
    assert_eq!(a[2015].y_center, 11.5 / 12.0);
}

#[test]
fn anchor_sizes_follow_the_scales_when_not_fixed() {
    let mut o = HandsConfig::mediapipe_lite().anchors;
    o.fixed_anchor_size = false;
    let a = ssd_anchors(&o);
    // Layer 0: scale 0.1484375 (aspect 1), then sqrt(scale0 * scale1).
    assert_eq!(a[0].w, 0.148_437_5);
    let s1 = 0.148_437_5 + (0.75 - 0.148_437_5) / 3.0;
    assert!((a[1].w - (0.148_437_5f32 * s1).sqrt()).abs() < 1e-7);
}

#[test]
fn decoding_scales_boxes_and_keypoints_by_the_anchor_and_drops_low_scores() {
    let mut o = HandsConfig::mediapipe_lite().decode;
    o.num_boxes = 2;
    o.num_keypoints = 1;
    o.num_coords = 6;
    let anchors = [Anchor {
        x_center: 0.25,
        y_center: 0.5,
        w: 1.0,
        h: 1.0,
    }; 2];
    // x, y, w, h, keypoint x, y (reverse_output_order), in tensor pixels.
    let boxes = [
        19.2, -9.6, 96.0, 48.0, 0.0, 19.2, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0,
    ];
    let scores = [2.0, -2.0];
    let d = decode(&boxes, &scores, &anchors, &o).unwrap();
    assert_eq!(d.len(), 1);
    let close = |a: f32, b: f32| (a - b).abs() < 1e-6;
    assert!(close(d[0].score, 1.0 / (1.0 + (-2.0f32).exp())));
    assert!(close(d[0].xmin, 0.35 - 0.25) && close(d[0].ymin, 0.45 - 0.125));
    assert!(close(d[0].width, 0.5) && close(d[0].height, 0.25));
    assert!(close(d[0].keypoints[0][0], 0.25) && close(d[0].keypoints[0][1], 0.6));
    assert!(decode(&boxes, &scores[..1], &anchors, &o).is_err());
}

#[test]
fn weighted_nms_merges_overlaps_by_score_and_keeps_the_best_score() {
    let dets = [
        det(0.6, 0.1, 0.1, 0.4, 0.4),
        det(0.9, 0.12, 0.1, 0.4, 0.4),
        det(0.8, 0.6, 0.6, 0.2, 0.2),
    ];
    let out = weighted_nms(&dets, 0.3, 0);
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].score, 0.9);
    let xmin = (0.9 * 0.12 + 0.6 * 0.1) / 1.5;
    assert!((out[0].xmin - xmin).abs() < 1e-6, "{}", out[0].xmin);
    assert!((out[0].keypoints[0][0] - xmin).abs() < 1e-6);
    // Alone, it is still "merged" with itself (as MediaPipe does): the same box up to
    // rounding.
    assert_eq!(out[1].score, 0.8);
    assert!((out[1].width - 0.2).abs() < 1e-6 && (out[1].xmin - 0.6).abs() < 1e-6);
    assert_eq!(weighted_nms(&dets, 0.3, 1).len(), 1);
}

#[test]
fn a_landscape_frame_is_letterboxed_top_and_bottom() {
    let frame = Rect {
        x_center: 320.0,
        y_center: 240.0,
        width: 640.0,
        height: 480.0,
        rotation: 0.0,
    };
    let (m, lb) = image_to_tensor(frame, true, 192, 192);
    assert_eq!(
        lb,
        Letterbox {
            left: 0.0,
            top: 0.125,
            right: 0.0,
            bottom: 0.125
        }
    );
    let at = |u: f32, v: f32| (m[0] * u + m[1] * v + m[2], m[3] * u + m[4] * v + m[5]);
    assert_eq!(at(0.0, 0.0), (0.0, -80.0));
    assert_eq!(at(192.0, 192.0), (640.0, 560.0));
    // A point of the tensor maps back where the letterbox removal says.
    let d = lb.remove(&det(1.0, 0.5, 0.125, 0.0, 0.0));
    assert_eq!((d.xmin, d.ymin), (0.5, 0.0));
}

#[test]
fn a_quarter_turn_maps_the_tensors_top_left_to_the_regions_rotated_corner() {
    let roi = Rect {
        x_center: 100.0,
        y_center: 50.0,
        width: 40.0,
        height: 40.0,
        rotation: std::f32::consts::FRAC_PI_2,
    };
    let (m, lb) = image_to_tensor(roi, true, 224, 224);
    assert_eq!(lb, Letterbox::default());
    let at = |u: f32, v: f32| (m[0] * u + m[1] * v + m[2], m[3] * u + m[4] * v + m[5]);
    // Turned clockwise (y down): the top-left corner (80, 30) goes to (120, 30).
    let (x, y) = at(0.0, 0.0);
    assert!(
        (x - 120.0).abs() < 1e-4 && (y - 30.0).abs() < 1e-4,
        "{x} {y}"
    );
    let (x, y) = at(112.0, 112.0);
    assert!((x - 100.0).abs() < 1e-4 && (y - 50.0).abs() < 1e-4);
}

#[test]
fn a_palm_pointing_up_gives_an_upright_square_region_shifted_toward_the_fingers() {
    let cfg = HandsConfig::mediapipe_lite();
    // Wrist (keypoint 0) below the middle finger's base (keypoint 2), on a 200x100 frame.
    let mut palm = det(0.9, 0.4, 0.4, 0.2, 0.4);
    palm.keypoints = vec![[0.5, 0.8], [0.0, 0.0], [0.5, 0.4]];
    let r = palm_rect_of(&cfg, &palm, 200, 100);
    assert!(r.rotation.abs() < 1e-6);
    // Square in pixels on the long side (0.4 * 100 = 40 px), times 2.6; shifted up by
    // half the box's height.
    assert!((r.width * 200.0 - 104.0).abs() < 1e-3 && (r.height * 100.0 - 104.0).abs() < 1e-3);
    assert!((r.y_center - (0.6 - 0.2)).abs() < 1e-6);
    // Pointing right instead: a quarter turn.
    palm.keypoints = vec![[0.3, 0.6], [0.0, 0.0], [0.6, 0.6]];
    let r = palm_rect_of(&cfg, &palm, 200, 100);
    assert!((r.rotation - std::f32::consts::FRAC_PI_2).abs() < 1e-6);
}

fn palm_rect_of(cfg: &HandsConfig, palm: &Detection, w: u32, h: u32) -> Rect {
    crate::hands::palm_rect(cfg, palm, w, h)
}

#[test]
fn landmarks_are_rotated_scaled_and_moved_into_the_frame() {
    let rect = Rect {
        x_center: 0.5,
        y_center: 0.25,
        width: 0.2,
        height: 0.4,
        rotation: std::f32::consts::FRAC_PI_2,
    };
    // The tensor's center, and a point right of it.
    let raw = [112.0, 112.0, 22.4, 224.0, 112.0, 0.0];
    let p = project_landmarks(&raw, 224, 224, 0.4, &Letterbox::default(), &rect);
    assert!((p[0][0] - 0.5).abs() < 1e-6 && (p[0][1] - 0.25).abs() < 1e-6);
    assert!((p[0][2] - 0.1 / 0.4 * 0.2).abs() < 1e-6);
    // (0.5, 0) turned a quarter: (0, 0.5), times the height.
    assert!((p[1][0] - 0.5).abs() < 1e-6 && (p[1][1] - (0.25 + 0.5 * 0.4)).abs() < 1e-6);
}
