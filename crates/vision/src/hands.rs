//! MediaPipe's hand tracking as one pipeline: the palm detector on a letterboxed frame,
//! the glue of this crate, the hand landmark model on a rotated crop of each palm. The
//! settings are MediaPipe's own ([`HandsConfig::mediapipe_lite`]); [`NativeHands`] runs the
//! whole pipeline on the engine's GPU runner, crops included.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// The port folder's manifest of a hand-tracking pipeline (written by `m2w_port::hands`,
/// read by the package generator).
pub const MANIFEST: &str = "hands.json";

use crate::warp::{self, Border};
use crate::{
    AnchorOptions, DecodeOptions, Detection, Rect, RectTransform, decode, detection_rect,
    image_to_tensor, project_landmarks, ssd_anchors, transform_rect, weighted_nms,
};

/// An image-to-tensor step: the model's input size, how the crop is padded, the range
/// values land in (`v * scale + offset` for v in 0..255).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TensorInput {
    pub width: u32,
    pub height: u32,
    pub keep_aspect_ratio: bool,
    pub border: Border,
    pub scale: f32,
    pub offset: f32,
    /// Sampled as OpenCV samples an 8-bit image (MediaPipe's CPU path).
    pub eight_bit: bool,
}

/// Every setting of the pipeline, as MediaPipe's graph configs state them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HandsConfig {
    pub detector_input: TensorInput,
    pub anchors: AnchorOptions,
    pub decode: DecodeOptions,
    /// NonMaxSuppressionCalculator: min_suppression_threshold (IoU, WEIGHTED).
    pub nms_threshold: f32,
    /// The most hands reported (max_num_hands).
    pub max_hands: usize,
    /// DetectionsToRectsCalculator: the keypoints whose direction sets the rotation, and
    /// the angle (degrees) it is turned to.
    pub rotation_start_keypoint: usize,
    pub rotation_end_keypoint: usize,
    pub target_angle_degrees: f32,
    pub roi_transform: RectTransform,
    pub landmark_input: TensorInput,
    pub num_landmarks: usize,
    /// TensorsToLandmarksCalculator's normalize_z: z is divided by the tensor width and by it.
    pub normalize_z: f32,
    /// The landmark model's outputs, by position: landmarks (x, y, z in tensor pixels),
    /// hand presence, handedness (both probabilities: the model ends in LOGISTIC).
    pub landmarks_output: usize,
    pub presence_output: usize,
    pub handedness_output: usize,
    /// Hands whose presence is not above this are dropped.
    pub min_presence: f32,
}

impl HandsConfig {
    /// Checks that the settings fit together (offsets within a box's values, a stride per
    /// layer, keypoints that exist), so the glue never reads past what it is given.
    pub fn validate(&self) -> Result<(), String> {
        let d = &self.decode;
        let keypoints_end = d.keypoint_coord_offset + d.num_keypoints * d.num_values_per_keypoint;
        let problems = [
            (
                self.anchors.strides.len() != self.anchors.num_layers,
                "a stride per anchor layer",
            ),
            (self.anchors.strides.contains(&0), "strides above 0"),
            (
                d.box_coord_offset + 4 > d.num_coords,
                "box coordinates within num_coords",
            ),
            (keypoints_end > d.num_coords, "keypoints within num_coords"),
            (d.num_values_per_keypoint < 2, "two values a keypoint"),
            (
                self.rotation_start_keypoint >= d.num_keypoints
                    || self.rotation_end_keypoint >= d.num_keypoints,
                "rotation keypoints among the keypoints",
            ),
            (
                [
                    self.detector_input.width,
                    self.detector_input.height,
                    self.landmark_input.width,
                    self.landmark_input.height,
                ]
                .contains(&0),
                "model inputs of some size",
            ),
        ];
        match problems.iter().find(|(bad, _)| *bad) {
            Some((_, want)) => Err(format!("hand-tracking settings: expected {want}")),
            None => Ok(()),
        }
    }

    /// MediaPipe 0.10.14's hands solution with model_complexity 0 (palm_detection_lite +
    /// hand_landmark_lite), from its graph configs (docs/HANDS_PIPELINE_NOTES.md says where
    /// each number comes from).
    pub fn mediapipe_lite() -> HandsConfig {
        HandsConfig {
            detector_input: TensorInput {
                width: 192,
                height: 192,
                keep_aspect_ratio: true,
                border: Border::Zero,
                scale: 1.0 / 255.0,
                offset: 0.0,
                eight_bit: true,
            },
            anchors: AnchorOptions {
                input_width: 192,
                input_height: 192,
                num_layers: 4,
                min_scale: 0.148_437_5,
                max_scale: 0.75,
                anchor_offset_x: 0.5,
                anchor_offset_y: 0.5,
                strides: vec![8, 16, 16, 16],
                aspect_ratios: vec![1.0],
                interpolated_scale_aspect_ratio: 1.0,
                reduce_boxes_in_lowest_layer: false,
                fixed_anchor_size: true,
            },
            decode: DecodeOptions {
                num_boxes: 2016,
                num_coords: 18,
                box_coord_offset: 0,
                keypoint_coord_offset: 4,
                num_keypoints: 7,
                num_values_per_keypoint: 2,
                x_scale: 192.0,
                y_scale: 192.0,
                w_scale: 192.0,
                h_scale: 192.0,
                reverse_output_order: true,
                apply_exponential_on_box_size: false,
                sigmoid_score: true,
                score_clipping_thresh: 100.0,
                min_score_thresh: 0.5,
            },
            nms_threshold: 0.3,
            max_hands: 2,
            rotation_start_keypoint: 0,
            rotation_end_keypoint: 2,
            target_angle_degrees: 90.0,
            roi_transform: RectTransform {
                scale_x: 2.6,
                scale_y: 2.6,
                shift_x: 0.0,
                shift_y: -0.5,
                square_long: true,
            },
            landmark_input: TensorInput {
                width: 224,
                height: 224,
                keep_aspect_ratio: true,
                border: Border::Replicate,
                scale: 1.0 / 255.0,
                offset: 0.0,
                eight_bit: true,
            },
            num_landmarks: 21,
            normalize_z: 0.4,
            landmarks_output: 0,
            presence_output: 1,
            handedness_output: 2,
            min_presence: 0.5,
        }
    }
}

/// One hand found in a frame.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hand {
    /// The palm detection (normalized to the frame) and its score.
    pub palm: Detection,
    /// The region the landmark model saw (normalized to the frame).
    pub rect: Rect,
    /// Hand presence (the model's probability).
    pub presence: f32,
    /// The model's handedness output: the probability of MediaPipe's label 0, "Left"
    /// ("Right" is 1 minus it), for a mirrored (selfie-view) image.
    pub handedness: f32,
    /// x, y normalized to the frame; z in the same scale as x.
    pub landmarks: Vec<[f32; 3]>,
}

/// The palm detections of a frame from the detector's raw outputs (boxes, scores), the
/// letterbox of its input: decoded, suppressed, moved to frame coordinates.
pub fn palms(
    cfg: &HandsConfig,
    raw_boxes: &[f32],
    raw_scores: &[f32],
    letterbox: &crate::Letterbox,
) -> Result<Vec<Detection>, String> {
    let anchors = ssd_anchors(&cfg.anchors);
    let found = decode(raw_boxes, raw_scores, &anchors, &cfg.decode)?;
    Ok(weighted_nms(&found, cfg.nms_threshold, cfg.max_hands)
        .iter()
        .map(|d| letterbox.remove(d))
        .collect())
}

/// The landmark model's crop region for a palm (normalized to the frame).
pub fn palm_rect(cfg: &HandsConfig, palm: &Detection, image_w: u32, image_h: u32) -> Rect {
    let r = detection_rect(
        palm,
        image_w,
        image_h,
        cfg.rotation_start_keypoint,
        cfg.rotation_end_keypoint,
        cfg.target_angle_degrees.to_radians(),
    );
    transform_rect(r, image_w, image_h, &cfg.roi_transform)
}

/// The pipeline on the engine's native runner: the two models' plans, and a crop plan made
/// for each crop (the frame's size may change from call to call).
pub struct NativeHands<'g> {
    cfg: HandsConfig,
    gpu: &'g m2w_engine::gpu::Gpu,
    palm: m2w_engine::gpu::Runner<'g>,
    hand: m2w_engine::gpu::Runner<'g>,
    palm_input: String,
    palm_outputs: Vec<String>,
    hand_input: String,
    hand_outputs: Vec<String>,
}

/// A model lowered and compiled for its declared input shape.
fn compile(path: &Path) -> Result<(m2w_engine::Plan, String, Vec<String>), String> {
    let mut model = m2w_model::Model::open(path).map_err(|e| e.to_string())?;
    m2w_engine::lower_source(&mut model).map_err(|e| format!("{}: {e}", path.display()))?;
    let graph = model.graph.as_ref().ok_or("no graph")?;
    let input = graph.inputs.first().ok_or("no input")?;
    let shape: Vec<usize> = input
        .shape
        .iter()
        .map(|d| match d {
            m2w_model::Dim::Fixed(v) if *v > 0 => Ok(*v as usize),
            _ => Err(format!("input '{}' has a dynamic dim", input.name)),
        })
        .collect::<Result<_, _>>()?;
    let outputs = graph.outputs.iter().map(|o| o.name.clone()).collect();
    let shapes = [(input.name.clone(), (shape, m2w_engine::DT::F32))]
        .into_iter()
        .collect();
    let mut plan = m2w_engine::compile(&model, &shapes).map_err(|e| e.to_string())?;
    plan.assign_buffers(true);
    Ok((plan, input.name.clone(), outputs))
}

impl<'g> NativeHands<'g> {
    pub fn new(
        gpu: &'g m2w_engine::gpu::Gpu,
        palm_model: &Path,
        hand_model: &Path,
        cfg: HandsConfig,
    ) -> Result<NativeHands<'g>, String> {
        cfg.validate()?;
        let (palm, palm_input, palm_outputs) = compile(palm_model)?;
        let (hand, hand_input, hand_outputs) = compile(hand_model)?;
        Ok(NativeHands {
            cfg,
            gpu,
            palm: m2w_engine::gpu::Runner::new(gpu, palm)?,
            hand: m2w_engine::gpu::Runner::new(gpu, hand)?,
            palm_input,
            palm_outputs,
            hand_input,
            hand_outputs,
        })
    }

    /// Crops `roi` (pixels) of the frame into a model's input tensor on the GPU.
    fn crop(
        &self,
        image: &m2w_engine::HostTensor,
        width: u32,
        height: u32,
        roi: Rect,
        input: &TensorInput,
    ) -> Result<(m2w_engine::HostTensor, crate::Letterbox), String> {
        let (matrix, letterbox) =
            image_to_tensor(roi, input.keep_aspect_ratio, input.width, input.height);
        let plan = warp::plan(
            width,
            height,
            input.width,
            input.height,
            3,
            input.border,
            input.scale,
            input.offset,
            input.eight_bit,
        );
        let runner = m2w_engine::gpu::Runner::new(self.gpu, plan)?;
        let inputs = HashMap::from([
            (warp::IMAGE.to_string(), image.clone()),
            (
                warp::MATRIX.to_string(),
                m2w_engine::HostTensor::f32(vec![9], matrix.to_vec()),
            ),
        ]);
        let mut out = runner.run(&inputs, &[warp::TENSOR.to_string()])?;
        let t = out.remove(warp::TENSOR).ok_or("the crop made no tensor")?;
        Ok((t, letterbox))
    }

    /// The hands in one RGBA frame (`width` x `height`, 4 bytes a pixel).
    pub fn detect(&self, rgba: &[u8], width: u32, height: u32) -> Result<Vec<Hand>, String> {
        if (width as usize)
            .checked_mul(height as usize)
            .and_then(|n| n.checked_mul(4))
            != Some(rgba.len())
        {
            return Err(format!(
                "{} bytes for a {width}x{height} RGBA frame",
                rgba.len()
            ));
        }
        let image = m2w_engine::HostTensor::i64(
            vec![height as usize, width as usize],
            warp::rgba_words(rgba),
        );
        let frame = Rect {
            x_center: width as f32 / 2.0,
            y_center: height as f32 / 2.0,
            width: width as f32,
            height: height as f32,
            rotation: 0.0,
        };
        let (tensor, letterbox) =
            self.crop(&image, width, height, frame, &self.cfg.detector_input)?;
        let out = self.palm.run(
            &HashMap::from([(self.palm_input.clone(), tensor)]),
            &self.palm_outputs,
        )?;
        // The detector's outputs: the boxes are the one of num_coords values a box.
        let (mut boxes, mut scores) = (None, None);
        for name in &self.palm_outputs {
            let t = out.get(name).ok_or("the detector made no output")?;
            if t.shape.last() == Some(&self.cfg.decode.num_coords) {
                boxes = Some(t.as_f64());
            } else {
                scores = Some(t.as_f64());
            }
        }
        let f32s = |v: Option<Vec<f64>>| -> Result<Vec<f32>, String> {
            Ok(v.ok_or("the detector lacks an output")?
                .iter()
                .map(|&x| x as f32)
                .collect())
        };
        let palms = palms(&self.cfg, &f32s(boxes)?, &f32s(scores)?, &letterbox)?;
        let mut hands = Vec::new();
        for palm in palms {
            let rect = palm_rect(&self.cfg, &palm, width, height);
            let px = Rect {
                x_center: rect.x_center * width as f32,
                y_center: rect.y_center * height as f32,
                width: rect.width * width as f32,
                height: rect.height * height as f32,
                rotation: rect.rotation,
            };
            let (tensor, letterbox) =
                self.crop(&image, width, height, px, &self.cfg.landmark_input)?;
            let out = self.hand.run(
                &HashMap::from([(self.hand_input.clone(), tensor)]),
                &self.hand_outputs,
            )?;
            let value = |k: usize, len: usize| -> Result<Vec<f32>, String> {
                let t = self
                    .hand_outputs
                    .get(k)
                    .and_then(|name| out.get(name))
                    .ok_or("the landmark model lacks an output")?;
                let v: Vec<f32> = t.as_f64().iter().map(|&x| x as f32).collect();
                if v.len() < len {
                    return Err(format!(
                        "a landmark model output of {} values, {len} read",
                        v.len()
                    ));
                }
                Ok(v)
            };
            // MediaPipe's ThresholdingCalculator keeps a hand above the threshold.
            let presence = value(self.cfg.presence_output, 1)?[0];
            if presence <= self.cfg.min_presence {
                continue;
            }
            let raw = value(self.cfg.landmarks_output, self.cfg.num_landmarks * 3)?;
            let landmarks = project_landmarks(
                &raw[..self.cfg.num_landmarks * 3],
                self.cfg.landmark_input.width,
                self.cfg.landmark_input.height,
                self.cfg.normalize_z,
                &letterbox,
                &rect,
            );
            hands.push(Hand {
                palm,
                rect,
                presence,
                handedness: value(self.cfg.handedness_output, 1)?[0],
                landmarks,
            });
        }
        Ok(hands)
    }
}
