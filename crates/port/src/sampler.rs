//! The oracle of the generated package's TypeScript sampler: draws of the native sampler
//! on synthetic logits, written next to the package's tests.

use std::path::Path;

/// Draws of the native sampler (`m2w_engine::llama::sample`) on synthetic logits, over the
/// settings a user can pass (temperature, top-k, top-p, repetition penalty, seed): the oracle
/// for the package's TypeScript sampler.
pub fn sampler_cases() -> serde_json::Value {
    use m2w_engine::llama::{Sampling, sample};
    let mut state: u64 = 0x853c_49e6_748f_ea9b;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut cases = Vec::new();
    for (i, (temperature, top_k, top_p, penalty)) in [
        (0.0, 0, 1.0, 1.0),
        (0.0, 0, 1.0, 1.3),
        (1.0, 0, 1.0, 1.0),
        (0.7, 0, 1.0, 1.0),
        (0.7, 40, 1.0, 1.0),
        (0.7, 40, 0.9, 1.0),
        (1.5, 5, 1.0, 1.0),
        (0.8, 0, 0.5, 1.1),
        (1.2, 100, 0.95, 1.3),
        (0.3, 1, 1.0, 1.0),
    ]
    .into_iter()
    .enumerate()
    {
        // 1000 logits spread like a language model's, with some exact ties, and NaNs in
        // every other case (JSON null: never picked).
        let logits: Vec<f32> = (0..1000)
            .map(|j| {
                if j % 97 == 3 {
                    4.5
                } else if i % 2 == 1 && j % 211 == 7 {
                    f32::NAN
                } else {
                    ((next() * 2.0 - 1.0) * 6.0) as f32
                }
            })
            .collect();
        // Seen tokens with repeats (the penalty applies once per distinct token).
        let mut seen: Vec<u32> = (0..20).map(|_| (next() * 1000.0) as u32).collect();
        seen.extend(seen[..5].to_vec());
        let s = Sampling {
            temperature,
            top_k,
            top_p,
            repetition_penalty: penalty,
            seed: 11 + i as u64,
        };
        let mut rng = s.seed ^ 0x9e37_79b9_7f4a_7c15;
        let draws: Vec<u32> = (0..6)
            .map(|_| sample(&logits, &seen, &s, &mut rng))
            .collect();
        cases.push(serde_json::json!({
            "logits": logits,
            "seen": seen,
            "options": {
                "temperature": temperature,
                "topK": top_k,
                "topP": top_p,
                "repetitionPenalty": penalty,
                "seed": s.seed,
            },
            "draws": draws,
        }));
    }
    serde_json::Value::Array(cases)
}

/// Writes [`sampler_cases`] to `path` (compact JSON, atomically).
pub fn write_sampler_cases(path: &Path) -> Result<(), crate::PortError> {
    m2w_model::io::write_atomic(path, sampler_cases().to_string().as_bytes())
        .map_err(|e| crate::input(format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_oracle_is_deterministic_and_never_draws_a_nan() {
        let a = super::sampler_cases();
        assert_eq!(a, super::sampler_cases());
        let cases = a.as_array().unwrap();
        assert_eq!(cases.len(), 10);
        for c in cases {
            let logits = c["logits"].as_array().unwrap();
            for d in c["draws"].as_array().unwrap() {
                let d = d.as_u64().unwrap() as usize;
                assert!(!logits[d].is_null(), "drew a NaN logit");
            }
        }
    }
}
