//! The native runner: executes a [`Plan`] through wgpu (lavapipe on CPU in CI, Vulkan on
//! the GPU machine). Pipelines, buffers, uniforms and bind groups are all created when the
//! runner is built; a forward pass only writes inputs, records dispatches and reads back.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use crate::plan::{Binding, Plan};
use crate::sym::{Bindings, Expr};
use crate::tensor::HostTensor;

/// Dispatches recorded per command encoder before it is submitted.
const FLUSH_EVERY: usize = 256;

pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    pipelines: Mutex<HashMap<m2w_kernels::Kernel, wgpu::ComputePipeline>>,
}

impl Gpu {
    /// The best adapter wgpu finds (WGPU_BACKEND / WGPU_ADAPTER_NAME are honoured), with the
    /// adapter's own limits.
    pub fn new() -> Result<Gpu, String> {
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
        if std::env::var_os("WGPU_BACKEND").is_none() {
            desc.backends = wgpu::Backends::PRIMARY;
        }
        let instance = wgpu::Instance::new(desc);
        let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::HighPerformance,
            ..Default::default()
        }))
        .map_err(|e| format!("no WebGPU adapter ({e}); run `m2w setup` (in the m2w checkout: `cargo xtask setup`)"))?;
        let limits = adapter.limits();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("m2w"),
            required_limits: limits.clone(),
            // Timestamps for `Runner::profile` (benchmarks) and f16 for the f16-weight kernels
            // (`half`) where the adapter has them.
            required_features: adapter.features()
                & (wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::SHADER_F16),
            ..Default::default()
        }))
        .map_err(|e| format!("cannot open the WebGPU device: {e}"))?;
        Ok(Gpu {
            device,
            queue,
            info: adapter.get_info(),
            limits,
            pipelines: Mutex::new(HashMap::new()),
        })
    }

    /// Whether the device runs `enable f16;` shaders (the f16-weight twins, [`crate::half`]).
    pub fn has_f16(&self) -> bool {
        self.device.features().contains(wgpu::Features::SHADER_F16)
    }

    fn pipeline(&self, kernel: m2w_kernels::Kernel) -> wgpu::ComputePipeline {
        let mut cache = self.pipelines.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = cache.get(&kernel) {
            return p.clone();
        }
        let module = self
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(kernel.name()),
                source: wgpu::ShaderSource::Wgsl(kernel.source().into()),
            });
        let p = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(kernel.name()),
                layout: None,
                module: &module,
                entry_point: Some("main"),
                compilation_options: Default::default(),
                cache: None,
            });
        cache.insert(kernel, p.clone());
        p
    }
}

pub(crate) struct Step {
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    /// For the bound dims (a zero count skips the dispatch).
    workgroups: Cell<[u32; 3]>,
}

impl Step {
    pub(crate) fn record(&self, pass: &mut wgpu::ComputePass) {
        let [x, y, z] = self.workgroups.get();
        if x == 0 || y == 0 || z == 0 {
            return;
        }
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        pass.dispatch_workgroups(x, y, z);
    }
}

/// A pass submitted by [`Runner::submit_chained`] whose result is still on its way.
pub struct Pending {
    staging: wgpu::Buffer,
    index: wgpu::SubmissionIndex,
    desc: crate::plan::TensorDesc,
}

/// A plan made ready to run on one device.
pub struct Runner<'g> {
    pub(crate) gpu: &'g Gpu,
    pub plan: Plan,
    buffers: HashMap<String, wgpu::Buffer>,
    pub(crate) steps: Vec<Step>,
    /// Every dispatch's uniform block in one buffer, each at an aligned offset, so binding
    /// new dims rewrites them with one write.
    uniform: wgpu::Buffer,
    uniform_offsets: Vec<u64>,
    /// The buffer's contents as last written.
    uniform_image: RefCell<Vec<u8>>,
    /// The dims the uniforms and workgroup counts are written for (the maxima until an
    /// input binds others; empty for a static plan).
    dims: RefCell<Bindings>,
    /// The distinct expressions of every symbolic word and workgroup count (a plan repeats
    /// a few, `sequence * 384` hundreds of times), evaluated once each per new binding.
    sym_exprs: Vec<Expr>,
    /// (byte offset in the uniform image, expression) per symbolic word.
    sym_words: Vec<(usize, usize)>,
    /// (step, expression per dimension) per dispatch whose workgroup count is symbolic.
    sym_groups: Vec<(usize, [usize; 3])>,
}

/// `t`'s words as they lie in its plan tensor's buffer: scattered at its strides when it
/// is strided (an in-place cache; the gaps are rows the run appends to, written as 0).
fn buffer_image(desc: &crate::plan::TensorDesc, t: &HostTensor) -> Vec<u32> {
    let words = t.to_words();
    match desc.element_offsets(&t.shape) {
        None => words,
        Some(offsets) => {
            let mut image = vec![0u32; offsets.iter().max().map_or(0, |m| m + 1)];
            for (w, k) in words.iter().zip(offsets) {
                image[k] = *w;
            }
            image
        }
    }
}

fn words_of(bytes: &[u8]) -> Vec<u32> {
    bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

impl<'g> Runner<'g> {
    pub fn new(gpu: &'g Gpu, plan: Plan) -> Result<Runner<'g>, String> {
        Self::sharing(gpu, plan, None, &[])
    }

    /// A runner that takes `other`'s buffers for `shared` tensors (same name and size: the
    /// weights and KV caches of a llama prefill and decode plan), so they exist once and
    /// what one runner writes the other reads, with no copy.
    pub fn sharing(
        gpu: &'g Gpu,
        plan: Plan,
        other: Option<&Runner>,
        shared: &[String],
    ) -> Result<Runner<'g>, String> {
        Self::build(gpu, plan, other, shared, false)
    }

    /// [`Runner::sharing`] that also stores the tensors of each of the plan's buffer slots
    /// (`Plan::assign_buffers(true)`: tensors whose lifetimes do not overlap) in one buffer,
    /// as the generated packages do. A tensor's value can then be read only until another
    /// of its slot is written: for runners that read their outputs only (generation), not
    /// for debug capture of every checkpoint.
    pub fn sharing_slots(
        gpu: &'g Gpu,
        plan: Plan,
        other: Option<&Runner>,
        shared: &[String],
    ) -> Result<Runner<'g>, String> {
        Self::build(gpu, plan, other, shared, true)
    }

    fn build(
        gpu: &'g Gpu,
        plan: Plan,
        other: Option<&Runner>,
        shared: &[String],
        use_slots: bool,
    ) -> Result<Runner<'g>, String> {
        let dev = &gpu.device;
        let max_binding = gpu.limits.max_storage_buffer_binding_size as u64;
        let mut buffers = HashMap::new();
        // Slots of several tensors (inputs, outputs and constants keep slots of their own).
        let slot_of: HashMap<&str, usize> = if use_slots {
            plan.buffers
                .iter()
                .enumerate()
                .filter(|(_, b)| b.tensors.len() > 1)
                .flat_map(|(i, b)| b.tensors.iter().map(move |t| (t.as_str(), i)))
                .collect()
        } else {
            HashMap::new()
        };
        let mut slot_buffers: HashMap<usize, wgpu::Buffer> = HashMap::new();
        let usage = wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_SRC
            | wgpu::BufferUsages::COPY_DST;
        let max = plan.max_bindings();
        for (name, t) in &plan.tensors {
            if t.base != *name {
                continue;
            }
            // Sized for the dims' maxima (at least 4 bytes, so an empty tensor binds).
            let bytes = plan.max_bytes(name, &max);
            if bytes > max_binding {
                return Err(format!(
                    "tensor '{name}' needs {bytes} bytes; this device binds at most {max_binding} (max_storage_buffer_binding_size)"
                ));
            }
            if let Some(o) = other
                && shared.contains(name)
            {
                let buf = o
                    .buffers
                    .get(name)
                    .filter(|b| b.size() == bytes)
                    .ok_or_else(|| format!("cannot share '{name}': absent or of another size"))?;
                buffers.insert(name.clone(), buf.clone());
                continue;
            }
            if let Some(&slot) = slot_of.get(name.as_str())
                && !plan.constants.contains_key(name)
            {
                let size = plan.buffers[slot].bytes.max(bytes);
                let buf = slot_buffers.entry(slot).or_insert_with(|| {
                    dev.create_buffer(&wgpu::BufferDescriptor {
                        label: Some(&format!("slot {slot}")),
                        size,
                        usage,
                        mapped_at_creation: false,
                    })
                });
                if buf.size() < bytes {
                    return Err(format!(
                        "buffer slot {slot} holds {} bytes; '{name}' needs {bytes}",
                        buf.size()
                    ));
                }
                buffers.insert(name.clone(), buf.clone());
                continue;
            }
            let buf = dev.create_buffer(&wgpu::BufferDescriptor {
                label: Some(name),
                size: bytes,
                usage,
                mapped_at_creation: false,
            });
            if let Some(c) = plan.constants.get(name) {
                let words = c.to_words();
                if !words.is_empty() {
                    gpu.queue.write_buffer(
                        &buf,
                        0,
                        &words
                            .iter()
                            .flat_map(|w| w.to_le_bytes())
                            .collect::<Vec<u8>>(),
                    );
                }
            }
            buffers.insert(name.clone(), buf);
        }
        // Every kernel fits the device: workgroup memory (the device is opened
        // with the adapter's limits; WebGPU's default is 16384 bytes) and features.
        for d in &plan.dispatches {
            let k = d.kernel;
            let have = gpu.limits.max_compute_workgroup_storage_size;
            if k.workgroup_bytes() > have {
                return Err(format!(
                    "this device offers {have} bytes of workgroup memory; {k} needs {}",
                    k.workgroup_bytes()
                ));
            }
            for f in k.features() {
                let needed = match f {
                    m2w_kernels::Feature::ShaderF16 => wgpu::Features::SHADER_F16,
                    m2w_kernels::Feature::Subgroups => wgpu::Features::SUBGROUP,
                };
                if !gpu.device.features().contains(needed) {
                    return Err(format!(
                        "{k} needs {f:?}, which this device was not opened with"
                    ));
                }
            }
        }
        let dummy = dev.create_buffer(&wgpu::BufferDescriptor {
            label: Some("dummy"),
            size: 16,
            usage,
            mapped_at_creation: false,
        });
        let mut steps = Vec::with_capacity(plan.dispatches.len());
        let align = (gpu.limits.min_uniform_buffer_offset_alignment as u64).max(16);
        let mut uniform_offsets = Vec::with_capacity(plan.dispatches.len());
        let mut image: Vec<u8> = Vec::new();
        for d in &plan.dispatches {
            let at = (image.len() as u64).div_ceil(align) * align;
            image.resize(at as usize, 0);
            uniform_offsets.push(at);
            image.extend(d.params.iter().flat_map(|w| w.to_le_bytes()));
            image.resize(at as usize + (d.params.len() * 4).max(16), 0);
        }
        let uniform = dev.create_buffer(&wgpu::BufferDescriptor {
            label: Some("params"),
            size: (image.len() as u64).max(16).div_ceil(4) * 4,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        if !image.is_empty() {
            gpu.queue.write_buffer(&uniform, 0, &image);
        }
        // Pipelines compile on first use of a kernel (cached per Gpu): seconds on a CPU adapter.
        let progress = m2w_progress::task(
            "engine: pipelines and bind groups",
            Some(plan.dispatches.len() as u64),
        );
        for (k, d) in plan.dispatches.iter().enumerate() {
            progress.inc(1);
            let pipeline = gpu.pipeline(d.kernel);
            let mut scratch = Vec::new();
            for b in &d.bindings {
                if let Binding::Scratch(words) = b {
                    scratch.push(dev.create_buffer(&wgpu::BufferDescriptor {
                        label: Some("scratch"),
                        size: (*words as u64 * 4).max(4),
                        usage,
                        mapped_at_creation: false,
                    }));
                }
            }
            let mut entries = Vec::new();
            let mut si = 0;
            for (i, b) in d.bindings.iter().enumerate() {
                let buf = match b {
                    Binding::Tensor(t) => buffers
                        .get(plan.base_of(t))
                        .ok_or_else(|| format!("dispatch {} binds unknown tensor {t}", d.kernel))?,
                    Binding::Dummy => &dummy,
                    Binding::Scratch(_) => {
                        si += 1;
                        &scratch[si - 1]
                    }
                };
                entries.push(wgpu::BindGroupEntry {
                    binding: i as u32,
                    resource: buf.as_entire_binding(),
                });
            }
            entries.push(wgpu::BindGroupEntry {
                binding: d.bindings.len() as u32,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: &uniform,
                    offset: uniform_offsets[k],
                    size: std::num::NonZeroU64::new((d.params.len() * 4).max(16) as u64),
                }),
            });
            let bind_group = dev.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(&d.node),
                layout: &pipeline.get_bind_group_layout(0),
                entries: &entries,
            });
            steps.push(Step {
                pipeline,
                bind_group,
                workgroups: Cell::new(d.workgroups),
            });
        }
        let mut index: HashMap<Expr, usize> = HashMap::new();
        let mut sym_exprs = Vec::new();
        let mut intern = |e: &Expr| {
            *index.entry(e.clone()).or_insert_with(|| {
                sym_exprs.push(e.clone());
                sym_exprs.len() - 1
            })
        };
        let (mut sym_words, mut sym_groups) = (Vec::new(), Vec::new());
        for (i, d) in plan.dispatches.iter().enumerate() {
            let at = uniform_offsets[i] as usize;
            for (w, e) in &d.sym_params {
                sym_words.push((at + 4 * w, intern(e)));
            }
            if let Some(g) = &d.sym_workgroups {
                sym_groups.push((i, [intern(&g[0]), intern(&g[1]), intern(&g[2])]));
            }
        }
        Ok(Runner {
            gpu,
            plan,
            buffers,
            steps,
            uniform,
            uniform_offsets,
            uniform_image: RefCell::new(image),
            dims: RefCell::new(max),
            sym_exprs,
            sym_words,
            sym_groups,
        })
    }

    /// The dims the runner is bound to.
    pub fn dims(&self) -> Bindings {
        self.dims.borrow().clone()
    }

    /// Binds the plan's dims (checked against their maxima by [`Plan::bind`]): rewrites
    /// the uniform blocks and workgroup counts of the dispatches whose sizes depend on
    /// them. Nothing happens when they are already bound to these values.
    pub fn bind_dims(&self, dims: &Bindings) -> Result<(), String> {
        if *self.dims.borrow() == *dims {
            return Ok(());
        }
        // Each distinct expression once; every symbolic word into the host image, then one
        // write of the span the changed words cover.
        let values = self
            .sym_exprs
            .iter()
            .map(|e| e.word(dims))
            .collect::<Result<Vec<u32>, String>>()?;
        let (mut lo, mut hi) = (usize::MAX, 0usize);
        {
            let mut image = self.uniform_image.borrow_mut();
            for &(at, e) in &self.sym_words {
                let v = values[e].to_le_bytes();
                if image[at..at + 4] != v {
                    image[at..at + 4].copy_from_slice(&v);
                    lo = lo.min(at);
                    hi = hi.max(at + 4);
                }
            }
            for &(step, [x, y, z]) in &self.sym_groups {
                self.steps[step]
                    .workgroups
                    .set([values[x], values[y], values[z]]);
            }
        }
        if lo < hi {
            let image = self.uniform_image.borrow();
            self.gpu
                .queue
                .write_buffer(&self.uniform, lo as u64, &image[lo..hi]);
        }
        *self.dims.borrow_mut() = dims.clone();
        Ok(())
    }

    /// Binds the dims that inputs of these shapes give (checked as [`Runner::run`] does).
    pub fn bind_inputs(&self, inputs: &HashMap<String, HostTensor>) -> Result<(), String> {
        let shapes = self
            .plan
            .inputs
            .iter()
            .filter_map(|n| inputs.get(n).map(|t| (n.clone(), t.shape.clone())))
            .collect();
        let dims = self.plan.bind(&shapes)?;
        self.bind_dims(&dims)
    }

    /// The device this runner runs on.
    pub fn gpu(&self) -> &Gpu {
        self.gpu
    }

    /// The shape of a plan tensor for the bound dims.
    pub fn shape_of(&self, name: &str) -> Result<Vec<usize>, String> {
        self.plan
            .tensors
            .get(name)
            .ok_or_else(|| format!("no tensor '{name}' in the plan"))?
            .shape_at(&self.dims.borrow())
    }

    /// Writes a tensor's buffer (per-layer validation feeds oracle values this way). Views
    /// write their base buffer, which has the same element order.
    pub fn write(&self, name: &str, t: &HostTensor) -> Result<(), String> {
        let n: usize = self.shape_of(name)?.iter().product();
        if n != t.len() {
            return Err(format!("'{name}' has {n} elements, the value {}", t.len()));
        }
        let words = buffer_image(&self.plan.tensors[name], t);
        if !words.is_empty() {
            self.gpu.queue.write_buffer(
                &self.buffers[self.plan.base_of(name)],
                0,
                &words
                    .iter()
                    .flat_map(|w| w.to_le_bytes())
                    .collect::<Vec<u8>>(),
            );
        }
        Ok(())
    }

    /// Replaces one dispatch's uniform block (values that change between runs: the position
    /// of a decode step).
    pub fn set_params(&self, dispatch: usize, params: &[u32]) {
        let bytes: Vec<u8> = params.iter().flat_map(|w| w.to_le_bytes()).collect();
        let at = self.uniform_offsets[dispatch];
        self.uniform_image.borrow_mut()[at as usize..at as usize + bytes.len()]
            .copy_from_slice(&bytes);
        self.gpu.queue.write_buffer(&self.uniform, at, &bytes);
    }

    /// Runs dispatches `range` only (one node's, for per-layer validation).
    pub fn run_dispatches(&self, range: std::ops::Range<usize>) {
        let mut enc = self
            .gpu
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("partial"),
            });
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("partial"),
                timestamp_writes: None,
            });
            for s in &self.steps[range] {
                s.record(&mut pass);
            }
        }
        self.gpu.queue.submit([enc.finish()]);
    }

    /// One forward pass: writes the inputs, runs every dispatch, reads back `read`.
    /// Binds the plan's dims to the shapes of `inputs` and writes them to their buffers
    /// (the first half of [`Runner::run`]).
    pub fn write_inputs(&self, inputs: &HashMap<String, HostTensor>) -> Result<(), String> {
        let mut shapes = BTreeMap::new();
        for name in &self.plan.inputs {
            let t = inputs
                .get(name)
                .ok_or_else(|| format!("input '{name}' not given"))?;
            shapes.insert(name.clone(), t.shape.clone());
        }
        let dims = self.plan.bind(&shapes)?;
        self.bind_dims(&dims)?;
        for name in &self.plan.inputs {
            let t = &inputs[name];
            let words = buffer_image(&self.plan.tensors[name], t);
            if !words.is_empty() {
                self.gpu.queue.write_buffer(
                    &self.buffers[name],
                    0,
                    &words
                        .iter()
                        .flat_map(|w| w.to_le_bytes())
                        .collect::<Vec<u8>>(),
                );
            }
        }
        Ok(())
    }

    /// The whole pass recorded now, submitted later by [`Runner::submit_recorded`]: recording
    /// costs CPU time per dispatch, so a caller that waits on the GPU anyway can record its
    /// next pass meanwhile. Uniforms and inputs written before the submission apply (the
    /// queue runs writes before the commands submitted after them); workgroup counts are
    /// those of the dims bound now. None when the plan has sync points (the host binds
    /// values between its parts).
    pub fn record(&self) -> Option<Vec<wgpu::CommandBuffer>> {
        if !self.plan.syncs.is_empty() {
            return None;
        }
        let dev = &self.gpu.device;
        Some(
            self.steps
                .chunks(FLUSH_EVERY)
                .map(|chunk| {
                    let mut enc = dev.create_command_encoder(&wgpu::CommandEncoderDescriptor {
                        label: Some("forward (recorded ahead)"),
                    });
                    {
                        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                            label: Some("forward"),
                            timestamp_writes: None,
                        });
                        for s in chunk {
                            s.record(&mut pass);
                        }
                    }
                    enc.finish()
                })
                .collect(),
        )
    }

    /// Submits a pass from [`Runner::record`] without waiting.
    pub fn submit_recorded(&self, pass: Vec<wgpu::CommandBuffer>) -> wgpu::SubmissionIndex {
        self.gpu.queue.submit(pass)
    }

    pub fn run(
        &self,
        inputs: &HashMap<String, HostTensor>,
        read: &[String],
    ) -> Result<HashMap<String, HostTensor>, String> {
        self.write_inputs(inputs)?;
        // Sync points split the pass: run up to each, let the host bind what it reads.
        let mut from = 0;
        for k in 0..self.plan.syncs.len() {
            let at = self.plan.syncs[k].at;
            self.submit_steps(from..at, |_| {});
            self.sync(k)?;
            from = at;
        }
        self.submit_steps(from..self.steps.len(), |_| {});
        self.read(read)
    }

    /// Sync point `k` of the plan (the dispatches before it have been submitted): reads
    /// its tensor back, binds the dims it decides (for a NonZero, computes the indices on
    /// the host and writes them), and rewrites the uniforms that depend on them.
    pub fn sync(&self, k: usize) -> Result<(), String> {
        let s = &self.plan.syncs[k];
        let t = self
            .read(std::slice::from_ref(&s.tensor))?
            .remove(&s.tensor)
            .ok_or("sync tensor not read")?;
        // Dims of later sync points are still placeholders.
        let later: Vec<String> = self.plan.syncs[k + 1..]
            .iter()
            .flat_map(|l| self.plan.sync_dims(l))
            .collect();
        let pending: Vec<&str> = later.iter().map(String::as_str).collect();
        let mut dims = self.dims();
        let mut host_output = None;
        match &s.kind {
            crate::plan::SyncKind::Values => {
                self.plan
                    .bind_sync(&mut dims, s, &t.as_i64(), None, &pending)?;
            }
            crate::plan::SyncKind::NonZero { output, .. } => {
                // ONNX NonZero: [rank, count], the coordinates of each nonzero element in
                // row-major order.
                let v = t.as_f64();
                let rank = t.shape.len().max(1);
                let mut strides = vec![1usize; t.shape.len()];
                for d in (0..t.shape.len().saturating_sub(1)).rev() {
                    strides[d] = strides[d + 1] * t.shape[d + 1];
                }
                let hits: Vec<usize> = (0..v.len()).filter(|&i| v[i] != 0.0).collect();
                let mut idx = vec![0i64; rank * hits.len()];
                for (j, &flat) in hits.iter().enumerate() {
                    for d in 0..t.shape.len() {
                        idx[d * hits.len() + j] = ((flat / strides[d]) % t.shape[d]) as i64;
                    }
                }
                self.plan
                    .bind_sync(&mut dims, s, &[], Some(hits.len() as i64), &pending)?;
                host_output = Some((output.clone(), HostTensor::i64(vec![rank, hits.len()], idx)));
            }
        }
        self.bind_dims(&dims)?;
        if let Some((name, value)) = host_output {
            self.write(&name, &value)?;
        }
        Ok(())
    }

    /// Records the pass (one encoder per FLUSH_EVERY dispatches), lets `after` add commands
    /// to the last encoder, and submits without waiting.
    fn submit_pass(&self, after: impl FnOnce(&mut wgpu::CommandEncoder)) -> wgpu::SubmissionIndex {
        self.submit_steps(0..self.steps.len(), after)
    }

    /// [`Runner::submit_pass`] of dispatches `range` only.
    fn submit_steps(
        &self,
        range: std::ops::Range<usize>,
        after: impl FnOnce(&mut wgpu::CommandEncoder),
    ) -> wgpu::SubmissionIndex {
        let dev = &self.gpu.device;
        let chunks: Vec<&[Step]> = self.steps[range].chunks(FLUSH_EVERY).collect();
        let mut after = Some(after);
        let mut index = None;
        for i in 0..chunks.len().max(1) {
            let mut enc = dev.create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("forward"),
            });
            if let Some(chunk) = chunks.get(i) {
                let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("forward"),
                    timestamp_writes: None,
                });
                for s in *chunk {
                    s.record(&mut pass);
                }
            }
            if i + 1 >= chunks.len() {
                (after.take().expect("once"))(&mut enc);
            }
            index = Some(self.gpu.queue.submit([enc.finish()]));
        }
        index.expect("at least one submission")
    }

    /// Records and submits the pass without waiting; returns the CPU time that took.
    pub fn record_and_submit(&self) -> std::time::Duration {
        let t = std::time::Instant::now();
        self.submit_pass(|_| {});
        t.elapsed()
    }

    /// Submits one pass and, in the same submission, copies each `feedback` pair (src ->
    /// dst tensor, same size) on the GPU, so the next pass starts from this one's result
    /// without a round trip through the CPU, and copies `read` out for [`Runner::wait`].
    /// Returns without waiting: the CPU can record the next pass while this one runs.
    pub fn submit_chained(&self, feedback: &[(&str, &str)], read: &str) -> Result<Pending, String> {
        let mut desc = self
            .plan
            .tensors
            .get(read)
            .ok_or_else(|| format!("no tensor '{read}' in the plan"))?
            .clone();
        desc.shape = crate::sym::fixed(&self.shape_of(read)?);
        let mut pairs = Vec::new();
        for (src, dst) in feedback {
            let bytes = |n: &str| -> Result<u64, String> {
                let t = self
                    .plan
                    .tensors
                    .get(n)
                    .ok_or_else(|| format!("no tensor '{n}' in the plan"))?;
                Ok(t.dt.buffer_bytes(self.shape_of(n)?.iter().product()))
            };
            if bytes(src)? != bytes(dst)? {
                return Err(format!("feedback {src} -> {dst}: sizes differ"));
            }
            pairs.push((self.plan.base_of(src), self.plan.base_of(dst), bytes(src)?));
        }
        let shape = desc.fixed_shape().expect("bound");
        let bytes = desc.dt.buffer_bytes(shape.iter().product()).max(4);
        let staging = self.gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("staging"),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let read_base = self.plan.base_of(read);
        let index = self.submit_pass(|enc| {
            enc.copy_buffer_to_buffer(&self.buffers[read_base], 0, &staging, 0, bytes);
            for (src, dst, n) in &pairs {
                enc.copy_buffer_to_buffer(&self.buffers[*src], 0, &self.buffers[*dst], 0, *n);
            }
        });
        staging.slice(..).map_async(wgpu::MapMode::Read, |_| {});
        Ok(Pending {
            staging,
            index,
            desc,
        })
    }

    /// Waits for a pass of [`Runner::submit_chained`] (only that one) and returns its value.
    pub fn wait(&self, p: Pending) -> Result<HostTensor, String> {
        self.gpu
            .device
            .poll(wgpu::PollType::Wait {
                submission_index: Some(p.index),
                timeout: None,
            })
            .map_err(|e| format!("device poll failed: {e}"))?;
        let words = {
            let view = p
                .staging
                .slice(..)
                .get_mapped_range()
                .map_err(|e| format!("cannot map the read-back buffer: {e:?}"))?;
            words_of(&view)
        };
        p.staging.unmap();
        let shape = p.desc.fixed_shape().expect("bound");
        let n = shape.iter().product::<usize>();
        Ok(HostTensor::from_words(p.desc.dt, shape, &words[..n]))
    }

    /// Reads tensors back (debug capture of any checkpoint, or the outputs).
    pub fn read(&self, names: &[String]) -> Result<HashMap<String, HostTensor>, String> {
        let dev = &self.gpu.device;
        let mut out = HashMap::new();
        let mut pending = Vec::new();
        let mut enc = dev.create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("readback"),
        });
        for name in names {
            if let Some(v) = self.plan.shape_values.get(self.plan.base_of(name)) {
                let dims = self.dims.borrow();
                let values = v.iter().map(|e| e.eval(&dims)).collect::<Result<_, _>>()?;
                out.insert(name.clone(), HostTensor::i64(self.shape_of(name)?, values));
                continue;
            }
            if let Some(c) = self.plan.constants.get(self.plan.base_of(name)) {
                out.insert(name.clone(), c.reshaped(self.shape_of(name)?));
                continue;
            }
            let desc = self
                .plan
                .tensors
                .get(name)
                .ok_or_else(|| format!("no tensor '{name}' in the plan"))?;
            let shape = self.shape_of(name)?;
            let n: usize = shape.iter().product();
            if n == 0 {
                out.insert(name.clone(), HostTensor::from_words(desc.dt, shape, &[]));
                continue;
            }
            let src = &self.buffers[self.plan.base_of(name)];
            // A strided view (an in-place cache) is read whole and gathered here.
            let offsets = desc.element_offsets(&shape);
            let bytes = match &offsets {
                Some(o) => 4 * (o.iter().max().map_or(0, |m| m + 1) as u64),
                None => desc.dt.buffer_bytes(n),
            };
            let staging = dev.create_buffer(&wgpu::BufferDescriptor {
                label: Some("staging"),
                size: bytes,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            enc.copy_buffer_to_buffer(src, 0, &staging, 0, bytes);
            pending.push((name.clone(), desc.dt, shape, staging, offsets));
        }
        self.gpu.queue.submit([enc.finish()]);
        for (_, _, _, staging, _) in &pending {
            staging.slice(..).map_async(wgpu::MapMode::Read, |_| {});
        }
        dev.poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| format!("device poll failed: {e}"))?;
        for (name, dt, shape, staging, offsets) in pending {
            let mut words = {
                let view = staging
                    .slice(..)
                    .get_mapped_range()
                    .map_err(|e| format!("cannot map the read-back buffer: {e:?}"))?;
                words_of(&view)
            };
            if let Some(o) = offsets {
                words = o.iter().map(|&k| words[k]).collect();
            }
            staging.unmap();
            out.insert(name, HostTensor::from_words(dt, shape, &words));
        }
        Ok(out)
    }
}
