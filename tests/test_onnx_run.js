// test_onnx_run.js — runs an ONNX model in ONNX Runtime (npm onnxruntime-node) and
// compares its output with ours; driven by test_onnx_runtime.c.
//
//   node test_onnx_run.js --probe        exit 0 if onnxruntime-node loads, else 77
//   node test_onnx_run.js MODEL INPUT N,C,H,W EXPECTED TOL
//       INPUT, EXPECTED: raw float32 in this machine's byte order (the C test writes
//       them); feeds "input", reads "output"; prints the relative L2 error
//       ||ort - ours|| / ||ours|| and exits 0 when it is <= TOL, 1 when not, 2 on error.
'use strict';
const fs = require('fs');

let ort;
try {
  ort = require('onnxruntime-node');
} catch (e) {
  console.log(`SKIP: npm package onnxruntime-node not found (${e.code || e.message}); ` +
              './run.sh test installs it into build-node/');
  process.exit(77);
}
if (process.argv[2] === '--probe') process.exit(0);

// A Float32Array copy of a file of raw float32 values.
function readF32(path) {
  const b = fs.readFileSync(path);
  const out = new Float32Array(b.length / 4);
  new Uint8Array(out.buffer).set(b);
  return out;
}

async function main() {
  const [model, inPath, dimsStr, expPath, tolStr] = process.argv.slice(2);
  const dims = dimsStr.split(',').map(Number);
  const x = readF32(inPath), want = readF32(expPath), tol = Number(tolStr);
  const t0 = process.hrtime.bigint();
  const session = await ort.InferenceSession.create(model);
  const t1 = process.hrtime.bigint();
  const res = await session.run({input: new ort.Tensor('float32', x, dims)});
  const t2 = process.hrtime.bigint();
  const got = res.output.data;
  if (got.length !== want.length) {
    console.log(`onnx_run: ${model}: ${got.length} values, ours has ${want.length} ` +
                `(shape ${res.output.dims})`);
    return 1;
  }
  let num = 0, den = 0, maxAbs = 0, worst = 0;
  for (let i = 0; i < got.length; i++) {
    const d = got[i] - want[i];
    num += d * d;
    den += want[i] * want[i];
    if (!(Math.abs(d) <= maxAbs)) { maxAbs = Math.abs(d); worst = i; }
  }
  const rel = Math.sqrt(num / (den > 0 ? den : 1));
  const ms = (a, b) => (Number(b - a) / 1e6).toFixed(1);
  console.log(`onnx_run: ${model}: output [${res.output.dims}], relative L2 ${rel.toExponential(3)} ` +
              `(max abs ${maxAbs.toExponential(3)} at ${worst}), load ${ms(t0, t1)} ms, ` +
              `run ${ms(t1, t2)} ms, onnxruntime-node ${require('onnxruntime-node/package.json').version}`);
  return rel <= tol ? 0 : 1;
}

main().then(rc => process.exit(rc), e => {
  console.log(`onnx_run: ${e.message}`);
  process.exit(2);
});
