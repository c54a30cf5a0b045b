// The sidecar's V8 flags (proxy/cli.ts, first line): every way the product
// starts must carry them. Why: socket-read Buffers (memory outside the JS
// heap) were freed by full mark-compacts every ~70 ms instead of by
// scavenges (measured on 1 MiB responses: 2.9 -> 1.5 CPU s/GiB); see
// proxy/upstream/external-memory.ts.
import t from 'tap';
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const read = (f: string): string => readFileSync(join(root, f), 'utf8');
const FLAG = '--max-semi-space-size=1 --expose-gc';

t.test('the bin runs node with the flag (env -S passes it on)', (t) => {
  const shebang = read('proxy/cli.ts').split('\n')[0];
  t.equal(shebang, `#!/usr/bin/env -S node ${FLAG}`);
  t.end();
});

t.test('npm start runs the built CLI with the flag', (t) => {
  const pkg = JSON.parse(read('package.json')) as { scripts: Record<string, string>; bin: Record<string, string> };
  t.match(pkg.scripts.start, new RegExp(`^node ${FLAG} dist/proxy/cli\\.js `));
  t.equal(pkg.bin['ktls-sidecar'], 'dist/proxy/cli.js');
  t.end();
});

t.test('the image starts the bin, so its shebang applies', (t) => {
  t.match(read('Dockerfile'), /^ENTRYPOINT \["ktls-sidecar"\]$/m);
  t.end();
});
