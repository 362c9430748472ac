// .npy reading shared by the benchmark scripts (a generated package's tests carry their own
// copy: a package depends on nothing outside it).

const KINDS = {
  '<f4': ['float32', Float32Array],
  '<f8': ['float64', Float64Array],
  '<i4': ['int32', Int32Array],
  '<i8': ['int64', BigInt64Array],
  '|u1': ['uint8', Uint8Array],
  '|b1': ['bool', Uint8Array],
};

/** An .npy file's bytes as { type (ONNX Runtime's name), shape, values (numbers) }. */
export function parseNpy(buf) {
  if (buf.readUInt32BE(0) !== 0x934e554d) throw new Error('not an npy file');
  const headerLen = buf[6] === 1 ? buf.readUInt16LE(8) : buf.readUInt32LE(8);
  const start = buf[6] === 1 ? 10 : 12;
  const header = buf.toString('latin1', start, start + headerLen);
  const descr = /'descr':\s*'([^']+)'/.exec(header)[1];
  const shape = /'shape':\s*\(([^)]*)\)/.exec(header)[1].split(',').map((s) => s.trim()).filter(Boolean).map(Number);
  const data = buf.subarray(start + headerLen);
  const copy = data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength);
  const kind = KINDS[descr];
  if (!kind) throw new Error(`npy dtype ${descr}`);
  return { type: kind[0], shape, values: Array.from(new kind[1](copy), Number) };
}
