//! f32 GEMM benchmark for m2w's WGSL matmul kernels (issue 4).
//!
//!     bench-gemm [--sizes 2048,4096] [--reps 7] [--variants DIR] [--json FILE] [--checked-only]
//!
//! Opens the high-performance adapter with its own limits, checks every kernel against a CPU
//! reference (f64) on small odd sizes (67x129x53 and others; fails on a relative error above
//! 1e-4 or an unwritten element), then times C = A * B at each size: many back-to-back
//! dispatches in one compute pass, timed by pass timestamps (TIMESTAMP_QUERY) and by the wall
//! clock around submit + poll(wait); median over the repetitions. Kernels: the registered
//! `matmul_f32_rb` and `matmul_f32_tiled`, plus every `*.wgsl` in `--variants DIR` (written by
//! `scripts/gen_matmul_rb.py`, same bindings and Params as `matmul_f32_rb`). Each rb kernel is
//! timed as wgpu builds it by default ("checked": wgpu's shader bounds checks and loop
//! bounding) and through `create_shader_module_trusted` with those checks off ("unchecked").
//! Exit codes: 0 done, 1 a correctness check failed, 2 no adapter or bad arguments.

use std::process::ExitCode;
use std::time::Instant;

#[derive(Clone, Copy, PartialEq)]
enum Layout {
    /// Params { m, n, k, pad }, dispatch (ceil(N/bn), ceil(M/bm), 1).
    Rb { bm: u32, bn: u32 },
    /// matmul_f32_tiled: strided/batched Params, 16x16 tiles.
    Tiled,
}

struct Kernel {
    name: String,
    src: String,
    layout: Layout,
}

struct Gpu {
    device: wgpu::Device,
    queue: wgpu::Queue,
    timestamps: bool,
}

fn rb_tile(src: &str) -> Option<(u32, u32)> {
    let line = src.lines().find(|l| l.starts_with("// tile:"))?;
    let mut bm = None;
    let mut bn = None;
    for tok in line.split_whitespace() {
        if let Some(v) = tok.strip_prefix("bm=") {
            bm = v.parse().ok();
        }
        if let Some(v) = tok.strip_prefix("bn=") {
            bn = v.parse().ok();
        }
    }
    Some((bm?, bn?))
}

struct Rng(u64);
impl Rng {
    fn next_f32(&mut self) -> f32 {
        // xorshift64*, uniform in [-1, 1)
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        ((x >> 40) as f32) / ((1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.next_f32()).collect()
    }
}

fn bytes_of(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn words_bytes(v: &[u32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn params_bytes(layout: Layout, m: u32, n: u32, k: u32) -> Vec<u8> {
    match layout {
        Layout::Rb { .. } => words_bytes(&[m, n, k, 0]),
        Layout::Tiled => {
            // m, n, k, batch_rank, a_rs, a_cs, b_rs, b_cs, batch_shape, a/b batch strides
            let mut w = vec![m, n, k, 0, k, 1, n, 1];
            w.extend_from_slice(&[1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
            words_bytes(&w)
        }
    }
}

fn workgroups(layout: Layout, m: u32, n: u32) -> [u32; 3] {
    match layout {
        Layout::Rb { bm, bn } => [n.div_ceil(bn), m.div_ceil(bm), 1],
        Layout::Tiled => [n.div_ceil(16), m.div_ceil(16), 1],
    }
}

impl Gpu {
    /// The engine's device (best adapter, its own limits, timestamps where offered).
    fn new() -> Result<(Gpu, String), String> {
        let g = m2w_engine::gpu::Gpu::new()?;
        let timestamps = g
            .device
            .features()
            .contains(wgpu::Features::TIMESTAMP_QUERY);
        let info = &g.info;
        let line = format!(
            "{} | backend {:?} | {:?} | driver {} {} | timestamps {}",
            info.name, info.backend, info.device_type, info.driver, info.driver_info, timestamps
        );
        Ok((
            Gpu {
                device: g.device,
                queue: g.queue,
                timestamps,
            },
            line,
        ))
    }

    fn pipeline(&self, k: &Kernel, unchecked: bool) -> Result<wgpu::ComputePipeline, String> {
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let desc = wgpu::ShaderModuleDescriptor {
            label: Some(&k.name),
            source: wgpu::ShaderSource::Wgsl(k.src.as_str().into()),
        };
        let module = if unchecked {
            // SAFETY: the kernels bounds-check every buffer access themselves and every loop
            // has a finite trip count; the CPU-reference check below runs on this very module.
            unsafe {
                self.device
                    .create_shader_module_trusted(desc, wgpu::ShaderRuntimeChecks::unchecked())
            }
        } else {
            self.device.create_shader_module(desc)
        };
        let p = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(&k.name),
                layout: None,
                module: &module,
                entry_point: Some("main"),
                compilation_options: Default::default(),
                cache: None,
            });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(format!("{}: {e}", k.name));
        }
        Ok(p)
    }

    fn storage(&self, data: &[u8]) -> wgpu::Buffer {
        let buf = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: data.len().max(16) as u64,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.queue.write_buffer(&buf, 0, data);
        buf
    }

    fn uniform(&self, data: &[u8]) -> wgpu::Buffer {
        let buf = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: data.len() as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.queue.write_buffer(&buf, 0, data);
        buf
    }

    fn read(&self, src: &wgpu::Buffer, bytes: u64) -> Vec<u8> {
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = self.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(src, 0, &staging, 0, bytes);
        self.queue.submit([enc.finish()]);
        staging.slice(..).map_async(wgpu::MapMode::Read, |_| {});
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .expect("poll");
        let v = staging.slice(..).get_mapped_range().expect("map").to_vec();
        staging.unmap();
        v
    }
}

struct Problem {
    m: u32,
    n: u32,
    k: u32,
    a_host: Vec<f32>,
    b_host: Vec<f32>,
    a: wgpu::Buffer,
    b: wgpu::Buffer,
    c: wgpu::Buffer,
}

impl Problem {
    fn new(gpu: &Gpu, m: u32, n: u32, k: u32, seed: u64) -> Problem {
        let mut rng = Rng(seed.wrapping_mul(2).wrapping_add(1));
        let a_host = rng.vec((m * k) as usize);
        let b_host = rng.vec((k * n) as usize);
        let a = gpu.storage(&bytes_of(&a_host));
        let b = gpu.storage(&bytes_of(&b_host));
        // Poisoned with NaN: an element the kernel does not write stays NaN.
        let c = gpu.storage(&bytes_of(&vec![f32::NAN; (m * n) as usize]));
        Problem {
            m,
            n,
            k,
            a_host,
            b_host,
            a,
            b,
            c,
        }
    }

    fn bind(&self, gpu: &Gpu, p: &wgpu::ComputePipeline, params: &wgpu::Buffer) -> wgpu::BindGroup {
        gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &p.get_bind_group_layout(0),
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: self.a.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: self.b.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 2,
                    resource: self.c.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 3,
                    resource: params.as_entire_binding(),
                },
            ],
        })
    }

    /// Max |C - ref| / max |ref| over the given rows (all columns), reference in f64; also
    /// counts non-finite (unwritten) elements.
    fn check_rows(&self, got: &[f32], rows: &[u32]) -> (f64, usize) {
        let (n, k) = (self.n as usize, self.k as usize);
        let mut max_err = 0f64;
        let mut max_ref = 0f64;
        let mut bad = 0;
        let mut acc = vec![0f64; n];
        for &r in rows {
            assert!(r < self.m, "row {r} out of range");
            let r = r as usize;
            acc.iter_mut().for_each(|x| *x = 0.0);
            for kk in 0..k {
                let av = self.a_host[r * k + kk] as f64;
                let brow = &self.b_host[kk * n..(kk + 1) * n];
                for (x, bv) in acc.iter_mut().zip(brow) {
                    *x += av * *bv as f64;
                }
            }
            for j in 0..n {
                let g = got[r * n + j];
                if !g.is_finite() {
                    bad += 1;
                    continue;
                }
                max_err = max_err.max((g as f64 - acc[j]).abs());
                max_ref = max_ref.max(acc[j].abs());
            }
        }
        (max_err / max_ref.max(1e-30), bad)
    }
}

fn run_once(gpu: &Gpu, pipe: &wgpu::ComputePipeline, bg: &wgpu::BindGroup, wg: [u32; 3]) {
    let mut enc = gpu.device.create_command_encoder(&Default::default());
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        pass.set_pipeline(pipe);
        pass.set_bind_group(0, bg, &[]);
        pass.dispatch_workgroups(wg[0], wg[1], wg[2]);
    }
    gpu.queue.submit([enc.finish()]);
    gpu.device
        .poll(wgpu::PollType::wait_indefinitely())
        .expect("poll");
}

/// Seconds per dispatch: (median by timestamps if available, median by wall clock).
fn time(
    gpu: &Gpu,
    pipe: &wgpu::ComputePipeline,
    bg: &wgpu::BindGroup,
    wg: [u32; 3],
    iters: u32,
    reps: usize,
) -> (Option<f64>, f64) {
    let qs = gpu.timestamps.then(|| {
        gpu.device.create_query_set(&wgpu::QuerySetDescriptor {
            label: None,
            ty: wgpu::QueryType::Timestamp,
            count: 2,
        })
    });
    let resolve = gpu.device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 16,
        usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    let period = gpu.queue.get_timestamp_period() as f64 * 1e-9;
    // Warm-up: one submission of the same shape.
    for _ in 0..2 {
        let mut enc = gpu.device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            pass.set_pipeline(pipe);
            pass.set_bind_group(0, bg, &[]);
            for _ in 0..iters.min(8) {
                pass.dispatch_workgroups(wg[0], wg[1], wg[2]);
            }
        }
        gpu.queue.submit([enc.finish()]);
        gpu.device
            .poll(wgpu::PollType::wait_indefinitely())
            .expect("poll");
    }
    let mut ts = Vec::new();
    let mut wall = Vec::new();
    for _ in 0..reps {
        let mut enc = gpu.device.create_command_encoder(&Default::default());
        {
            let tw = qs.as_ref().map(|q| wgpu::ComputePassTimestampWrites {
                query_set: q,
                beginning_of_pass_write_index: Some(0),
                end_of_pass_write_index: Some(1),
            });
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: None,
                timestamp_writes: tw,
            });
            pass.set_pipeline(pipe);
            pass.set_bind_group(0, bg, &[]);
            for _ in 0..iters {
                pass.dispatch_workgroups(wg[0], wg[1], wg[2]);
            }
        }
        if let Some(q) = &qs {
            enc.resolve_query_set(q, 0..2, &resolve, 0);
        }
        let cmd = enc.finish();
        let t0 = Instant::now();
        gpu.queue.submit([cmd]);
        gpu.device
            .poll(wgpu::PollType::wait_indefinitely())
            .expect("poll");
        wall.push(t0.elapsed().as_secs_f64() / iters as f64);
        if qs.is_some() {
            let b = gpu.read(&resolve, 16);
            let t0 = u64::from_le_bytes(b[0..8].try_into().unwrap());
            let t1 = u64::from_le_bytes(b[8..16].try_into().unwrap());
            ts.push(t1.wrapping_sub(t0) as f64 * period / iters as f64);
        }
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    let ts_med = (!ts.is_empty()).then(|| med(&mut ts));
    (ts_med, med(&mut wall))
}

fn main() -> ExitCode {
    let mut sizes = vec![2048u32, 4096];
    let mut reps = 7usize;
    let mut variants_dir = None;
    let mut json_out = None;
    let mut checked_only = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--sizes" => {
                sizes = args
                    .next()
                    .unwrap_or_default()
                    .split(',')
                    .filter_map(|s| s.parse().ok())
                    .collect()
            }
            "--reps" => reps = args.next().and_then(|s| s.parse().ok()).unwrap_or(7),
            "--variants" => variants_dir = args.next(),
            "--json" => json_out = args.next(),
            "--checked-only" => checked_only = true,
            _ => {
                eprintln!("bench-gemm: unknown argument {a}");
                return ExitCode::from(2);
            }
        }
    }
    let (gpu, device_line) = match Gpu::new() {
        Ok(g) => g,
        Err(e) => {
            eprintln!("bench-gemm: {e}");
            return ExitCode::from(2);
        }
    };
    println!("device: {device_line}");

    let mut kernels = Vec::new();
    let (rb, tiled) = (
        m2w_kernels::Kernel::MatmulF32Rb,
        m2w_kernels::Kernel::MatmulF32Tiled,
    );
    let (bm, bn) = rb_tile(rb.source()).expect("tile line in matmul_f32_rb");
    kernels.push(Kernel {
        name: rb.name().into(),
        src: rb.source().into(),
        layout: Layout::Rb { bm, bn },
    });
    kernels.push(Kernel {
        name: tiled.name().into(),
        src: tiled.source().into(),
        layout: Layout::Tiled,
    });
    if let Some(dir) = &variants_dir {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default();
        files.sort();
        for f in files {
            if f.extension().is_some_and(|e| e == "wgsl") {
                let src = std::fs::read_to_string(&f).unwrap_or_default();
                if let Some((bm, bn)) = rb_tile(&src) {
                    kernels.push(Kernel {
                        name: f.file_stem().unwrap().to_string_lossy().into_owned(),
                        src,
                        layout: Layout::Rb { bm, bn },
                    });
                }
            }
        }
    }

    // (kernel index, unchecked)
    let mut configs = Vec::new();
    for (i, k) in kernels.iter().enumerate() {
        configs.push((i, false));
        if !checked_only && matches!(k.layout, Layout::Rb { .. }) {
            configs.push((i, true));
        }
    }
    let label =
        |i: usize, u: bool| format!("{}{}", kernels[i].name, if u { " (unchecked)" } else { "" });
    let mut pipes = Vec::new();
    for &(i, u) in &configs {
        match gpu.pipeline(&kernels[i], u) {
            Ok(p) => pipes.push(Some(p)),
            Err(e) => {
                println!("pipeline failed: {e}");
                pipes.push(None);
            }
        }
    }

    // Correctness on small odd sizes, CPU reference in f64.
    let mut failed = false;
    let checks = [
        (67u32, 129u32, 53u32),
        (1, 1, 1),
        (130, 260, 17),
        (255, 129, 300),
    ];
    println!("\ncorrectness (max |C - ref| / max |ref|, every element):");
    for (ci, &(i, u)) in configs.iter().enumerate() {
        let Some(pipe) = &pipes[ci] else {
            failed = true;
            continue;
        };
        let mut worst = 0f64;
        let mut bad = 0;
        for (s, &(m, n, k)) in checks.iter().enumerate() {
            let pr = Problem::new(&gpu, m, n, k, 0x9E37_79B9 + s as u64 * 7919 + ci as u64);
            let params = gpu.uniform(&params_bytes(kernels[i].layout, m, n, k));
            let bg = pr.bind(&gpu, pipe, &params);
            run_once(&gpu, pipe, &bg, workgroups(kernels[i].layout, m, n));
            let got: Vec<f32> = gpu
                .read(&pr.c, (m * n * 4) as u64)
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            let rows: Vec<u32> = (0..m).collect();
            let (e, b) = pr.check_rows(&got, &rows);
            if s == 0 {
                println!("  {:<40} 67x129x53: {e:.2e}", label(i, u));
            }
            worst = worst.max(e);
            bad += b;
        }
        let ok = worst <= 1e-4 && bad == 0;
        println!(
            "  {:<40} worst over {:?}: {worst:.2e}, unwritten {bad} -> {}",
            label(i, u),
            checks,
            if ok { "ok" } else { "FAIL" }
        );
        failed |= !ok;
    }
    if failed {
        println!("correctness check failed");
        return ExitCode::from(1);
    }

    // Timing.
    let mut results = Vec::new(); // (label, size, ts tflops, wall tflops, sample err)
    for &s in &sizes {
        let pr = Problem::new(&gpu, s, s, s, 0xC0FFEE + s as u64);
        let flop = 2.0 * (s as f64).powi(3);
        let iters = if s <= 1024 {
            200
        } else if s <= 2048 {
            50
        } else {
            12
        };
        for (ci, &(i, u)) in configs.iter().enumerate() {
            let Some(pipe) = &pipes[ci] else { continue };
            let params = gpu.uniform(&params_bytes(kernels[i].layout, s, s, s));
            let bg = pr.bind(&gpu, pipe, &params);
            let wg = workgroups(kernels[i].layout, s, s);
            // Tiled at 4096 is slow: fewer iterations.
            let it = if kernels[i].layout == Layout::Tiled {
                (iters / 4).max(3)
            } else {
                iters
            };
            let (ts, wall) = time(&gpu, pipe, &bg, wg, it, reps);
            // Spot-check the big result (3 rows).
            let got: Vec<f32> = gpu
                .read(&pr.c, (s as u64) * (s as u64) * 4)
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            let (err, bad) = pr.check_rows(&got, &[0, s / 2 + 1, s - 1]);
            let ts_tf = ts.map(|t| flop / t / 1e12);
            let wall_tf = flop / wall / 1e12;
            println!(
                "  {:<40} {s}^3: {} TFLOP/s (timestamps), {wall_tf:.2} TFLOP/s (wall), {it} dispatches x {reps}, rows err {err:.1e}{}",
                label(i, u),
                ts_tf.map(|t| format!("{t:.2}")).unwrap_or("-".into()),
                if bad > 0 { " UNWRITTEN" } else { "" }
            );
            if err > 1e-4 || bad > 0 {
                failed = true;
            }
            results.push((label(i, u), s, ts_tf, wall_tf, err));
        }
    }

    println!("\n| kernel | size | TFLOP/s (timestamps) | TFLOP/s (wall clock) | rows rel. err |");
    println!("|---|---:|---:|---:|---:|");
    for (l, s, ts, wall, err) in &results {
        println!(
            "| {l} | {s}^3 | {} | {wall:.2} | {err:.1e} |",
            ts.map(|t| format!("{t:.2}")).unwrap_or("-".into())
        );
    }
    if let Some(path) = json_out {
        let mut j = format!(
            "{{\"device\": {:?}, \"results\": [\n",
            device_line.replace('"', "'")
        );
        for (idx, (l, s, ts, wall, err)) in results.iter().enumerate() {
            j.push_str(&format!(
                "  {{\"kernel\": {l:?}, \"size\": {s}, \"tflops_ts\": {}, \"tflops_wall\": {wall:.4}, \"rows_rel_err\": {err:.3e}}}{}\n",
                ts.map(|t| format!("{t:.4}")).unwrap_or("null".into()),
                if idx + 1 < results.len() { "," } else { "" }
            ));
        }
        j.push_str("]}\n");
        let _ = std::fs::write(&path, j);
    }
    if failed {
        println!("a large-size spot check failed");
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}
