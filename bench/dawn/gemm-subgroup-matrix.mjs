// f16 GEMM on subgroup matrices (matrix units from WGSL, Dawn's
// `chromium-experimental-subgroup-matrix`) against the f32 register-blocked kernel in the same
// Dawn device; the peer (cuBLAS HGEMM / SGEMM through torch) runs in the same device call from
// bench/cublas_sgemm.py. Issue 20, item 5.
//
// Usage: node gemm-subgroup-matrix.mjs DAWN_NODE [SIZES=2048,4096,8192] [--json FILE]
//   STEPS=1 prints each stage (dawn.node 0.6.2 aborts at 2048^3 and above: bench/RESULTS.md);
//   SHOW_WGSL=1 prints the staged kernel.
//
// C[m,n] = A[m,k] B[k,n], A and B row-major f16, C f32 (f32 accumulation), square sizes that
// are multiples of the 128 x 128 workgroup tile. The kernel is generated for the matrix shape
// the adapter lists first among its f16 -> f32 configs (adapter.info.subgroupMatrixConfigs).
// Two layouts are timed: `staged` (128 x 32 of A and 32 x 128 of B staged in workgroup memory
// per step, eight subgroups each owning a 64 x 32 block of C) and `direct` (each subgroup loads
// its matrices straight from the storage buffers). Every product is checked on 512 sampled
// entries against float64 sums of the same f16 inputs; a timing whose check fails is reported
// as failed, never as a speed.
import { createRequire } from 'node:module';
import fs from 'node:fs';
import path from 'node:path';

const args = process.argv.slice(2);
const dawnPath = args[0];
const jsonAt = args.indexOf('--json');
const jsonFile = jsonAt > 0 ? args[jsonAt + 1] : null;
const sizes = (args[1] && !args[1].startsWith('--') ? args[1] : '2048,4096,8192').split(',').map(Number);
const require = createRequire(import.meta.url);
const { create, globals } = require(path.resolve(dawnPath));
Object.assign(globalThis, globals);
const gpu = create(['enable-dawn-features=allow_unsafe_apis,vulkan_enable_f16_on_nvidia']);
const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
const feats = [...adapter.features].sort();
const configs = [...(adapter.info.subgroupMatrixConfigs ?? [])].map((c) => ({
  componentType: c.componentType, resultComponentType: c.resultComponentType, M: c.M, N: c.N, K: c.K,
}));
console.log(`adapter: ${adapter.info.vendor} ${adapter.info.architecture} ${adapter.info.description ?? ''}`);
console.log(`subgroup sizes ${adapter.info.subgroupMinSize}-${adapter.info.subgroupMaxSize}; features: ${feats.join(' ')}`);
console.log(`subgroup matrix configs: ${JSON.stringify(configs)}`);
const want = ['shader-f16', 'subgroups', 'chromium-experimental-subgroup-matrix', 'timestamp-query'];
const missing = want.filter((f) => !adapter.features.has(f));
const result = { adapter: { ...adapter.info, subgroupMatrixConfigs: configs }, results: [] };
if (missing.length) {
  console.log(`no subgroup-matrix GEMM here: the adapter lacks ${missing.join(', ')}`);
  if (jsonFile) fs.writeFileSync(jsonFile, JSON.stringify(result, null, 1));
  process.exit(0);
}
const f16Configs = configs.filter((c) => c.componentType === 'f16' && c.resultComponentType === 'f32');
// The largest K per step (fewest loads per multiply), then the squarest.
const cfg = f16Configs.sort((x, y) => y.K - x.K || Math.abs(x.M - x.N) - Math.abs(y.M - y.N))[0];
if (!cfg) {
  console.log('no f16 -> f32 subgroup matrix config');
  process.exit(0);
}
const device = await adapter.requestDevice({
  requiredFeatures: want,
  requiredLimits: {
    maxStorageBufferBindingSize: adapter.limits.maxStorageBufferBindingSize,
    maxBufferSize: adapter.limits.maxBufferSize,
    maxComputeWorkgroupStorageSize: adapter.limits.maxComputeWorkgroupStorageSize,
  },
});
device.addEventListener?.('uncapturederror', (e) => console.log(`uncaptured: ${e.error.message}`));
const SG = adapter.info.subgroupMaxSize; // NVIDIA: 32, one size
const { M: SM, N: SN, K: SK } = cfg;
console.log(`using config ${JSON.stringify(cfg)}`);

// The workgroup tile: 128 x 128 of C from 8 subgroups (2 rows x 4 columns of 64 x 32 blocks).
const TM = 128, TN = 128, KT = 32, WGS = 8 * SG;
const WR = 64, WC = 32; // one subgroup's block of C
const PAD = 8; // f16 padding per workgroup-memory row (bank spread)
const AS = KT + PAD, BS = TN + PAD;
const RI = WR / SM, CJ = WC / SN; // result matrices per subgroup

function kernel(staged) {
  const L = `subgroup_matrix_left<f16, ${SK}, ${SM}>`;
  const R = `subgroup_matrix_right<f16, ${SN}, ${SK}>`;
  const Res = `subgroup_matrix_result<f32, ${SN}, ${SM}>`;
  let s = `enable f16;
enable subgroups;
enable chromium_experimental_subgroup_matrix;
// Each subgroup's offsets derive from local_invocation_index / subgroup size, which is uniform
// per subgroup; Tint's analysis cannot see that, so its subgroup-matrix check is turned off.
diagnostic(off, chromium.subgroup_matrix_uniformity);
// bindings: 0 A (m x k, f16), 1 B (k x n, f16), 2 C (m x n, f32), 3 dims
struct Dims { m: u32, n: u32, k: u32, pad: u32 }
@group(0) @binding(0) var<storage, read> a: array<${staged ? 'vec4<f16>' : 'f16'}>;
@group(0) @binding(1) var<storage, read> b: array<${staged ? 'vec4<f16>' : 'f16'}>;
@group(0) @binding(2) var<storage, read_write> c: array<f32>;
@group(0) @binding(3) var<uniform> d: Dims;
`;
  if (staged) s += `var<workgroup> a_tile: array<f16, ${TM * AS}>;\nvar<workgroup> b_tile: array<f16, ${KT * BS}>;\n`;
  s += `@compute @workgroup_size(${WGS})
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let sg = li / ${SG}u;
  let row0 = wg.y * ${TM}u;
  let col0 = wg.x * ${TN}u;
  let sr = (sg / 4u) * ${WR}u;
  let sc = (sg % 4u) * ${WC}u;
`;
  for (let i = 0; i < RI; i++) for (let j = 0; j < CJ; j++) s += `  var acc_${i}_${j} = ${Res}();\n`;
  s += `  for (var k0 = 0u; k0 < d.k; k0 += ${KT}u) {\n`;
  if (staged) {
    // A tile: TM rows x KT/4 vec4; B tile: KT rows x TN/4 vec4.
    const av = (TM * KT) / 4, bv = (KT * TN) / 4;
    s += `    for (var i = li; i < ${av}u; i += ${WGS}u) {
      let r = i / ${KT / 4}u; let q = i % ${KT / 4}u;
      let v = a[((row0 + r) * d.k + k0) / 4u + q];
      let o = r * ${AS}u + q * 4u;
      a_tile[o] = v.x; a_tile[o + 1u] = v.y; a_tile[o + 2u] = v.z; a_tile[o + 3u] = v.w;
    }
    for (var i = li; i < ${bv}u; i += ${WGS}u) {
      let r = i / ${TN / 4}u; let q = i % ${TN / 4}u;
      let v = b[((k0 + r) * d.n + col0) / 4u + q];
      let o = r * ${BS}u + q * 4u;
      b_tile[o] = v.x; b_tile[o + 1u] = v.y; b_tile[o + 2u] = v.z; b_tile[o + 3u] = v.w;
    }
    workgroupBarrier();
`;
  }
  s += `    for (var kk = 0u; kk < ${KT}u; kk += ${SK}u) {\n`;
  for (let i = 0; i < RI; i++) {
    const off = staged ? `(sr + ${i * SM}u) * ${AS}u + kk` : `(row0 + sr + ${i * SM}u) * d.k + k0 + kk`;
    s += `      let l${i} = subgroupMatrixLoad<${L}>(&a_tile_PTR, ${off}, false, ${staged ? `${AS}u` : 'd.k'});\n`.replace('a_tile_PTR', staged ? 'a_tile' : 'a');
  }
  for (let j = 0; j < CJ; j++) {
    const off = staged ? `kk * ${BS}u + sc + ${j * SN}u` : `(k0 + kk) * d.n + col0 + sc + ${j * SN}u`;
    s += `      let r${j} = subgroupMatrixLoad<${R}>(&${staged ? 'b_tile' : 'b'}, ${off}, false, ${staged ? `${BS}u` : 'd.n'});\n`;
  }
  for (let i = 0; i < RI; i++) for (let j = 0; j < CJ; j++) s += `      acc_${i}_${j} = subgroupMatrixMultiplyAccumulate(l${i}, r${j}, acc_${i}_${j});\n`;
  s += `    }\n`;
  if (staged) s += `    workgroupBarrier();\n`;
  s += `  }\n`;
  for (let i = 0; i < RI; i++)
    for (let j = 0; j < CJ; j++)
      s += `  subgroupMatrixStore(&c, (row0 + sr + ${i * SM}u) * d.n + col0 + sc + ${j * SN}u, acc_${i}_${j}, false, d.n);\n`;
  s += `}\n`;
  return s;
}

// f32 reference point in the same device: 4x4 register-blocked tiles (64 x 64 per workgroup).
const f32Kernel = `
struct Dims { m: u32, n: u32, k: u32, pad: u32 }
@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> c: array<vec4<f32>>;
@group(0) @binding(3) var<uniform> d: Dims;
var<workgroup> at: array<f32, ${64 * 17}>;
var<workgroup> bt: array<vec4<f32>, ${16 * 16}>;
@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_id) l: vec3u) {
  let r0 = wg.y * 64u + l.y * 4u;
  let c4 = wg.x * 16u + l.x;
  var acc: array<vec4<f32>, 4>;
  let li = l.y * 16u + l.x;
  for (var k0 = 0u; k0 < d.k; k0 += 16u) {
    for (var i = li; i < 1024u; i += 256u) { let r = i / 16u; let q = i % 16u; at[r * 17u + q] = a[(wg.y * 64u + r) * d.k + k0 + q]; }
    bt[li] = b[((k0 + l.y) * d.n) / 4u + c4];
    workgroupBarrier();
    for (var kk = 0u; kk < 16u; kk++) {
      let bv = bt[kk * 16u + l.x];
      for (var i = 0u; i < 4u; i++) { acc[i] += at[(l.y * 4u + i) * 17u + kk] * bv; }
    }
    workgroupBarrier();
  }
  for (var i = 0u; i < 4u; i++) { c[((r0 + i) * d.n) / 4u + c4] = acc[i]; }
}`;

function pipeline(code, label) {
  const module = device.createShaderModule({ code, label });
  return device.createComputePipeline({ layout: 'auto', compute: { module, entryPoint: 'main' }, label });
}

function f32ToF16Bits(x) {
  const f = new Float32Array([x]);
  const u = new Uint32Array(f.buffer)[0];
  const sign = (u >>> 16) & 0x8000;
  let e = ((u >>> 23) & 0xff) - 127 + 15;
  let m = u & 0x7fffff;
  if (e <= 0) return sign; // inputs here are in [-1, 1): no subnormal needed for the check
  // round to nearest even
  let h = sign | (e << 10) | (m >>> 13);
  const rest = m & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && (h & 1))) h++;
  return h;
}
function f16BitsToF32(h) {
  const s = h & 0x8000 ? -1 : 1, e = (h >>> 10) & 0x1f, m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

let seed = 12345;
const rnd = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32) * 2 - 1;

async function readBack(buf, bytes) {
  const rb = device.createBuffer({ size: bytes, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  const enc = device.createCommandEncoder();
  enc.copyBufferToBuffer(buf, 0, rb, 0, bytes);
  device.queue.submit([enc.finish()]);
  await new Promise((r) => setTimeout(r, 400)); // see run(): sleep past the work, then map
  await rb.mapAsync(GPUMapMode.READ);
  const out = new Float32Array(rb.getMappedRange().slice(0));
  rb.unmap();
  rb.destroy();
  return out;
}

const qs = device.createQuerySet({ type: 'timestamp', count: 2 });
const qResolve = device.createBuffer({ size: 16, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
const qRead = device.createBuffer({ size: 16, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
const step = (m) => process.env.STEPS && console.log(`step: ${m}`);
const median = (v) => [...v].sort((x, y) => x - y)[Math.floor(v.length / 2)];
const variants = [
  { name: 'subgroup-matrix f16 staged', code: kernel(true), half: true, tile: [TM, TN] },
  { name: 'subgroup-matrix f16 direct', code: kernel(false), half: true, tile: [TM, TN] },
  { name: 'f32 4x4 register-blocked', code: f32Kernel, half: false, tile: [64, 64] },
];
if (process.env.SHOW_WGSL) console.log(variants[0].code);
const pipes = [];
for (const v of variants) {
  device.pushErrorScope('validation');
  const p = pipeline(v.code, v.name);
  const err = await device.popErrorScope();
  if (err) {
    console.log(`${v.name}: does not compile: ${err.message}`);
    continue;
  }
  pipes.push({ ...v, p });
}

for (const n of sizes) {
  const a16 = new Uint16Array(n * n), b16 = new Uint16Array(n * n);
  for (let i = 0; i < n * n; i++) a16[i] = f32ToF16Bits(rnd());
  for (let i = 0; i < n * n; i++) b16[i] = f32ToF16Bits(rnd());
  // The f32 kernel gets the same values (the f16 ones, widened), so all check against one sum.
  const a32 = new Float32Array(n * n), b32 = new Float32Array(n * n);
  for (let i = 0; i < n * n; i++) { a32[i] = f16BitsToF32(a16[i]); b32[i] = f16BitsToF32(b16[i]); }
  // Filled through a mapping at creation: dawn.node aborted the process on multi-MiB writeBuffer.
  const mk = (data) => {
    const buf = device.createBuffer({ size: data.byteLength, usage: GPUBufferUsage.STORAGE, mappedAtCreation: true });
    new Uint8Array(buf.getMappedRange()).set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    buf.unmap();
    return buf;
  };
  step(`buffers ${n}`);
  const A16 = mk(a16), B16 = mk(b16), A32 = mk(a32), B32 = mk(b32);
  const C = device.createBuffer({ size: n * n * 4, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC });
  const dims = device.createBuffer({ size: 16, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
  device.queue.writeBuffer(dims, 0, new Uint32Array([n, n, n, 0]));
  // 512 sampled entries, float64 sums of the same inputs.
  const samples = [];
  for (let s = 0; s < 512; s++) {
    const i = Math.floor(((rnd() + 1) / 2) * n) % n, j = Math.floor(((rnd() + 1) / 2) * n) % n;
    let acc = 0;
    for (let k = 0; k < n; k++) acc += a32[i * n + k] * b32[k * n + j];
    samples.push([i, j, acc]);
  }
  step('samples done');
  const scale = Math.max(...samples.map((s) => Math.abs(s[2])));
  for (const v of pipes) {
    const bg = device.createBindGroup({
      layout: v.p.getBindGroupLayout(0),
      entries: [v.half ? A16 : A32, v.half ? B16 : B32, C, dims].map((buffer, binding) => ({ binding, resource: { buffer } })),
    });
    const iters = n <= 2048 ? 40 : n <= 4096 ? 10 : 4;
    // GPU time of `count` back-to-back dispatches from the pass's timestamps (dawn.node has no
    // working onSubmittedWorkDone: a mapped read-back is the wait).
    const run = async (count) => {
      const enc = device.createCommandEncoder();
      const pass = enc.beginComputePass({ timestampWrites: { querySet: qs, beginningOfPassWriteIndex: 0, endOfPassWriteIndex: 1 } });
      pass.setPipeline(v.p);
      pass.setBindGroup(0, bg);
      for (let r = 0; r < count; r++) pass.dispatchWorkgroups(n / v.tile[1], n / v.tile[0]);
      pass.end();
      enc.resolveQuerySet(qs, 0, 2, qResolve, 0);
      enc.copyBufferToBuffer(qResolve, 0, qRead, 0, 16);
      device.queue.submit([enc.finish()]);
      // dawn.node aborts the process (std::system_error from a futex) when mapAsync waits on
      // work that runs for milliseconds: sleep past the work first, then map.
      await new Promise((r) => setTimeout(r, n >= 8192 ? 400 : 100));
      await qRead.mapAsync(GPUMapMode.READ);
      const t = new BigInt64Array(qRead.getMappedRange().slice(0));
      qRead.unmap();
      return Number(t[1] - t[0]) / 1e9;
    };
    step(`first run ${v.name}`);
    device.pushErrorScope('validation');
    await run(1);
    step('ran');
    const verr = await device.popErrorScope();
    const c = await readBack(C, n * n * 4);
    step('read back');
    let worst = 0, bad = 0;
    for (const [i, j, want] of samples) {
      const got = c[i * n + j];
      if (!Number.isFinite(got)) bad++;
      else worst = Math.max(worst, Math.abs(got - want) / scale);
    }
    const ok = !verr && bad === 0 && worst < 1e-3;
    step('checked');
    await run(3); // warm-up
    step('warm');
    const times = [];
    for (let r = 0; r < 7; r++) times.push((await run(iters)) / iters);
    const t = median(times);
    const tflops = (2 * n ** 3) / t / 1e12;
    const line = `${v.name} ${n}^3: ${ok ? `${tflops.toFixed(1)} TFLOP/s` : 'FAILED CHECK'} (median of 7 x ${iters}; spread ${((2 * n ** 3) / Math.max(...times) / 1e12).toFixed(1)}-${((2 * n ** 3) / Math.min(...times) / 1e12).toFixed(1)}), max err ${worst.toExponential(1)} of the output scale${bad ? `, ${bad} non-finite` : ''}${verr ? `, error: ${verr.message}` : ''}`;
    console.log(line);
    result.results.push({ kernel: v.name, size: n, ok, tflops: ok ? tflops : null, times_s: times, max_err: worst, config: v.half ? cfg : null });
  }
  for (const b of [A16, B16, A32, B32, C, dims]) b.destroy();
}
if (jsonFile) fs.writeFileSync(jsonFile, JSON.stringify(result, null, 1));
process.exit(0);
