// config/default.yaml and the key table of docs/config.md, rendered from the
// schema so they cannot drift (test/unit/config-defaults.test.ts compares).
// After changing the schema, regenerate both with:
//   node --import tsx proxy/config/reference.ts

import { readFileSync, realpathSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { schemaKeys } from './schema.js';

function wrapComment(text: string, indent: string, width = 100): string[] {
  const lines: string[] = [];
  let cur = '';
  for (const word of text.split(' ')) {
    if (cur !== '' && `${cur} ${word}`.length > width - indent.length - 2) {
      lines.push(cur);
      cur = word;
    } else cur = cur === '' ? word : `${cur} ${word}`;
  }
  if (cur !== '') lines.push(cur);
  return lines.map((l) => `${indent}# ${l}`);
}

/** config/default.yaml: every key, its default, a comment with its meaning, env name and flag. */
export function renderDefaultYaml(): string {
  const out = [
    '# ktls-sidecar: every configuration key with its default value.',
    '# Generated from proxy/config/schema.ts (node --import tsx proxy/config/reference.ts);',
    '# test/unit/config-defaults.test.ts fails if the two differ.',
    '# Precedence: these defaults < --config FILE < KTLS_SIDECAR_* env < CLI flags (see docs/config.md).',
    '# Durations: 30s, 500ms, 2m, 1h or a number of milliseconds. Sizes: bytes, 16KiB, 1MiB.',
  ];
  let section = '';
  for (const k of schemaKeys()) {
    const parts = k.key.split('.');
    const name = parts[parts.length - 1] ?? k.key;
    const nested = parts.length > 1;
    if (!nested) {
      section = '';
      out.push('');
    } else if (parts[0] !== section) {
      section = parts[0] ?? '';
      out.push('', `${section}:`);
    }
    const indent = nested ? '  ' : '';
    out.push(...wrapComment(`${k.leaf.doc} [env ${k.env}, flag ${k.flag}]`, indent));
    let value = stringify({ [name]: k.leaf.default }, { lineWidth: 0 }).trimEnd();
    // YAML 1.1 readers (Helm, Go tooling) take a bare off as false: quote it.
    value = value.replace(/: off$/, ': "off"');
    out.push(...value.split('\n').map((l) => indent + l));
  }
  return out.join('\n') + '\n';
}

function cell(v: unknown): string {
  if (Array.isArray(v)) return v.length === 0 ? '`[]`' : v.map((x) => `\`${String(x)}\``).join('<br>');
  if (v === '') return '*(empty)*';
  return `\`${String(v)}\``;
}

/** The "every key" table of docs/config.md. */
export function renderConfigTable(): string {
  const rows = ['| key | default | env | flag | meaning |', '|---|---|---|---|---|'];
  for (const k of schemaKeys()) {
    const colonList = (k.key === 'tls.ciphers' || k.key === 'tls.ciphersuites') && typeof k.leaf.default === 'string';
    const def = colonList ? cell(String(k.leaf.default).split(':')) : cell(k.leaf.default);
    const oneOf = Array.isArray(k.leaf.format) ? ` One of: ${k.leaf.format.map((x) => `\`${String(x)}\``).join(', ')}.` : '';
    rows.push(`| \`${k.key}\` | ${def} | \`${k.env}\` | \`${k.flag}\` | ${k.leaf.doc}${oneOf} |`);
  }
  return rows.join('\n') + '\n';
}

export const TABLE_START = '<!-- config-table:start (generated: node --import tsx proxy/config/reference.ts) -->';
export const TABLE_END = '<!-- config-table:end -->';

/** Replace the marked table in the text of docs/config.md (or README.md, which carries the same table). */
export function withConfigTable(doc: string): string {
  const a = doc.indexOf(TABLE_START);
  const b = doc.indexOf(TABLE_END);
  if (a < 0 || b < a) throw new Error('the document lacks the config-table markers');
  return doc.slice(0, a + TABLE_START.length) + '\n' + renderConfigTable() + doc.slice(b);
}

function main(): void {
  const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
  writeFileSync(join(root, 'config/default.yaml'), renderDefaultYaml());
  for (const doc of ['docs/config.md', 'README.md']) {
    const docPath = join(root, doc);
    writeFileSync(docPath, withConfigTable(readFileSync(docPath, 'utf8')));
  }
}

const invokedAs = process.argv[1] ? realpathSync(process.argv[1]) : '';
if (invokedAs === fileURLToPath(import.meta.url)) main();
