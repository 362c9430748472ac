//! bench-llm MODEL.gguf [PROMPT_TOKENS] [NEW_TOKENS]: prefill time and greedy decode
//! tokens/s of a GGUF llama on the best wgpu adapter. Each decode step reads the argmax back
//! (what generation needs): one step at a time (`step`: write the token, run, read) and
//! pipelined (`greedy`: the next pass is submitted before the previous token is read), plus
//! a GPU-timestamp profile of one decode pass per kernel; and the achieved weight bandwidth
//! (packed weight bytes a decode pass reads x tokens/s) against the device's buffer-copy
//! bandwidth measured in the same run.

use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = std::path::PathBuf::from(
        args.get(1)
            .expect("usage: bench-llm MODEL.gguf [PROMPT] [NEW]"),
    );
    let prompt_len: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(64);
    let new: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(128);
    let model = m2w_model::Model::open(&path).expect("model");
    gpu_memory("before the device");
    let gpu = m2w_engine::gpu::Gpu::new().expect("gpu");
    gpu_memory("device created");
    println!(
        "device: {} | {:?} | {:?}",
        gpu.info.name, gpu.info.backend, gpu.info.device_type
    );
    let t = Instant::now();
    let dec = m2w_engine::llama::Decoder::new(&gpu, &model, prompt_len, prompt_len + new + 1)
        .expect("decoder");
    println!(
        "load (pack + upload weights, pipelines): {:.2} s",
        t.elapsed().as_secs_f64()
    );
    gpu_memory("decoder built (weights uploaded, pipelines compiled)");
    println!(
        "GPU buffers of the prefill plan: {:.1} MiB (weights and KV caches shared with the decode plan)",
        dec.prefill.plan.buffer_bytes() as f64 / (1 << 20) as f64
    );
    // A fixed prompt: token 1 then a cycle of ordinary ids (content does not change speed).
    let prompt: Vec<u32> = (0..prompt_len)
        .map(|i| {
            if i == 0 {
                1
            } else {
                504 + (i as u32 * 37) % 3000
            }
        })
        .collect();
    let mut prefill_ms = Vec::new();
    let mut decode_tps = Vec::new();
    let mut pipelined_tps = Vec::new();
    for rep in 0..4 {
        let t = Instant::now();
        let first = dec.run_prefill(&prompt).expect("prefill");
        let pre = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let mut next = first;
        for k in 0..new {
            next = dec.step(next, prompt_len + k).expect("step");
        }
        let dt = t.elapsed().as_secs_f64();
        // The pipelined greedy loop (what `greedy` and `cargo xtask generate` use): its
        // prefill is timed again right before and subtracted.
        let t = Instant::now();
        dec.run_prefill(&prompt).expect("prefill");
        let pre2 = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let tokens = dec.greedy(&prompt, new + 1, None).expect("greedy");
        let dp = t.elapsed().as_secs_f64() - pre2;
        assert_eq!(tokens.len(), new + 1);
        if rep > 0 {
            prefill_ms.push(pre * 1e3);
            decode_tps.push(new as f64 / dt);
            pipelined_tps.push(new as f64 / dp);
        }
        println!(
            "rep {rep}: prefill {prompt_len} tokens {:.2} ms ({:.0} tok/s), decode {new} tokens {:.1} tok/s one step at a time, {:.1} tok/s pipelined",
            pre * 1e3,
            prompt_len as f64 / pre,
            new as f64 / dt,
            new as f64 / dp
        );
    }
    // Where a decode step's time goes: GPU time of the pass (timestamps), per kernel, and
    // the CPU time to record and submit it.
    gpu_memory("decoder built, prefill and decode run");
    print_profile("decode", &dec.decode);
    print_profile(&format!("prefill ({prompt_len} tokens)"), &dec.prefill);
    let passes = 50;
    let mut cpu = std::time::Duration::ZERO;
    let t = Instant::now();
    for _ in 0..passes {
        cpu += dec.decode.record_and_submit();
    }
    dec.decode.read(&["next_token".to_string()]).expect("read");
    println!(
        "decode pass: CPU record + submit {:.3} ms; {passes} passes back to back (no read-back between) {:.3} ms each",
        cpu.as_secs_f64() * 1e3 / passes as f64,
        t.elapsed().as_secs_f64() * 1e3 / passes as f64
    );
    // Weight bytes one decode pass reads: every packed weight a matmul / GEMV kernel binds
    // (each once), plus one embedding row.
    let plan = &dec.decode.plan;
    let mut read: std::collections::BTreeSet<&str> = Default::default();
    for d in &plan.dispatches {
        let name = d.kernel.name();
        if name.starts_with("gemv") || name.starts_with("matmul_q") {
            for b in &d.bindings {
                if let m2w_engine::plan::Binding::Tensor(t) = b
                    && plan.constants.contains_key(t.as_str())
                {
                    read.insert(t.as_str());
                }
            }
        }
    }
    let weight_bytes: u64 = read
        .iter()
        .map(|t| plan.constants[*t].len() as u64 * 4)
        .sum();
    // BENCH_LLM_NO_COPY=1 leaves the copy measurement (two 512 MiB buffers) out, so a peak
    // GPU memory reading of the run is the decoder's own.
    let (dma_gbs, shader_gbs) = if std::env::var_os("BENCH_LLM_NO_COPY").is_some() {
        (f64::NAN, f64::NAN)
    } else {
        (
            copy_bandwidth(&gpu),
            m2w_engine::profile::shader_copy_gb_s(&gpu, 512 << 20).expect("copy bandwidth"),
        )
    };
    // The device's copy bandwidth: the faster of a buffer copy command (on NVIDIA a copy
    // engine may run it) and a compute shader copying vec4 words.
    let copy_gbs = dma_gbs.max(shader_gbs);
    println!(
        "weights read per decode token: {:.1} MiB ({} tensors); device copy bandwidth (bytes read + written): copy_buffer_to_buffer {dma_gbs:.0} GB/s, compute-shader copy {shader_gbs:.0} GB/s",
        weight_bytes as f64 / (1 << 20) as f64,
        read.len()
    );
    prefill_ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    decode_tps.sort_by(|a, b| a.partial_cmp(b).unwrap());
    pipelined_tps.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pm = prefill_ms[prefill_ms.len() / 2];
    let dm = decode_tps[decode_tps.len() / 2];
    let pp = pipelined_tps[pipelined_tps.len() / 2];
    let achieved = weight_bytes as f64 * pp / 1e9;
    println!(
        "RESULT prefill_ms={pm:.2} prefill_tok_s={:.0} decode_tok_s={dm:.1} decode_pipelined_tok_s={pp:.1} weight_gb_s={achieved:.0} copy_gb_s={copy_gbs:.0} fraction={:.2}",
        prompt_len as f64 * 1e3 / pm,
        achieved / copy_gbs
    );
}

/// Buffer-to-buffer copy bandwidth of the device (GB/s, bytes read + written): 512 MiB copied
/// 8 times, median of 3 rounds.
fn copy_bandwidth(gpu: &m2w_engine::gpu::Gpu) -> f64 {
    let size: u64 = 512 << 20;
    let make = |usage| {
        gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("bandwidth"),
            size,
            usage,
            mapped_at_creation: false,
        })
    };
    let src = make(wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::STORAGE);
    let dst = make(wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::STORAGE);
    let mut rounds = Vec::new();
    for round in 0..4 {
        let mut enc = gpu
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        for _ in 0..8 {
            enc.copy_buffer_to_buffer(&src, 0, &dst, 0, size);
        }
        let t = Instant::now();
        gpu.queue.submit([enc.finish()]);
        gpu.device
            .poll(wgpu::PollType::wait_indefinitely())
            .expect("poll");
        if round > 0 {
            rounds.push(2.0 * 8.0 * size as f64 / t.elapsed().as_secs_f64() / 1e9);
        }
    }
    rounds.sort_by(|a, b| a.partial_cmp(b).unwrap());
    rounds[1]
}

/// GPU time of one pass of `runner` (timestamps), then each dispatch timed alone, summed
/// per kernel, largest first.
fn print_profile(what: &str, runner: &m2w_engine::gpu::Runner) {
    match runner.profile() {
        Ok((pass_ns, per)) => {
            let mut by_kernel: std::collections::BTreeMap<&str, (usize, f64)> = Default::default();
            for (d, ns) in runner.plan.dispatches.iter().zip(&per) {
                let e = by_kernel.entry(d.kernel.name()).or_default();
                e.0 += 1;
                e.1 += ns;
            }
            println!(
                "{what} pass on the GPU: {:.3} ms as one pass; dispatches timed alone sum to {:.3} ms ({} dispatches)",
                pass_ns / 1e6,
                per.iter().sum::<f64>() / 1e6,
                per.len()
            );
            let mut rows: Vec<_> = by_kernel.into_iter().collect();
            rows.sort_by(|a, b| b.1.1.partial_cmp(&a.1.1).unwrap());
            for (k, (count, ns)) in rows {
                println!("  {k:<28} x{count:<4} {:>8.3} ms", ns / 1e6);
            }
        }
        Err(e) => println!("no GPU profile of the {what} pass: {e}"),
    }
}

/// Device memory in use per nvidia-smi (whole device), where it is installed: where the
/// process's GPU memory goes, stage by stage.
fn gpu_memory(stage: &str) {
    let out = std::process::Command::new("nvidia-smi")
        .args(["--query-gpu=memory.used", "--format=csv,noheader,nounits"])
        .output();
    if let Ok(o) = out
        && o.status.success()
    {
        let used = String::from_utf8_lossy(&o.stdout);
        println!(
            "GPU memory used, {stage}: {} MiB",
            used.lines().next().unwrap_or("?").trim()
        );
    }
}
