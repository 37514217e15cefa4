// Load a local hubcompress output folder with transformers.js and run it on a
// list of texts, writing the results as JSON.
//
// Usage:
//   node check.mjs --model <folder> --texts <texts.json> --out <result.json>
//                  [--task feature-extraction|text-classification|token-classification|fill-mask|question-answering]
//                  [--dtype fp32|q8|int8|...] [--backend node|web]
//
// <texts.json> is a JSON array of strings ({question, context} objects for question-answering;
// for fill-mask each string holds the tokenizer's mask token once).
// --backend node (default) uses onnxruntime-node, which is what transformers.js
// picks under Node.js. --backend web registers onnxruntime-web (WASM, the
// runtime browsers use) as the global ONNX runtime before transformers.js is
// imported, so the same folder is checked against the browser runtime.
//
// Nothing is fetched from the network: env.allowRemoteModels = false and
// local_files_only = true, and the model is read from the folder given.
// On failure the script writes {"ok": false, "error": ...} to --out (when given)
// and exits with status 1.

import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { performance } from "node:perf_hooks";

const require = createRequire(import.meta.url);

const TASKS = ["feature-extraction", "text-classification", "token-classification", "fill-mask",
  "question-answering"];

function parseArgs(argv) {
  const args = {
    task: "feature-extraction",
    dtype: "fp32",
    backend: "node",
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith("--")) throw new Error(`unexpected argument: ${a}`);
    const key = a.slice(2);
    const value = argv[i + 1];
    if (value === undefined) throw new Error(`missing value for ${a}`);
    args[key] = value;
    i++;
  }
  for (const k of ["model", "texts"]) {
    if (!args[k]) throw new Error(`--${k} is required`);
  }
  if (!TASKS.includes(args.task)) {
    throw new Error(`unsupported --task ${args.task}`);
  }
  if (!["node", "web"].includes(args.backend)) {
    throw new Error(`unsupported --backend ${args.backend}`);
  }
  return args;
}

function packageVersion(name) {
  try {
    return require(`${name}/package.json`).version;
  } catch {
    // Some packages do not export package.json; read it from node_modules.
    try {
      const p = path.join(path.dirname(new URL(import.meta.url).pathname), "node_modules", name, "package.json");
      return JSON.parse(fs.readFileSync(p, "utf8")).version;
    } catch {
      return null;
    }
  }
}

function writeResult(file, result) {
  const text = JSON.stringify(result);
  if (file) fs.writeFileSync(file, text);
  else process.stdout.write(text + "\n");
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const folder = path.resolve(args.model);
  if (!fs.existsSync(path.join(folder, "config.json"))) {
    throw new Error(`${folder} has no config.json`);
  }
  // Strings; for question-answering, {question, context} objects.
  const texts = JSON.parse(fs.readFileSync(args.texts, "utf8"));
  const wanted = args.task === "question-answering" ? (t) => typeof t?.question === "string" && typeof t?.context === "string"
    : (t) => typeof t === "string";
  if (!Array.isArray(texts) || !texts.every(wanted)) {
    throw new Error(`${args.texts} must hold a JSON array of ${args.task === "question-answering" ? "{question, context} objects" : "strings"}`);
  }

  if (args.backend === "web") {
    // transformers.js's Node build always binds onnxruntime-node (its copy of
    // onnxruntime-web is stubbed out) unless a runtime is set on
    // globalThis[Symbol.for("onnxruntime")]. It then lists no devices, so
    // every named device is refused; device "auto" passes an empty
    // executionProviders list and onnxruntime-web falls back to its WASM
    // backend -- the runtime browsers use.
    const ortWeb = await import("onnxruntime-web");
    const ort = ortWeb.default ?? ortWeb;
    // Load the .wasm from the installed package, not from a CDN.
    ort.env.wasm.wasmPaths = path.join(path.dirname(require.resolve("onnxruntime-web")), "/");
    globalThis[Symbol.for("onnxruntime")] = ort;
  }
  const { pipeline, env } = await import("@huggingface/transformers");

  env.allowRemoteModels = false;
  env.allowLocalModels = true;
  // transformers.js joins localModelPath and the model id with "/".
  env.localModelPath = path.dirname(folder) + "/";
  const modelId = path.basename(folder);

  const result = {
    ok: false,
    task: args.task,
    dtype: args.dtype,
    backend: args.backend,
    runtime: args.backend === "web" ? "onnxruntime-web (WASM)" : "onnxruntime-node (CPU)",
    model: folder,
    versions: {
      node: process.versions.node,
      "@huggingface/transformers": packageVersion("@huggingface/transformers"),
      "onnxruntime-node": packageVersion("onnxruntime-node"),
      "onnxruntime-web": packageVersion("onnxruntime-web"),
    },
  };

  const options = { dtype: args.dtype, local_files_only: true };
  options.device = args.backend === "web" ? "auto" : "cpu";

  let t0 = performance.now();
  let pipe;
  try {
    pipe = await pipeline(args.task, modelId, options);
  } catch (err) {
    result.stage = "load";
    throw Object.assign(err, { result });
  }
  result.load_ms = performance.now() - t0;
  result.model_files = pipe.model?.sessions
    ? Object.fromEntries(
        Object.entries(pipe.model.sessions).map(([k, s]) => [
          k,
          { inputs: s.inputNames, outputs: s.outputNames },
        ]),
      )
    : null;

  t0 = performance.now();
  try {
    if (args.task === "feature-extraction") {
      const out = await pipe(texts, { pooling: "mean", normalize: true });
      result.dims = out.dims;
      result.embeddings = out.tolist();
    } else if (args.task === "token-classification") {
      // One list per text of the tokens not labelled "O": {entity, score, index, word}.
      result.tokens = [];
      for (const text of texts) result.tokens.push(await pipe(text));
    } else if (args.task === "fill-mask") {
      // Each text holds one mask token; the five best fillers, best first.
      result.fillers = [];
      for (const text of texts) result.fillers.push(await pipe(text, { top_k: 5 }));
    } else if (args.task === "question-answering") {
      result.answers = [];
      for (const { question, context } of texts) result.answers.push(await pipe(question, context));
    } else {
      // top_k: null returns every label with its score, best first.
      const out = await pipe(texts, { top_k: null });
      const rows = texts.length === 1 && !Array.isArray(out[0]) ? [out] : out;
      result.predictions = rows.map((scores) => ({
        label: scores[0].label,
        score: scores[0].score,
        scores: Object.fromEntries(scores.map((s) => [s.label, s.score])),
      }));
      result.id2label = pipe.model.config.id2label ?? null;
    }
  } catch (err) {
    result.stage = "run";
    throw Object.assign(err, { result });
  }
  result.run_ms = performance.now() - t0;
  result.ok = true;
  await pipe.dispose?.();
  writeResult(args.out, result);
}

main().catch((err) => {
  const argv = process.argv.slice(2);
  const outIdx = argv.indexOf("--out");
  const out = outIdx >= 0 ? argv[outIdx + 1] : null;
  const result = err.result ?? { ok: false, stage: "setup" };
  result.ok = false;
  result.error = String(err?.stack ?? err);
  try {
    writeResult(out, result);
  } catch {
    // ignore: the error is printed below either way
  }
  console.error(err?.stack ?? err);
  process.exit(1);
});
