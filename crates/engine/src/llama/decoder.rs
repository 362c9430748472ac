//! The native decoder: prefill, decode steps, the pipelined greedy loop and sampled generation.

use std::collections::HashMap;

use m2w_kernels::Kernel;
use m2w_model::Model;

use super::builder::param_word;
use super::{
    BuildOptions, Config, MAX_TOP_K, Sampling, build_opts, cache_names, position_patches, sample,
    sample_sorted,
};
use crate::gpu::{Gpu, Runner};
use crate::tensor::HostTensor;

/// Prefill + greedy decode on the GPU: a prefill runner for the prompt and one decode runner
/// (T = 1) reused for every step, sharing the weight and cache buffers.
pub struct Decoder<'g> {
    pub config: Config,
    pub prefill: Runner<'g>,
    pub decode: Runner<'g>,
    prompt_len: usize,
    ctx: usize,
    /// The next decode pass, recorded while the GPU ran the last one ([`Decoder::step`]).
    next_pass: std::cell::RefCell<Option<Vec<wgpu::CommandBuffer>>>,
}

impl<'g> Decoder<'g> {
    pub fn new(
        gpu: &'g Gpu,
        model: &Model,
        prompt_len: usize,
        ctx: usize,
    ) -> Result<Decoder<'g>, String> {
        Self::with_options(gpu, model, prompt_len, ctx, &BuildOptions::default())
    }

    /// [`Decoder::new`] with plans built with `opts` (a smaller binding limit splits more
    /// tables into row slices).
    pub fn with_options(
        gpu: &'g Gpu,
        model: &Model,
        prompt_len: usize,
        ctx: usize,
        opts: &BuildOptions,
    ) -> Result<Decoder<'g>, String> {
        Self::build(gpu, model, prompt_len, ctx, opts, false)
    }

    /// [`Decoder::new`] whose plans keep every stage tensor in its own buffer, so each can
    /// be read after a pass (validation against the reference's stages). The others share
    /// buffers over tensor lifetimes: a prefill of 1024 tokens would otherwise hold every
    /// layer's activations at once.
    pub fn with_capture(
        gpu: &'g Gpu,
        model: &Model,
        prompt_len: usize,
        ctx: usize,
    ) -> Result<Decoder<'g>, String> {
        Self::build(gpu, model, prompt_len, ctx, &BuildOptions::default(), true)
    }

    fn build(
        gpu: &'g Gpu,
        model: &Model,
        prompt_len: usize,
        ctx: usize,
        opts: &BuildOptions,
        capture: bool,
    ) -> Result<Decoder<'g>, String> {
        // Generation reads the prefill's last logits row only; validation reads them all.
        let opts = BuildOptions {
            last_logits: !capture,
            ..opts.clone()
        };
        let (mut pre, config) = build_opts(model, prompt_len, 0, ctx, &opts)?;
        let (mut dec, _) = build_opts(model, 1, prompt_len, ctx, &opts)?;
        if !capture {
            pre.assign_buffers(true);
            dec.assign_buffers(true);
        }
        // Weights and caches exist once: the decode plan uses the prefill plan's buffers.
        let mut shared: Vec<String> = pre.constants.keys().cloned().collect();
        shared.extend(cache_names(&config));
        // Generation stores each plan's short-lived tensors in shared slots (bounded memory
        // for long prompts; a write after a read of a reused buffer makes the GPU wait, so
        // it costs some overlap between dispatches); capture keeps one buffer per tensor.
        let (prefill, decode) = if capture {
            let prefill = Runner::new(gpu, pre)?;
            let decode = Runner::sharing(gpu, dec, Some(&prefill), &shared)?;
            (prefill, decode)
        } else {
            let prefill = Runner::sharing_slots(gpu, pre, None, &[])?;
            let decode = Runner::sharing_slots(gpu, dec, Some(&prefill), &shared)?;
            (prefill, decode)
        };
        Ok(Decoder {
            config,
            prefill,
            decode,
            prompt_len,
            ctx,
            next_pass: Default::default(),
        })
    }

    /// Points the decode plan at position `pos` (RoPE angle, cache slot, attention span).
    pub fn set_position(&self, pos: usize) {
        for patch in position_patches(&self.decode.plan) {
            let mut p = self.decode.plan.dispatches[patch.dispatch].params.clone();
            p[patch.word] = pos as u32 * patch.scale;
            self.decode.set_params(patch.dispatch, &p);
        }
    }

    /// How many candidates the plans' top-k dispatch selects per position (0: none).
    pub fn set_top_k(&self, k: usize) {
        for runner in [&self.prefill, &self.decode] {
            for (i, d) in runner.plan.dispatches.iter().enumerate() {
                if d.kernel == Kernel::TopkRowsF32 {
                    let mut p = d.params.clone();
                    p[param_word(Kernel::TopkRowsF32, "k")] = k.min(MAX_TOP_K) as u32;
                    runner.set_params(i, &p);
                }
            }
        }
    }

    /// Runs the prompt; returns the greedy next token (and leaves the caches in the decoder).
    pub fn run_prefill(&self, ids: &[u32]) -> Result<u32, String> {
        if ids.len() != self.prompt_len {
            return Err(format!(
                "the prefill plan takes {} tokens, got {}",
                self.prompt_len,
                ids.len()
            ));
        }
        let feed = HashMap::from([(
            "token_ids".to_string(),
            HostTensor::i64(vec![ids.len()], ids.iter().map(|&i| i as i64).collect()),
        )]);
        // The caches it fills are the decode plan's too (shared buffers).
        let out = self.prefill.run(&feed, &["next_token".to_string()])?;
        Ok(*out["next_token"].as_i64().last().expect("t >= 1") as u32)
    }

    /// One decode step of token `id` at position `pos`; returns the greedy next token.
    pub fn step(&self, id: u32, pos: usize) -> Result<u32, String> {
        if pos >= self.ctx {
            return Err(format!("position {pos} is past the cache of {}", self.ctx));
        }
        self.set_position(pos);
        let feed = HashMap::from([(
            "token_ids".to_string(),
            HostTensor::i64(vec![1], vec![id as i64]),
        )]);
        // The pass was recorded during the previous step's GPU time (the decode plan's
        // buffers and dims never change; the position and token are written before it is
        // submitted), and the next one is recorded while this one runs: per token the CPU
        // only writes, submits and reads back.
        let read = ["next_token".to_string()];
        let recorded = self.next_pass.borrow_mut().take();
        let out = match recorded.or_else(|| self.decode.record()) {
            Some(pass) => {
                self.decode.write_inputs(&feed)?;
                self.decode.submit_recorded(pass);
                *self.next_pass.borrow_mut() = self.decode.record();
                self.decode.read(&read)?
            }
            None => self.decode.run(&feed, &read)?,
        };
        Ok(out["next_token"].as_i64()[0] as u32)
    }

    /// Greedy generation of up to `max_new` tokens after the prompt (stops at `eos`).
    /// Pipelined: each decode pass copies its argmax into its own token input on the GPU,
    /// so pass n+1 is recorded and submitted before token n is read back (the CPU work of
    /// one step overlaps the GPU work of the other; at most two passes in flight).
    pub fn greedy(
        &self,
        prompt: &[u32],
        max_new: usize,
        eos: Option<u32>,
    ) -> Result<Vec<u32>, String> {
        let stop: Vec<u32> = eos.into_iter().collect();
        self.greedy_streamed(prompt, max_new, &stop, |_| {})
    }

    /// [`Decoder::greedy`] with any stop tokens and `on_token` called as each token arrives.
    pub fn greedy_streamed(
        &self,
        prompt: &[u32],
        max_new: usize,
        stop: &[u32],
        mut on_token: impl FnMut(u32),
    ) -> Result<Vec<u32>, String> {
        if max_new == 0 {
            return Ok(vec![]);
        }
        let first = self.run_prefill(prompt)?;
        on_token(first);
        let mut out = vec![first];
        if max_new <= 1 || stop.contains(&first) {
            return Ok(out);
        }
        self.decode
            .write("token_ids", &HostTensor::i64(vec![1], vec![first as i64]))?;
        // Pass k (k = 0..) reads the token at position prompt.len() + k.
        let passes = (max_new - 1).min(self.ctx.saturating_sub(prompt.len()));
        let mut in_flight = std::collections::VecDeque::new();
        let mut sent = 0;
        while out.len() < max_new {
            if sent < passes {
                self.set_position(prompt.len() + sent);
                in_flight.push_back(
                    self.decode
                        .submit_chained(&[("next_token", "token_ids")], "next_token")?,
                );
                sent += 1;
                if in_flight.len() < 2 && sent < passes {
                    continue;
                }
            }
            let Some(p) = in_flight.pop_front() else {
                break;
            };
            let t = self.decode.wait(p)?.as_i64()[0] as u32;
            on_token(t);
            out.push(t);
            if stop.contains(&t) {
                break;
            }
        }
        // Passes already submitted past a stop finish on their own; their results are unused.
        for p in in_flight {
            self.decode.wait(p)?;
        }
        Ok(out)
    }
}

impl Decoder<'_> {
    /// Generation with sampling: calls `on_token` for each new token; stops at any of
    /// `stop` or after `max_new` tokens. Returns the tokens.
    pub fn generate(
        &self,
        prompt: &[u32],
        max_new: usize,
        sampling: &Sampling,
        stop: &[u32],
        mut on_token: impl FnMut(u32),
    ) -> Result<Vec<u32>, String> {
        let mut rng = sampling.seed ^ 0x9e37_79b9_7f4a_7c15;
        let last_logits = |runner: &Runner, t: usize| -> Result<Vec<f32>, String> {
            let all = runner
                .read(&["logits".to_string()])?
                .remove("logits")
                .expect("read");
            let v = match all.data {
                crate::tensor::Data::F32(v) => v,
                _ => return Err("logits are not f32".into()),
            };
            Ok(v[(t - 1) * self.config.vocab..].to_vec())
        };
        let greedy_gpu = sampling.temperature <= 0.0 && sampling.repetition_penalty == 1.0;
        if max_new == 0 {
            return Ok(vec![]);
        }
        if greedy_gpu {
            // No candidates to select: the top-k dispatch idles.
            self.set_top_k(0);
            return self.greedy_streamed(prompt, max_new, stop, on_token);
        }
        let mut seen: Vec<u32> = prompt.to_vec();
        // Top-k on the GPU (k pairs read back) when no penalty has to change the logits first.
        let gpu_top_k = sampling.temperature > 0.0
            && sampling.repetition_penalty == 1.0
            && (1..=MAX_TOP_K).contains(&sampling.top_k);
        self.set_top_k(if gpu_top_k { sampling.top_k } else { 0 });
        let pick = |runner: &Runner, t: usize, seen: &[u32], rng: &mut u64| {
            if gpu_top_k {
                let got = runner.read(&["top_values".to_string(), "top_indices".to_string()])?;
                let row = (t - 1) * MAX_TOP_K;
                let values = got["top_values"].as_f64();
                let indices = got["top_indices"].as_i64();
                let candidates: Vec<(u32, f32)> = (row..row + sampling.top_k)
                    .filter(|&i| indices[i] >= 0)
                    .map(|i| (indices[i] as u32, values[i] as f32))
                    .collect();
                if candidates.is_empty() {
                    return Ok::<u32, String>(0); // a row of NaN, as `sample` and the GPU argmax
                }
                Ok(sample_sorted(&candidates, sampling, rng))
            } else {
                Ok(sample(&last_logits(runner, t)?, seen, sampling, rng))
            }
        };
        self.run_prefill(prompt)?;
        // The prefill's logits rows: every position's, or the last one's only.
        let rows = self.prefill.shape_of("logits")?[0];
        let mut next = pick(&self.prefill, rows, &seen, &mut rng)?;
        let mut out = Vec::new();
        let mut pos = prompt.len();
        loop {
            out.push(next);
            seen.push(next);
            on_token(next);
            if out.len() >= max_new || stop.contains(&next) || pos + 1 > self.ctx {
                break;
            }
            self.step(next, pos)?;
            next = pick(&self.decode, 1, &seen, &mut rng)?;
            pos += 1;
        }
        Ok(out)
    }
}
