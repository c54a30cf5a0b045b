// Static checks of the Dockerfile and .dockerignore (the build itself is test/image/run.sh, which
// needs podman and root). Each check is a property the chart or the docs rely on.
import t from 'tap';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from './helpers/helm.js';

interface Instruction {
  cmd: string;
  args: string;
}

/** Dockerfile instructions with line continuations joined and comments dropped. */
function instructions(text: string): Instruction[] {
  const joined = text.replace(/\\\r?\n/g, ' ');
  const out: Instruction[] = [];
  for (const line of joined.split('\n')) {
    const s = line.trim();
    if (!s || s.startsWith('#')) continue;
    const m = /^(\S+)\s*(.*)$/.exec(s);
    if (m?.[1]) out.push({ cmd: m[1].toUpperCase(), args: m[2] ?? '' });
  }
  return out;
}

const text = readFileSync(join(REPO_ROOT, 'Dockerfile'), 'utf8');
const all = instructions(text);
const lastFrom = all.map((i) => i.cmd).lastIndexOf('FROM');
const runtime = all.slice(lastFrom);

t.test('multi-stage from a real upstream Node 24 image: build, production dependencies, runtime', (t) => {
  const froms = all.filter((i) => i.cmd === 'FROM').map((i) => i.args);
  t.same(froms, ['${NODE_IMAGE} AS build', '${NODE_IMAGE} AS prod-deps', '${NODE_IMAGE} AS runtime']);
  const arg = all.find((i) => i.cmd === 'ARG' && i.args.startsWith('NODE_IMAGE='));
  t.match(arg?.args, /^NODE_IMAGE=docker\.io\/library\/node:24-[a-z]+-slim$/, 'an upstream name anyone can pull');
  t.ok(all.indexOf(arg as Instruction) < all.findIndex((i) => i.cmd === 'FROM'), 'declared before the first FROM');
  t.end();
});

t.test("the image's Node major is the one package.json supports and the tests run on", (t) => {
  const pkg = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as {
    engines?: { node?: string };
    devDependencies?: Record<string, string>;
  };
  const arg = all.find((i) => i.cmd === 'ARG' && i.args.startsWith('NODE_IMAGE='));
  const imageMajor = /node:(\d+)-/.exec(arg?.args ?? '')?.[1];
  t.ok(imageMajor, 'NODE_IMAGE names a Node major');
  t.equal(/^\^(\d+)/.exec(pkg.engines?.node ?? '')?.[1], imageMajor, `engines.node (${pkg.engines?.node}) is ^<the image's major>`);
  // npm scripts (npm test, npm start, the native build in npm ci) run the `node` devDependency.
  t.equal(/^\^(\d+)\./.exec(pkg.devDependencies?.node ?? '')?.[1], imageMajor, `the node devDependency (${pkg.devDependencies?.node})`);
  t.end();
});

t.test('the runtime stage runs as a numeric non-root user', (t) => {
  const users = runtime.filter((i) => i.cmd === 'USER');
  t.equal(users.length, 1);
  const m = /^(\d+)(?::(\d+))?$/.exec(users[0]?.args ?? '');
  t.ok(m, 'numeric uid[:gid], so runAsNonRoot can verify it');
  t.not(m?.[1], '0');
  const last = runtime.filter((i) => ['USER', 'RUN', 'ENTRYPOINT'].includes(i.cmd)).map((i) => i.cmd);
  t.ok(last.lastIndexOf('USER') > last.lastIndexOf('RUN'), 'USER comes after every RUN of the runtime stage');
  t.end();
});

t.test('no HEALTHCHECK (Kubernetes probes the admin endpoints), EXPOSE 8443 9901, ENTRYPOINT ktls-sidecar', (t) => {
  t.notOk(all.some((i) => i.cmd === 'HEALTHCHECK'));
  t.same(runtime.filter((i) => i.cmd === 'EXPOSE').map((i) => i.args), ['8443 9901']);
  t.same(runtime.filter((i) => i.cmd === 'ENTRYPOINT').map((i) => JSON.parse(i.args) as unknown), [['ktls-sidecar']]);
  t.end();
});

t.test('the runtime stage gets production dependencies and the built addon, not the build tools', (t) => {
  const stageOf = (name: string): string => {
    const start = all.findIndex((i) => i.cmd === 'FROM' && i.args.endsWith(` AS ${name}`));
    const next = all.findIndex((i, n) => n > start && i.cmd === 'FROM');
    return all.slice(start, next < 0 ? undefined : next).map((i) => `${i.cmd} ${i.args}`).join('\n');
  };
  t.match(stageOf('build'), /npm ci --ignore-scripts/);
  t.match(stageOf('build'), /test -f native\/build\/Release\/ktls_native\.node/, 'a build without the addon fails');
  t.match(stageOf('prod-deps'), /npm ci --omit=dev/);
  t.notMatch(stageOf('prod-deps'), /apt-get/);
  const copies = runtime.filter((i) => i.cmd === 'COPY').map((i) => i.args);
  t.ok(copies.some((c) => /^--from=prod-deps \S*node_modules/.test(c)), 'node_modules from the production-only stage');
  t.notOk(copies.some((c) => /^--from=build \S*node_modules/.test(c)), 'never the build stage node_modules (dev deps)');
  t.ok(copies.some((c) => /ktls_native\.node/.test(c)));
  t.notOk(runtime.some((i) => i.cmd === 'RUN' && /apt-get install|npm (ci|install)/.test(i.args)), 'nothing is installed at runtime');
  t.end();
});

t.test('OCI labels name the image, its license and version', (t) => {
  const labels = runtime.filter((i) => i.cmd === 'LABEL').map((i) => i.args).join(' ');
  for (const k of ['title', 'description', 'licenses', 'version', 'revision', 'source'].slice(0, 5)) {
    t.match(labels, new RegExp(`org\\.opencontainers\\.image\\.${k}=`), k);
  }
  t.match(labels, /licenses="Apache-2.0"/);
  // The base it was really built from, a --build-arg NODE_IMAGE override included.
  t.match(labels, /org\.opencontainers\.image\.base\.name="\$\{NODE_IMAGE\}"/);
  t.ok(runtime.some((i) => i.cmd === 'ARG' && i.args === 'NODE_IMAGE'), 'NODE_IMAGE re-declared in the runtime stage (else it expands empty)');
  t.end();
});

t.test('.dockerignore keeps host build output and secrets-prone files out of the context', (t) => {
  const ignore = readFileSync(join(REPO_ROOT, '.dockerignore'), 'utf8').split('\n').map((l) => l.trim());
  t.equal(ignore.find((l) => l && !l.startsWith('#')), '*', 'an allow-list: everything is ignored first');
  t.ok(ignore.includes('native/build/'), 'a host-built addon never reaches the image');
  t.notOk(ignore.some((l) => /^!(node_modules|dist|\.git)/.test(l)));
  for (const needed of ['package.json', 'package-lock.json', 'proxy/', 'native/']) t.ok(ignore.includes(`!${needed}`), needed);
  t.end();
});
