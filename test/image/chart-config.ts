// Prints the sidecar config.yaml exactly as the Helm chart renders it (default values plus the
// given --set pairs), so test/image/run.sh can run the built image with the chart's own config,
// mount paths and ports. Usage: npx tsx test/image/chart-config.ts [key=value ...]
import { find, render } from '../deploy/helpers/render.js';

const set: Record<string, string> = {};
for (const arg of process.argv.slice(2)) {
  const i = arg.indexOf('=');
  if (i > 0) set[arg.slice(0, i)] = arg.slice(i + 1);
}
const ms = await render({ set });
const text = (find(ms, 'ConfigMap', '-config')['data'] as Record<string, string>)['config.yaml'];
if (text === undefined) throw new Error('the chart rendered no config.yaml');
process.stdout.write(text);
