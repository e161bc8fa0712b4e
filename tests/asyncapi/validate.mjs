// Runs the official AsyncAPI parser (@asyncapi/parser, default options, as generators and
// AsyncAPI Studio use it) over an AsyncAPI document and prints one JSON report on stdout:
// {parser, asyncapi, diagnostics, messages, problems}. Exits 1 when `problems` is not empty.
//
// A problem is: a document the parser refuses; a diagnostic of severity error; any diagnostic
// about schemas or payloads, whatever its severity (an unknown `schemaFormat` only warns, and
// leaves the payload unreadable); a message without a payload, or whose schema format has no
// schema parser among the defaults; a message whose payload has
// other properties or required fields than the JSON Schema file it documents
// (schemas/{events,commands}/<message id>.schema.json); or such a file with no message.
import { readFileSync, readdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { Parser, fromFile } from '@asyncapi/parser';

const SEVERITY = ['error', 'warning', 'information', 'hint'];

const file = resolve(process.argv[2] ?? '../../schemas/asyncapi.yaml');
const schemasDir = dirname(file);
const parserVersion = JSON.parse(
  readFileSync(new URL('./node_modules/@asyncapi/parser/package.json', import.meta.url), 'utf8'),
).version;

const parser = new Parser();
const { document, diagnostics } = await fromFile(parser, file).parse();

const problems = [];
const report = {
  parser: parserVersion,
  file,
  asyncapi: document?.version() ?? null,
  diagnostics: diagnostics.map((d) => ({
    severity: SEVERITY[d.severity] ?? String(d.severity),
    code: d.code,
    message: d.message,
    path: d.path.join('.'),
  })),
  messages: [],
  problems,
};

for (const d of report.diagnostics) {
  if (d.severity === 'error' || /schema|payload/i.test(`${d.code} ${d.message} ${d.path}`)) {
    problems.push(`${d.severity} ${d.code} at ${d.path || '(root)'}: ${d.message}`);
  }
}
if (document === undefined) {
  problems.push('the parser returned no document');
}

// The JSON Schema files the payloads must match: message id -> parsed file.
const sources = new Map();
for (const dir of ['events', 'commands']) {
  for (const name of readdirSync(join(schemasDir, dir))) {
    if (name.endsWith('.schema.json')) {
      const json = JSON.parse(readFileSync(join(schemasDir, dir, name), 'utf8'));
      sources.set(name.slice(0, -'.schema.json'.length), { path: `${dir}/${name}`, json });
    }
  }
}

const sameSet = (a, b) => a.length === b.length && [...a].sort().join() === [...b].sort().join();

for (const message of document?.allMessages() ?? []) {
  const id = message.id();
  const payload = message.payload();
  const properties = payload ? Object.keys(payload.properties() ?? {}) : [];
  const required = payload?.required() ?? [];
  const source = sources.get(id);
  report.messages.push({
    id,
    schemaFormat: message.schemaFormat(),
    payload: payload !== undefined,
    properties,
    required,
    source: source?.path ?? null,
  });
  if (payload === undefined) {
    problems.push(`message ${id}: the parser gives no payload`);
    continue;
  }
  if (!parser.parserRegistry.has(message.schemaFormat())) {
    problems.push(`message ${id}: no schema parser for ${message.schemaFormat()}, payload left unparsed`);
  }
  if (source !== undefined) {
    sources.delete(id);
    const want = Object.keys(source.json.properties ?? {});
    if (!sameSet(properties, want)) {
      problems.push(
        `message ${id}: payload properties [${properties}] differ from ${source.path} [${want}]`,
      );
    }
    if (!sameSet(required, source.json.required ?? [])) {
      problems.push(
        `message ${id}: payload required [${required}] differ from ${source.path} [${source.json.required}]`,
      );
    }
  }
}
for (const [id, source] of sources) {
  problems.push(`${source.path}: no message ${id} with a readable payload documents it`);
}

console.log(JSON.stringify(report, null, 2));
process.exit(problems.length === 0 ? 0 : 1);
