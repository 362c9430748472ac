//! Where a pass's GPU time goes: every dispatch timed alone with timestamp queries, summed
//! by kernel and by op, each with the bytes its dispatches bind (inputs, weights, outputs)
//! as a bandwidth and a fraction of the device's copy bandwidth measured in the same run.
//! A dispatch that reads each bound byte once sits at 1.0 of that roofline when it is
//! memory-bound; far below it, it is bound by latency, launches or arithmetic. A dispatch
//! that reads a few rows of a large bound table (a Gather, an embedding) counts the whole
//! table and can exceed 1.0.

use std::time::Instant;

use serde::Serialize;

use crate::gpu::{Gpu, Runner, Step};
use crate::plan::Binding;

/// The profile of one pass.
#[derive(Clone, Debug, Serialize)]
pub struct Profile {
    pub adapter: String,
    /// The whole pass, as one submission (dispatches overlap their launches).
    pub pass_ms: f64,
    /// The dispatches timed alone, summed.
    pub dispatch_sum_ms: f64,
    /// A compute shader copying vec4 words (GB/s, bytes read + written).
    pub copy_gb_s: f64,
    pub by_kernel: Vec<ProfileRow>,
    pub by_op: Vec<ProfileRow>,
}

/// One kernel or op type: its dispatches' time and bound bytes.
#[derive(Clone, Debug, Serialize)]
pub struct ProfileRow {
    pub name: String,
    pub dispatches: usize,
    pub ms: f64,
    /// Of the dispatches' summed time.
    pub share: f64,
    pub bytes: u64,
    pub gb_s: f64,
    /// `gb_s / copy_gb_s`.
    pub of_copy: f64,
}

impl Runner<'_> {
    /// GPU time of the pass, from timestamps (benchmarks only): the whole pass recorded as
    /// one compute pass, then every dispatch in a pass of its own. Returns nanoseconds
    /// (whole pass, per dispatch). Inputs are whatever the buffers hold.
    pub fn profile(&self) -> Result<(f64, Vec<f64>), String> {
        let dev = &self.gpu.device;
        if !dev.features().contains(wgpu::Features::TIMESTAMP_QUERY) {
            return Err("this device has no timestamp queries".into());
        }
        let n = self.steps.len();
        let count = 2 * n as u32 + 2;
        if count > wgpu::QUERY_SET_MAX_QUERIES {
            return Err(format!("{n} dispatches: more than one query set holds"));
        }
        let set = dev.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("profile"),
            ty: wgpu::QueryType::Timestamp,
            count,
        });
        let bytes = count as u64 * 8;
        let resolve = dev.create_buffer(&wgpu::BufferDescriptor {
            label: Some("timestamps"),
            size: bytes,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let staging = dev.create_buffer(&wgpu::BufferDescriptor {
            label: Some("timestamps staging"),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = dev.create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("profile"),
        });
        let record = |enc: &mut wgpu::CommandEncoder, steps: &[Step], at: u32| {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("profile"),
                timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                    query_set: &set,
                    beginning_of_pass_write_index: Some(at),
                    end_of_pass_write_index: Some(at + 1),
                }),
            });
            for s in steps {
                s.record(&mut pass);
            }
        };
        record(&mut enc, &self.steps, 0);
        for i in 0..n {
            record(&mut enc, &self.steps[i..i + 1], 2 + 2 * i as u32);
        }
        enc.resolve_query_set(&set, 0..count, &resolve, 0);
        enc.copy_buffer_to_buffer(&resolve, 0, &staging, 0, bytes);
        self.gpu.queue.submit([enc.finish()]);
        staging.slice(..).map_async(wgpu::MapMode::Read, |_| {});
        dev.poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| format!("device poll failed: {e}"))?;
        let ticks: Vec<u64> = {
            let view = staging
                .slice(..)
                .get_mapped_range()
                .map_err(|e| format!("cannot map the timestamps: {e:?}"))?;
            view.chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
                .collect()
        };
        staging.unmap();
        let period = self.gpu.queue.get_timestamp_period() as f64;
        let span = |a: usize| ticks[a + 1].saturating_sub(ticks[a]) as f64 * period;
        Ok((span(0), (0..n).map(|i| span(2 + 2 * i)).collect()))
    }
}

/// Profiles `runner`'s pass with the inputs and dims it holds now (run it once first).
pub fn profile(runner: &Runner, copy_gb_s: f64) -> Result<Profile, String> {
    let (pass_ns, per) = runner.profile()?;
    let plan = &runner.plan;
    let mut kernels: Vec<ProfileRow> = Vec::new();
    let mut ops: Vec<ProfileRow> = Vec::new();
    let total_ns: f64 = per.iter().sum();
    for (d, ns) in plan.dispatches.iter().zip(&per) {
        let mut bytes = 0u64;
        for b in &d.bindings {
            if let Binding::Tensor(t) = b {
                let n: usize = runner.shape_of(t)?.iter().product();
                bytes += plan.tensors[t].dt.buffer_bytes(n);
            }
        }
        for (rows, name) in [
            (&mut kernels, d.kernel.name()),
            (&mut ops, d.op_type.as_str()),
        ] {
            let at = match rows.iter().position(|r| r.name == name) {
                Some(i) => i,
                None => {
                    rows.push(ProfileRow {
                        name: name.to_string(),
                        dispatches: 0,
                        ms: 0.0,
                        share: 0.0,
                        bytes: 0,
                        gb_s: 0.0,
                        of_copy: 0.0,
                    });
                    rows.len() - 1
                }
            };
            rows[at].dispatches += 1;
            rows[at].ms += ns / 1e6;
            rows[at].bytes += bytes;
        }
    }
    for rows in [&mut kernels, &mut ops] {
        for r in rows.iter_mut() {
            r.share = if total_ns > 0.0 {
                r.ms * 1e6 / total_ns
            } else {
                0.0
            };
            r.gb_s = if r.ms > 0.0 {
                r.bytes as f64 / (r.ms * 1e6)
            } else {
                0.0
            };
            r.of_copy = r.gb_s / copy_gb_s;
        }
        rows.sort_by(|a, b| b.ms.total_cmp(&a.ms));
    }
    Ok(Profile {
        adapter: runner_adapter(runner),
        pass_ms: pass_ns / 1e6,
        dispatch_sum_ms: total_ns / 1e6,
        copy_gb_s,
        by_kernel: kernels,
        by_op: ops,
    })
}

fn runner_adapter(runner: &Runner) -> String {
    let i = &runner.gpu().info;
    format!("{} | {:?} | {:?}", i.name, i.backend, i.device_type)
}

/// The profile as two Markdown tables (by kernel, then by op), largest time first.
pub fn table(p: &Profile) -> String {
    let mut s = format!(
        "GPU profile on {}: the pass {:.3} ms as one submission; dispatches timed alone sum to {:.3} ms; copy bandwidth {:.0} GB/s\n",
        p.adapter, p.pass_ms, p.dispatch_sum_ms, p.copy_gb_s
    );
    for (title, rows) in [("kernel", &p.by_kernel), ("op", &p.by_op)] {
        s += &format!(
            "\n| {title} | dispatches | ms | share | MB bound | GB/s | of copy bandwidth |\n|---|---:|---:|---:|---:|---:|---:|\n"
        );
        for r in rows {
            s += &format!(
                "| {} | {} | {:.3} | {:.1}% | {:.2} | {:.1} | {:.3} |\n",
                r.name,
                r.dispatches,
                r.ms,
                100.0 * r.share,
                r.bytes as f64 / 1e6,
                r.gb_s,
                r.of_copy
            );
        }
    }
    s
}

/// Copy bandwidth through a compute shader (GB/s, bytes read + written): `bytes` of vec4
/// words (rounded down to 16), a grid-stride loop over 65535 x 256 threads, 8 dispatches a
/// round, the median of 3 rounds after one warm-up.
pub fn shader_copy_gb_s(gpu: &Gpu, bytes: u64) -> Result<f64, String> {
    let size = (bytes / 16).max(1) * 16;
    let buffer = |label| {
        gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        })
    };
    let (src, dst) = (buffer("copy src"), buffer("copy dst"));
    let module = gpu
        .device
        .create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("copy"),
            source: wgpu::ShaderSource::Wgsl(
                "@group(0) @binding(0) var<storage, read> a: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read_write> b: array<vec4<u32>>;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) g: vec3<u32>) {
    let n = arrayLength(&a);
    for (var i = g.x; i < n; i = i + 65535u * 256u) {
        b[i] = a[i];
    }
}"
                .into(),
            ),
        });
    let pipeline = gpu
        .device
        .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some("copy"),
            layout: None,
            module: &module,
            entry_point: Some("main"),
            compilation_options: Default::default(),
            cache: None,
        });
    let bind = gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: None,
        layout: &pipeline.get_bind_group_layout(0),
        entries: &[
            wgpu::BindGroupEntry {
                binding: 0,
                resource: src.as_entire_binding(),
            },
            wgpu::BindGroupEntry {
                binding: 1,
                resource: dst.as_entire_binding(),
            },
        ],
    });
    let mut rounds = Vec::new();
    for round in 0..4 {
        let mut enc = gpu
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &bind, &[]);
            for _ in 0..8 {
                pass.dispatch_workgroups(65535, 1, 1);
            }
        }
        let t = Instant::now();
        gpu.queue.submit([enc.finish()]);
        gpu.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| format!("device poll failed: {e}"))?;
        if round > 0 {
            rounds.push(2.0 * 8.0 * size as f64 / t.elapsed().as_secs_f64() / 1e9);
        }
    }
    rounds.sort_by(|a, b| a.total_cmp(b));
    Ok(rounds[1])
}
