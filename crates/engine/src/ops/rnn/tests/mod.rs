use crate::ops::testing::{assert_close, node, values};
use crate::tensor::HostTensor;

const T: usize = 3;
const B: usize = 2;
const I: usize = 5;
const H: usize = 4;

fn sigmoid(v: f64) -> f64 {
    1.0 / (1.0 + (-v).exp())
}

/// One direction of an ONNX LSTM (gate order i, o, f, c) over x [T, B, I]; w [4H, I],
/// r [4H, H], bias [8H] (Wb then Rb), h0/c0 [B, H]. Returns Y as [T][B*H] and the final
/// h and c.
fn lstm_ref(
    x: &[f32],
    w: &[f32],
    r: &[f32],
    bias: &[f32],
    h0: &[f32],
    c0: &[f32],
    reverse: bool,
) -> (Vec<Vec<f32>>, Vec<f32>, Vec<f32>) {
    let mut h: Vec<f64> = h0.iter().map(|&v| v as f64).collect();
    let mut c: Vec<f64> = c0.iter().map(|&v| v as f64).collect();
    let mut ys = vec![Vec::new(); T];
    let steps: Vec<usize> = if reverse {
        (0..T).rev().collect()
    } else {
        (0..T).collect()
    };
    for t in steps {
        let mut nh = vec![0.0; B * H];
        let mut nc = vec![0.0; B * H];
        for b in 0..B {
            // Pre-activations of the 4H gate rows.
            let gate = |row: usize| {
                let mut acc = bias[row] as f64 + bias[4 * H + row] as f64;
                for k in 0..I {
                    acc += w[row * I + k] as f64 * x[(t * B + b) * I + k] as f64;
                }
                for k in 0..H {
                    acc += r[row * H + k] as f64 * h[b * H + k];
                }
                acc
            };
            for j in 0..H {
                let i_g = sigmoid(gate(j));
                let o_g = sigmoid(gate(H + j));
                let f_g = sigmoid(gate(2 * H + j));
                let c_g = gate(3 * H + j).tanh();
                let cc = f_g * c[b * H + j] + i_g * c_g;
                nc[b * H + j] = cc;
                nh[b * H + j] = o_g * cc.tanh();
            }
        }
        h = nh;
        c = nc;
        ys[t] = h.iter().map(|&v| v as f32).collect();
    }
    let f = |v: Vec<f64>| v.into_iter().map(|x| x as f32).collect();
    (ys, f(h), f(c))
}

struct Weights {
    x: Vec<f32>,
    w: Vec<f32>,
    r: Vec<f32>,
    b: Vec<f32>,
    h0: Vec<f32>,
    c0: Vec<f32>,
}

fn weights(dirs: usize) -> Weights {
    Weights {
        x: values(T * B * I, 1),
        w: values(dirs * 4 * H * I, 2),
        r: values(dirs * 4 * H * H, 3),
        b: values(dirs * 8 * H, 4),
        h0: values(dirs * B * H, 5),
        c0: values(dirs * B * H, 6),
    }
}

fn lstm_node(p: &Weights, dirs: usize) -> crate::ops::testing::NodeTest {
    node("LSTM")
        .input("x", HostTensor::f32(vec![T, B, I], p.x.clone()))
        .constant("w", HostTensor::f32(vec![dirs, 4 * H, I], p.w.clone()))
        .constant("r", HostTensor::f32(vec![dirs, 4 * H, H], p.r.clone()))
        .constant("b", HostTensor::f32(vec![dirs, 8 * H], p.b.clone()))
        .skip_input()
        .input("h0", HostTensor::f32(vec![dirs, B, H], p.h0.clone()))
        .input("c0", HostTensor::f32(vec![dirs, B, H], p.c0.clone()))
        .int("hidden_size", H as i64)
        .outputs(&["y", "y_h", "y_c"])
}

#[test]
fn lstm_forward_with_bias_and_initial_state() {
    let p = weights(1);
    let got = lstm_node(&p, 1).run().unwrap();
    let (ys, h, c) = lstm_ref(&p.x, &p.w, &p.r, &p.b, &p.h0, &p.c0, false);
    let want_y: Vec<f32> = ys.concat();
    assert_close(&got[0], &[T, 1, B, H], &want_y, 1e-5, 1e-5);
    assert_close(&got[1], &[1, B, H], &h, 1e-5, 1e-5);
    assert_close(&got[2], &[1, B, H], &c, 1e-5, 1e-5);
}

#[test]
fn lstm_bidirectional_runs_the_second_direction_in_reverse() {
    let p = weights(2);
    // One step per dispatch: h and c pass between chunks through the state buffer.
    let got = lstm_node(&p, 2)
        .string("direction", "bidirectional")
        .rnn_chunk_work(1)
        .run()
        .unwrap();
    let part = |v: &[f32], d: usize, n: usize| v[d * n..(d + 1) * n].to_vec();
    let (yf, hf, cf) = lstm_ref(
        &p.x,
        &part(&p.w, 0, 4 * H * I),
        &part(&p.r, 0, 4 * H * H),
        &part(&p.b, 0, 8 * H),
        &part(&p.h0, 0, B * H),
        &part(&p.c0, 0, B * H),
        false,
    );
    let (yr, hr, cr) = lstm_ref(
        &p.x,
        &part(&p.w, 1, 4 * H * I),
        &part(&p.r, 1, 4 * H * H),
        &part(&p.b, 1, 8 * H),
        &part(&p.h0, 1, B * H),
        &part(&p.c0, 1, B * H),
        true,
    );
    // Y is [T, 2, B, H]: per step, the forward then the reverse hidden state.
    let want_y: Vec<f32> = (0..T)
        .flat_map(|t| [yf[t].clone(), yr[t].clone()].concat())
        .collect();
    assert_close(&got[0], &[T, 2, B, H], &want_y, 1e-5, 1e-5);
    assert_close(&got[1], &[2, B, H], &[hf, hr].concat(), 1e-5, 1e-5);
    assert_close(&got[2], &[2, B, H], &[cf, cr].concat(), 1e-5, 1e-5);
}

#[test]
fn lstm_with_clip_or_sequence_lens_is_refused() {
    let p = weights(1);
    let err = lstm_node(&p, 1).float("clip", 1.0).plan().unwrap_err();
    assert!(err.contains("clip"), "{err}");
    let err = node("LSTM")
        .input("x", HostTensor::f32(vec![T, B, I], p.x.clone()))
        .constant("w", HostTensor::f32(vec![1, 4 * H, I], p.w.clone()))
        .constant("r", HostTensor::f32(vec![1, 4 * H, H], p.r.clone()))
        .skip_input()
        .constant("lens", HostTensor::i64(vec![B], vec![3, 2]))
        .int("hidden_size", H as i64)
        .plan()
        .unwrap_err();
    assert!(err.contains("sequence_lens"), "{err}");
}

/// One direction of an ONNX GRU (gates z, r, h) over x [T, B, I]; w [3H, I], r [3H, H],
/// bias [6H] (Wb then Rb), h0 [B, H], per-row lengths (steps at or past a row's length
/// leave its state alone and give zeros). Returns Y as [T][B*H] and the final h.
#[allow(clippy::too_many_arguments)]
fn gru_ref(
    x: &[f32],
    w: &[f32],
    r: &[f32],
    bias: &[f32],
    h0: &[f32],
    lens: &[usize],
    reverse: bool,
    linear_before_reset: bool,
) -> (Vec<Vec<f32>>, Vec<f32>) {
    let mut h: Vec<f64> = h0.iter().map(|&v| v as f64).collect();
    let mut ys = vec![vec![0f32; B * H]; T];
    for bb in 0..B {
        let steps: Vec<usize> = if reverse {
            (0..lens[bb]).rev().collect()
        } else {
            (0..lens[bb]).collect()
        };
        for t in steps {
            let hp: Vec<f64> = h[bb * H..(bb + 1) * H].to_vec();
            let dot_x = |row: usize| -> f64 {
                (0..I)
                    .map(|q| w[row * I + q] as f64 * x[(t * B + bb) * I + q] as f64)
                    .sum::<f64>()
                    + bias[row] as f64
            };
            let dot_h = |row: usize, v: &[f64]| -> f64 {
                (0..H).map(|q| r[row * H + q] as f64 * v[q]).sum::<f64>() + bias[3 * H + row] as f64
            };
            let z: Vec<f64> = (0..H).map(|j| sigmoid(dot_x(j) + dot_h(j, &hp))).collect();
            let rg: Vec<f64> = (0..H)
                .map(|j| sigmoid(dot_x(H + j) + dot_h(H + j, &hp)))
                .collect();
            let rh: Vec<f64> = (0..H).map(|j| rg[j] * hp[j]).collect();
            for j in 0..H {
                let rec = if linear_before_reset {
                    rg[j] * dot_h(2 * H + j, &hp)
                } else {
                    dot_h(2 * H + j, &rh)
                };
                let hh = (dot_x(2 * H + j) + rec).tanh();
                h[bb * H + j] = (1.0 - z[j]) * hh + z[j] * hp[j];
                ys[t][bb * H + j] = h[bb * H + j] as f32;
            }
        }
    }
    (ys, h.iter().map(|&v| v as f32).collect())
}

#[test]
fn gru_both_reset_modes_with_sequence_lengths_and_both_directions() {
    let x = values(T * B * I, 31);
    let h0 = values(B * H, 32);
    let lens = [T, T - 1];
    for linear_before_reset in [0, 1] {
        for bidirectional in [false, true] {
            let d = if bidirectional { 2 } else { 1 };
            let w = values(d * 3 * H * I, 33);
            let r = values(d * 3 * H * H, 34);
            let bias = values(d * 6 * H, 35);
            let h0d: Vec<f32> = (0..d).flat_map(|_| h0.clone()).collect();
            let got = node("GRU")
                .input("x", HostTensor::f32(vec![T, B, I], x.clone()))
                .constant("w", HostTensor::f32(vec![d, 3 * H, I], w.clone()))
                .constant("r", HostTensor::f32(vec![d, 3 * H, H], r.clone()))
                .constant("b", HostTensor::f32(vec![d, 6 * H], bias.clone()))
                .input(
                    "lens",
                    HostTensor::i64(vec![B], lens.iter().map(|&l| l as i64).collect()),
                )
                .input("h0", HostTensor::f32(vec![d, B, H], h0d))
                .int("hidden_size", H as i64)
                .int("linear_before_reset", linear_before_reset)
                .string(
                    "direction",
                    if bidirectional {
                        "bidirectional"
                    } else {
                        "forward"
                    },
                )
                .outputs(&["y", "y_h"])
                // Both directions one step per dispatch, the forward one in one dispatch.
                .rnn_chunk_work(if bidirectional { 1 } else { 1 << 20 })
                .run()
                .unwrap();
            let mut want_y = vec![0f32; T * d * B * H];
            let mut want_h = Vec::new();
            for dir in 0..d {
                let (ys, hn) = gru_ref(
                    &x,
                    &w[dir * 3 * H * I..(dir + 1) * 3 * H * I],
                    &r[dir * 3 * H * H..(dir + 1) * 3 * H * H],
                    &bias[dir * 6 * H..(dir + 1) * 6 * H],
                    &h0,
                    &lens,
                    dir == 1,
                    linear_before_reset != 0,
                );
                for (t, row) in ys.iter().enumerate() {
                    want_y[(t * d + dir) * B * H..(t * d + dir + 1) * B * H].copy_from_slice(row);
                }
                want_h.extend(hn);
            }
            let tag = format!("linear_before_reset {linear_before_reset}, directions {d}");
            assert_eq!(got[0].shape, vec![T, d, B, H], "{tag}");
            assert_close(&got[0], &[T, d, B, H], &want_y, 1e-5, 1e-5);
            assert_close(&got[1], &[d, B, H], &want_h, 1e-5, 1e-5);
        }
    }
}

#[test]
fn gru_batch_first_equals_time_major_and_custom_activations_are_refused() {
    let base = || {
        node("GRU")
            .input("x", HostTensor::f32(vec![T, B, I], values(T * B * I, 1)))
            .constant(
                "w",
                HostTensor::f32(vec![1, 3 * H, I], values(3 * H * I, 2)),
            )
            .constant(
                "r",
                HostTensor::f32(vec![1, 3 * H, H], values(3 * H * H, 3)),
            )
    };
    // layout 1: X [B, T, I] in, Y [B, T, D, H] out, the same numbers as time-major.
    let x = values(T * B * I, 1);
    let xt: Vec<f32> = (0..B * T * I)
        .map(|k| {
            let (b, t, i) = (k / (T * I), (k / I) % T, k % I);
            x[(t * B + b) * I + i]
        })
        .collect();
    let time_major = base().outputs(&["y", "y_h"]).run().unwrap();
    let batch_first = node("GRU")
        .int("layout", 1)
        .outputs(&["y", "y_h"])
        .input("x", HostTensor::f32(vec![B, T, I], xt))
        .constant(
            "w",
            HostTensor::f32(vec![1, 3 * H, I], values(3 * H * I, 2)),
        )
        .constant(
            "r",
            HostTensor::f32(vec![1, 3 * H, H], values(3 * H * H, 3)),
        )
        .run()
        .unwrap();
    let crate::tensor::Data::F32(y) = &time_major[0].data else {
        panic!()
    };
    let want: Vec<f32> = (0..B * T * H)
        .map(|k| {
            let (b, t, h) = (k / (T * H), (k / H) % T, k % H);
            y[(t * B + b) * H + h]
        })
        .collect();
    assert_close(&batch_first[0], &[B, T, 1, H], &want, 0.0, 0.0);
    let crate::tensor::Data::F32(yh) = &time_major[1].data else {
        panic!()
    };
    assert_close(&batch_first[1], &[B, 1, H], yh, 0.0, 0.0);
    let e = base()
        .attr(
            "activations",
            m2w_model::AttrValue::Strings(vec!["Relu".into(), "Tanh".into()]),
        )
        .plan()
        .unwrap_err();
    assert!(e.contains("activations"), "{e}");
    // The defaults, spelled out, run.
    base()
        .attr(
            "activations",
            m2w_model::AttrValue::Strings(vec!["Sigmoid".into(), "Tanh".into()]),
        )
        .plan()
        .unwrap();
}

#[test]
fn rnn_reverse_with_bias_initial_state_and_sequence_lengths() {
    let x = values(T * B * I, 41);
    let w = values(H * I, 42);
    let r = values(H * H, 43);
    let bias = values(2 * H, 44);
    let h0 = values(B * H, 45);
    let lens = [T - 1, T];
    let got = node("RNN")
        .input("x", HostTensor::f32(vec![T, B, I], x.clone()))
        .constant("w", HostTensor::f32(vec![1, H, I], w.clone()))
        .constant("r", HostTensor::f32(vec![1, H, H], r.clone()))
        .constant("b", HostTensor::f32(vec![1, 2 * H], bias.clone()))
        .input(
            "lens",
            HostTensor::i64(vec![B], lens.iter().map(|&l| l as i64).collect()),
        )
        .input("h0", HostTensor::f32(vec![1, B, H], h0.clone()))
        .string("direction", "reverse")
        .int("hidden_size", H as i64)
        .outputs(&["y", "y_h"])
        .rnn_chunk_work(1)
        .run()
        .unwrap();
    // CPU: h_t = tanh(W x_t + R h_{t-1} + Wb + Rb), from each row's last step down.
    let mut h: Vec<f64> = h0.iter().map(|&v| v as f64).collect();
    let mut y = vec![0f32; T * B * H];
    for bb in 0..B {
        for t in (0..lens[bb]).rev() {
            let hp: Vec<f64> = h[bb * H..(bb + 1) * H].to_vec();
            for j in 0..H {
                let mut acc = bias[j] as f64 + bias[H + j] as f64;
                for q in 0..I {
                    acc += w[j * I + q] as f64 * x[(t * B + bb) * I + q] as f64;
                }
                for q in 0..H {
                    acc += r[j * H + q] as f64 * hp[q];
                }
                h[bb * H + j] = acc.tanh();
                y[(t * B + bb) * H + j] = h[bb * H + j] as f32;
            }
        }
    }
    assert_close(&got[0], &[T, 1, B, H], &y, 1e-5, 1e-5);
    let hn: Vec<f32> = h.iter().map(|&v| v as f32).collect();
    assert_close(&got[1], &[1, B, H], &hn, 1e-5, 1e-5);
}

/// DynamicQuantizeLinear's parameters and values on the CPU (uint8).
fn dyn_quant(v: &[f32]) -> (Vec<i64>, f32, i64) {
    let lo = v.iter().fold(0f32, |a, &b| a.min(b));
    let hi = v.iter().fold(0f32, |a, &b| a.max(b));
    let scale = if hi == lo { 1.0 } else { (hi - lo) / 255.0 };
    let zp = (0.0 - lo / scale).clamp(0.0, 255.0).round_ties_even() as i64;
    let q = v
        .iter()
        .map(|&x| ((x / scale).round_ties_even() as i64 + zp).clamp(0, 255) - zp)
        .collect();
    (q, scale, zp)
}

#[test]
fn dynamic_quantize_lstm_quantizes_x_once_and_h_every_step() {
    dynamic_quantize_lstm_against_cpu(3, 4, 5);
}

/// 150 steps of 256 units: in one dispatch, lavapipe's reads went to zero from step 62.
#[test]
fn dynamic_quantize_lstm_long_sequence_full_width() {
    dynamic_quantize_lstm_against_cpu(150, 8, 256);
}

fn dynamic_quantize_lstm_against_cpu(t: usize, i: usize, h: usize) {
    let g = 4 * h;
    let x = values(t * i, 31);
    let w: Vec<i64> = (0..i * g).map(|k| ((k * 37) % 255) as i64 - 127).collect();
    let r: Vec<i64> = (0..h * g).map(|k| ((k * 53) % 255) as i64 - 127).collect();
    let (wz, rz) = (3i64, -2i64);
    let (ws, rs) = (0.01f32, 0.02f32);
    let bias: Vec<f32> = values(2 * g, 32).iter().map(|v| v * 0.1).collect();
    let nt = node("DynamicQuantizeLSTM")
        .domain("com.microsoft")
        .int("hidden_size", h as i64)
        .outputs(&["y", "y_h", "y_c"])
        .input("x", HostTensor::f32(vec![t, 1, i], x.clone()))
        .constant("w", HostTensor::i64(vec![1, i, g], w.clone()))
        .declare("w", m2w_model::DType::I8)
        .constant("r", HostTensor::i64(vec![1, h, g], r.clone()))
        .declare("r", m2w_model::DType::I8)
        .constant("b", HostTensor::f32(vec![1, 2 * g], bias.clone()))
        .skip_input()
        .skip_input()
        .skip_input()
        .skip_input()
        .constant("ws", HostTensor::f32(vec![1], vec![ws]))
        .constant("wz", HostTensor::i64(vec![1], vec![wz]))
        .constant("rs", HostTensor::f32(vec![1], vec![rs]))
        .constant("rz", HostTensor::i64(vec![1], vec![rz]));
    let got = nt.run().unwrap();
    let (xq, xs, _) = dyn_quant(&x);
    let sig = |v: f32| 1.0 / (1.0 + (-v).exp());
    let (mut hv, mut c) = (vec![0f32; h], vec![0f32; h]);
    let mut want_y = Vec::new();
    for step in 0..t {
        let (hq, hs, _) = dyn_quant(&hv);
        let mut gates = vec![0f32; g];
        for (col, gate) in gates.iter_mut().enumerate() {
            let xdot: i64 = (0..i)
                .map(|k| xq[step * i + k] * (w[k * g + col] - wz))
                .sum();
            let hdot: i64 = (0..h).map(|k| hq[k] * (r[k * g + col] - rz)).sum();
            *gate = xdot as f32 * (xs * ws) + hdot as f32 * (hs * rs) + bias[col] + bias[g + col];
        }
        for j in 0..h {
            let (ig, og, fg) = (sig(gates[j]), sig(gates[h + j]), sig(gates[2 * h + j]));
            c[j] = fg * c[j] + ig * gates[3 * h + j].tanh();
            hv[j] = og * c[j].tanh();
        }
        want_y.extend_from_slice(&hv);
    }
    assert_close(&got[0], &[t, 1, 1, h], &want_y, 1e-5, 1e-4);
    assert_close(&got[1], &[1, 1, h], &hv, 1e-5, 1e-4);
    assert_close(&got[2], &[1, 1, h], &c, 1e-5, 1e-4);
}
