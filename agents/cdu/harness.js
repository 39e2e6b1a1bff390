// The trusted half of a sandboxed JavaScript run (see agents/cdu/sandbox.py): node runs it
// with the permission model on (file reads only in the run's folder, the result file the
// only write, no child processes or workers), inside the limits prlimit set. It evaluates
// the submission in a fresh vm context (no require, no process) and calls its function once
// per test, writing one JSON line per test to the result file; the parent compares values.
"use strict";
const fs = require("fs");
const vm = require("vm");

const [specPath, resultPath] = process.argv.slice(2);
const spec = JSON.parse(fs.readFileSync(specPath, "utf8"));
const out = fs.openSync(resultPath, "w");
const emit = (record) => fs.writeSync(out, JSON.stringify(record) + "\n");
const violations = [];

function describe(error) {
  if (error && error.code === "ERR_ACCESS_DENIED") {
    const reason = `permission denied (${error.permission || "resource"} outside the sandbox)`;
    if (violations.length < 20) violations.push(reason);
    return `PermissionError: sandbox: ${reason}`;
  }
  if (error instanceof RangeError && /call stack/.test(String(error.message))) {
    return "RangeError: maximum call stack size exceeded";
  }
  const name = (error && error.name) || typeof error;
  return `${name}: ${error && error.message !== undefined ? error.message : String(error)}`.slice(0, 1000);
}

emit({ "fl-result": "started" });
const print = (...parts) => process.stdout.write(parts.map(String).join(" ") + "\n");
const context = vm.createContext({ console: { log: print, error: print } });
let fn;
try {
  vm.runInContext(spec.source, context, { filename: "submission.js" });
  fn = vm.runInContext(`typeof ${spec.function} === "function" ? ${spec.function} : undefined`, context);
} catch (error) {
  emit({ load_error: describe(error), violations });
  process.exit(0);
}
if (typeof fn !== "function") {
  emit({ load_error: `the submission defines no function ${spec.function}()` });
  process.exit(0);
}
for (const test of spec.tests) {
  const record = { test: test.name };
  try {
    const value = fn(...test.args);
    const text = value === undefined ? undefined : JSON.stringify(value);
    if (text === undefined) record.error = "returned undefined, which is not comparable as JSON";
    else record.value = text;
  } catch (error) {
    record.error = describe(error);
  }
  record.violations = [...violations];
  emit(record);
}
emit({ "fl-result": "done", violations });
process.exit(0);
