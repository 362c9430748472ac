//! MediaPipe's hand tracking, both models and all the glue on the engine's GPU runner,
//! against MediaPipe's own hands solution (0.10.14, model_complexity 0: the same lite
//! pair) on three real photos of a hand (fixture `hands-oracle`: the npm package
//! fingerpose's photos, run through the solution by `scripts/mediapipe_hands_oracle.py`,
//! with the decoded pixels it saw). Every stage is compared: the palm detections after
//! weighted NMS, the region each gives the landmark model, and the 21 landmarks in pixels.

use m2w_vision::hands::{HandsConfig, NativeHands};

fn fixture(name: &str) -> std::path::PathBuf {
    m2w_setup::fixture(name)
        .unwrap_or_else(|e| panic!("fixture {name}: {e} (run `cargo xtask fixtures`)"))
}

/// The stated tolerances, in pixels of the 480x640 photos. The palm detector and the
/// landmark model match LiteRT per operator (crates/validate/tests/tflite.rs); what is left
/// is the crop: MediaPipe warps with OpenCV's fixed-point bilinear weights, the engine
/// with f32 weights at the same 1/32-pixel points, so a few input values may differ by one
/// level of 255. Measured (lavapipe): palms and regions within 5e-4 px, landmarks within
/// 0.17 px.
const PALM_PX: f32 = 0.01;
const RECT_PX: f32 = 0.01;
const LANDMARK_PX: f32 = 0.5;

fn f(v: &serde_json::Value) -> f32 {
    v.as_f64().unwrap() as f32
}

#[test]
fn hand_landmarks_match_mediapipe_on_real_photos() {
    let oracle_path = fixture("hands-oracle");
    let dir = oracle_path.parent().unwrap();
    let oracle: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&oracle_path).unwrap()).unwrap();
    let gpu = m2w_engine::gpu::Gpu::new().unwrap();
    let hands = NativeHands::new(
        &gpu,
        &fixture("palm-detection-lite"),
        &fixture("hand-landmark-lite"),
        HandsConfig::mediapipe_lite(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let images = oracle["images"].as_array().unwrap();
    assert_eq!(images.len(), 3);
    let mut worst = (0f32, 0f32, 0f32);
    for image in images {
        let name = image["file"].as_str().unwrap();
        let stem = name.rsplit_once('.').unwrap().0;
        let (w, h) = (
            image["width"].as_u64().unwrap() as u32,
            image["height"].as_u64().unwrap() as u32,
        );
        let pixels =
            m2w_reference::HostTensor::read_npy(&dir.join(format!("{stem}.rgb.npy"))).unwrap();
        let m2w_reference::HostTensor::U8(shape, rgb) = pixels else {
            panic!("{stem}: not uint8 pixels");
        };
        assert_eq!(shape, [h as u64, w as u64, 3]);
        let rgba: Vec<u8> = rgb
            .chunks_exact(3)
            .flat_map(|p| [p[0], p[1], p[2], 255])
            .collect();
        let found = hands.detect(&rgba, w, h).unwrap_or_else(|e| panic!("{e}"));
        let want = image["hands"].as_array().unwrap();
        assert_eq!(found.len(), want.len(), "{name}: hands found");
        assert!(!found.is_empty(), "{name}: the oracle has a hand");

        let palms = image["palm_detections"].as_array().unwrap();
        let rects = image["hand_rects_from_palm_detections"].as_array().unwrap();
        for (k, hand) in found.iter().enumerate() {
            // The palm: score, box corner and keypoints, in pixels.
            let p = &palms[k];
            assert!(
                (hand.palm.score - f(&p["score"])).abs() < 1e-3,
                "{name}: palm score"
            );
            let mut palm_err = (hand.palm.xmin - f(&p["bbox"]["xmin"])).abs() * w as f32;
            palm_err = palm_err.max((hand.palm.ymin - f(&p["bbox"]["ymin"])).abs() * h as f32);
            for (kp, want) in hand
                .palm
                .keypoints
                .iter()
                .zip(p["keypoints"].as_array().unwrap())
            {
                palm_err = palm_err.max((kp[0] - f(&want["x"])).abs() * w as f32);
                palm_err = palm_err.max((kp[1] - f(&want["y"])).abs() * h as f32);
            }
            // The region the landmark model sees.
            let r = &rects[k];
            let rect_err = [
                (hand.rect.x_center - f(&r["x_center"])).abs() * w as f32,
                (hand.rect.y_center - f(&r["y_center"])).abs() * h as f32,
                (hand.rect.width - f(&r["width"])).abs() * w as f32,
                (hand.rect.height - f(&r["height"])).abs() * h as f32,
                (hand.rect.rotation - f(&r["rotation"])).abs() * hand.rect.width * w as f32,
            ]
            .into_iter()
            .fold(0f32, f32::max);
            // The landmarks.
            let lms = want[k]["landmarks"].as_array().unwrap();
            let mut lm_err = 0f32;
            for (got, want) in hand.landmarks.iter().zip(lms) {
                let dx = got[0] * w as f32 - f(&want["px"]);
                let dy = got[1] * h as f32 - f(&want["py"]);
                lm_err = lm_err.max(dx.hypot(dy));
            }
            let label = if hand.handedness > 0.5 {
                "Left"
            } else {
                "Right"
            };
            assert_eq!(label, want[k]["handedness"]["label"], "{name}");
            eprintln!(
                "{name}: palm {palm_err:.3} px, region {rect_err:.3} px, landmarks {lm_err:.3} px (presence {:.3})",
                hand.presence
            );
            worst = (
                worst.0.max(palm_err),
                worst.1.max(rect_err),
                worst.2.max(lm_err),
            );
            assert!(palm_err <= PALM_PX, "{name}: palm off by {palm_err} px");
            assert!(rect_err <= RECT_PX, "{name}: region off by {rect_err} px");
            assert!(
                lm_err <= LANDMARK_PX,
                "{name}: a landmark off by {lm_err} px"
            );
        }
    }
    eprintln!(
        "worst: palm {:.3} px, region {:.3} px, landmarks {:.3} px",
        worst.0, worst.1, worst.2
    );
}
