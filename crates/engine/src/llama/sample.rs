//! The CPU sampler (temperature, top-k, top-p, repetition penalty) and its settings.

/// Sampling settings; `temperature == 0` is greedy.
#[derive(Clone, Debug)]
pub struct Sampling {
    pub temperature: f32,
    pub top_k: usize,
    pub top_p: f32,
    pub repetition_penalty: f32,
    pub seed: u64,
}

impl Default for Sampling {
    fn default() -> Sampling {
        Sampling {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            repetition_penalty: 1.0,
            seed: 0,
        }
    }
}

/// Picks the next token from one row of logits (CPU side; greedy runs on the GPU).
/// The repetition penalty applies once per distinct token seen (as Hugging Face and
/// llama.cpp do). NaN logits are never picked; a row of NaN only gives token 0 (as the GPU
/// argmax does).
pub fn sample(logits: &[f32], seen: &[u32], s: &Sampling, rng: &mut u64) -> u32 {
    let mut l: Vec<f32> = logits.to_vec();
    if s.repetition_penalty != 1.0 {
        let distinct: std::collections::BTreeSet<u32> = seen.iter().copied().collect();
        for t in distinct {
            if let Some(v) = l.get_mut(t as usize) {
                *v = if *v > 0.0 {
                    *v / s.repetition_penalty
                } else {
                    *v * s.repetition_penalty
                };
            }
        }
    }
    // Largest first, ties by lower index (a stable sort): the order of the GPU's top-k.
    let mut idx: Vec<usize> = (0..l.len()).filter(|&i| !l[i].is_nan()).collect();
    if idx.is_empty() {
        return 0;
    }
    if s.temperature <= 0.0 {
        return idx
            .iter()
            .fold(idx[0], |best, &i| if l[i] > l[best] { i } else { best }) as u32;
    }
    idx.sort_by(|&a, &b| l[b].total_cmp(&l[a]));
    if s.top_k > 0 {
        idx.truncate(s.top_k);
    }
    let candidates: Vec<(u32, f32)> = idx.iter().map(|&i| (i as u32, l[i])).collect();
    sample_sorted(&candidates, s, rng)
}

/// Draws from candidates sorted largest first (the whole row, or the GPU's top k):
/// temperature, then top-p, then one xorshift64 draw.
pub fn sample_sorted(candidates: &[(u32, f32)], s: &Sampling, rng: &mut u64) -> u32 {
    let mx = candidates[0].1;
    let mut probs: Vec<f64> = candidates
        .iter()
        .map(|&(_, v)| (((v - mx) / s.temperature) as f64).exp())
        .collect();
    let total: f64 = probs.iter().sum();
    probs.iter_mut().for_each(|p| *p /= total);
    let mut keep = probs.len();
    let mut cum = 0.0;
    for (k, p) in probs.iter().enumerate() {
        cum += p;
        if cum >= s.top_p as f64 {
            keep = k + 1;
            break;
        }
    }
    let total: f64 = probs[..keep].iter().sum();
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    let mut r = (*rng >> 11) as f64 / (1u64 << 53) as f64 * total;
    for k in 0..keep {
        r -= probs[k];
        if r <= 0.0 {
            return candidates[k].0;
        }
    }
    candidates[keep - 1].0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn greedy_with_penalty(p: f32) -> Sampling {
        Sampling {
            repetition_penalty: p,
            ..Sampling::default()
        }
    }

    #[test]
    fn the_penalty_applies_once_per_distinct_token() {
        // Token 0 leads 2.0 to 1.5; a penalty of 1.2 once gives 1.667 (still ahead), applied
        // for each of three repeats it would give 1.157 (behind).
        let logits = [2.0f32, 1.5, -1.0];
        let mut rng = 1;
        let s = greedy_with_penalty(1.2);
        assert_eq!(sample(&logits, &[0, 0, 0], &s, &mut rng), 0);
        assert_eq!(
            sample(&logits, &[0], &greedy_with_penalty(1.5), &mut rng),
            1
        );
    }

    #[test]
    fn nan_logits_are_never_picked() {
        let logits = [f32::NAN, 1.0, f32::NAN, 3.0, 2.0];
        let mut rng = 5;
        assert_eq!(sample(&logits, &[], &Sampling::default(), &mut rng), 3);
        let s = Sampling {
            temperature: 1.0,
            top_k: 2,
            seed: 9,
            ..Sampling::default()
        };
        for _ in 0..50 {
            let t = sample(&logits, &[], &s, &mut rng);
            assert!(t == 3 || t == 4, "{t}");
        }
        assert_eq!(sample(&[f32::NAN; 4], &[], &s, &mut rng), 0);
    }
}
