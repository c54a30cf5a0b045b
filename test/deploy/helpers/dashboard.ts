// The Grafana dashboard, as code. charts/ktls-sidecar/files/dashboard.json is this module's output;
// test/deploy/dashboard.test.ts fails when the two differ. Regenerate after editing:
//   npx tsx test/deploy/helpers/dashboard.ts > charts/ktls-sidecar/files/dashboard.json
// Metric names must exist in docs/metrics.md (also checked by the test).

import { pathToFileURL } from 'node:url';

const SEL = 'namespace=~"$namespace", pod=~"$pod"';
const M = 'ktls_sidecar_';
const RI = '$__rate_interval';

interface Target {
  expr: string;
  legendFormat: string;
  refId: string;
  format?: 'table' | 'time_series';
  instant?: boolean;
}

interface Panel {
  id: number;
  type: string;
  title: string;
  description?: string;
  gridPos: { h: number; w: number; x: number; y: number };
  datasource?: { type: string; uid: string };
  targets?: Target[];
  fieldConfig?: unknown;
  options?: unknown;
  collapsed?: boolean;
  panels?: Panel[];
  transformations?: unknown[];
}

/**
 * prom-client's default metrics have standard names an app in the same pod may export too:
 * keep the series of the targets that are a sidecar (they have ktls_sidecar_build_info).
 */
function sidecarOnly(expr: string): string {
  return `(${expr} and on (job, instance) ${M}build_info{${SEL}})`;
}

function targets(...exprs: [expr: string, legend: string][]): Target[] {
  return exprs.map(([expr, legendFormat], i) => ({ expr, legendFormat, refId: String.fromCharCode(65 + i) }));
}

/** Sum of both byte counters (sent + received), optionally filtered and grouped. */
function bytesRate(filter: string, by: string): string {
  const f = filter ? `${filter}, ` : '';
  const g = by ? ` by (${by})` : '';
  return (
    `sum${g}(rate(${M}bytes_sent_total{${f}${SEL}}[${RI}]))` +
    ` + sum${g}(rate(${M}bytes_received_total{${f}${SEL}}[${RI}]))`
  );
}

export function buildDashboard(): Record<string, unknown> {
  let nextId = 1;
  const ds = { type: 'prometheus', uid: '${datasource}' };
  const panels: Panel[] = [];
  let y = 0;

  const row = (title: string): void => {
    panels.push({ id: nextId++, type: 'row', title, collapsed: false, gridPos: { h: 1, w: 24, x: 0, y }, panels: [] });
    y += 1;
  };
  /** Panels of one row laid out left to right, equal height. */
  const line = (h: number, items: (Omit<Panel, 'id' | 'gridPos' | 'datasource'> & { w: number })[]): void => {
    let x = 0;
    for (const { w, ...p } of items) {
      panels.push({ id: nextId++, gridPos: { h, w, x, y }, datasource: ds, ...p });
      x += w;
    }
    y += h;
  };
  const percent = { defaults: { unit: 'percentunit', min: 0, max: 1 }, overrides: [] };
  const ts = (unit: string, extra: Record<string, unknown> = {}): unknown => ({
    defaults: { unit, custom: { drawStyle: 'line', fillOpacity: 10, showPoints: 'never', ...extra } },
    overrides: [],
  });
  const legendTable = { legend: { displayMode: 'table', placement: 'right', calcs: ['lastNotNull'] }, tooltip: { mode: 'multi' } };

  row('kTLS at a glance');
  line(5, [
    {
      w: 6,
      type: 'stat',
      title: 'Bytes via kTLS',
      description:
        'Share of application bytes (sent + received) whose record protection ran in the kernel: sent bytes on ktls="on" ' +
        'connections (kernel TX) plus received bytes on direction="txrx" connections (kernel RX).',
      targets: targets([
        `(sum(rate(${M}bytes_sent_total{ktls="on", ${SEL}}[${RI}])) + sum(rate(${M}bytes_received_total{direction="txrx", ${SEL}}[${RI}])))` +
          ` / (${bytesRate('', '')})`,
        'kTLS',
      ]),
      fieldConfig: percent,
      options: { reduceOptions: { calcs: ['lastNotNull'] }, graphMode: 'area' },
    },
    {
      w: 6,
      type: 'stat',
      title: 'Pods with the kTLS flag on',
      description: 'ktls_sidecar_ktls_enabled summed over pods (the runtime flag: PUT /ktls, config watch).',
      targets: targets(
        [`sum(${M}ktls_enabled{${SEL}})`, 'flag on'],
        [`count(${M}ktls_enabled{${SEL}})`, 'pods'],
      ),
      options: { reduceOptions: { calcs: ['lastNotNull'] }, graphMode: 'none' },
    },
    {
      w: 6,
      type: 'stat',
      title: 'Pods where the kernel can do kTLS',
      description:
        'ktls_kernel_available: the kernel took at least one cipher at startup and the native addon is usable; ' +
        'native_available: the addon loaded; kernel_rekey_supported: TLS 1.3 KeyUpdate in the kernel (Linux >= 6.14).',
      targets: targets(
        [`sum(${M}ktls_kernel_available{${SEL}})`, 'kTLS usable'],
        [`sum(${M}native_available{${SEL}})`, 'addon loaded'],
        [`sum(${M}kernel_rekey_supported{${SEL}})`, 'rekey'],
        [`count(${M}ktls_kernel_available{${SEL}})`, 'pods'],
      ),
      options: { reduceOptions: { calcs: ['lastNotNull'] }, graphMode: 'none' },
    },
    {
      w: 6,
      type: 'stat',
      title: 'Open connections',
      targets: targets([`sum by (ktls) (${M}connections_active{${SEL}})`, 'ktls={{ktls}}']),
      options: { reduceOptions: { calcs: ['lastNotNull'] }, graphMode: 'area' },
    },
  ]);

  row('Activation');
  line(8, [
    {
      w: 12,
      type: 'timeseries',
      title: 'Bytes via kTLS (%) by byte direction',
      targets: targets(
        [
          `sum(rate(${M}bytes_sent_total{ktls="on", ${SEL}}[${RI}])) / sum(rate(${M}bytes_sent_total{${SEL}}[${RI}]))`,
          'sent (kernel TX)',
        ],
        [
          `sum(rate(${M}bytes_received_total{direction="txrx", ${SEL}}[${RI}])) / sum(rate(${M}bytes_received_total{${SEL}}[${RI}]))`,
          'received (kernel RX)',
        ],
      ),
      fieldConfig: { ...percent, defaults: { ...percent.defaults, custom: { showPoints: 'never' } } },
    },
    {
      w: 12,
      type: 'timeseries',
      title: 'kTLS activation ratio by protocol / cipher',
      description: 'New connections on kTLS divided by all new connections, per application protocol and cipher.',
      targets: targets([
        `sum by (protocol, cipher) (rate(${M}connections_opened_total{ktls="on", ${SEL}}[${RI}]))` +
          ` / sum by (protocol, cipher) (rate(${M}connections_opened_total{${SEL}}[${RI}]))`,
        '{{protocol}} {{cipher}}',
      ]),
      fieldConfig: { ...percent, defaults: { ...percent.defaults, custom: { showPoints: 'never' } } },
      options: legendTable,
    },
  ]);
  line(8, [
    {
      w: 8,
      type: 'timeseries',
      title: 'kTLS activation ratio by TLS version',
      targets: targets([
        `sum by (tls_version) (rate(${M}connections_opened_total{ktls="on", ${SEL}}[${RI}]))` +
          ` / sum by (tls_version) (rate(${M}connections_opened_total{${SEL}}[${RI}]))`,
        '{{tls_version}}',
      ]),
      fieldConfig: { ...percent, defaults: { ...percent.defaults, custom: { showPoints: 'never' } } },
    },
    {
      w: 8,
      type: 'timeseries',
      title: 'Connections by kTLS reason',
      description: 'Why connections are (reason "enabled") or are not on kernel TLS.',
      targets: targets([`sum by (ktls_reason) (rate(${M}connections_opened_total{${SEL}}[${RI}]))`, '{{ktls_reason}}']),
      fieldConfig: ts('cps', { stacking: { mode: 'normal' } }),
      options: legendTable,
    },
    {
      w: 8,
      type: 'timeseries',
      title: 'Connections by kernel direction',
      targets: targets([`sum by (direction) (rate(${M}connections_opened_total{${SEL}}[${RI}]))`, '{{direction}}']),
      fieldConfig: ts('cps', { stacking: { mode: 'normal' } }),
    },
  ]);

  row('Errors');
  line(8, [
    {
      w: 8,
      type: 'timeseries',
      title: 'kTLS errors by stage / errno',
      description:
        'Failed kTLS syscalls by stage (ulp, install_tx/rx, rekey_tx/rx, option, recv, read, write, send_control, poll) ' +
        'and errno, plus records that failed authentication (stage decrypt). EAGAIN is not counted.',
      targets: targets([`sum by (stage, errno) (rate(${M}ktls_errors_total{${SEL}}[${RI}]))`, '{{stage}} {{errno}}']),
      fieldConfig: ts('ops'),
      options: legendTable,
    },
    {
      w: 8,
      type: 'timeseries',
      title: 'Handshake failures and rejected connections',
      targets: targets(
        [`sum by (reason) (rate(${M}handshake_failures_total{${SEL}}[${RI}]))`, 'handshake: {{reason}}'],
        [`sum by (reason) (rate(${M}connections_rejected_total{${SEL}}[${RI}]))`, 'rejected: {{reason}}'],
      ),
      fieldConfig: ts('ops'),
      options: legendTable,
    },
    {
      w: 8,
      type: 'timeseries',
      title: 'KeyUpdates, drains and upstream errors',
      targets: targets(
        [`sum by (direction, result) (rate(${M}ktls_key_updates_total{${SEL}}[${RI}]))`, 'key update {{direction}} {{result}}'],
        [`sum by (action) (rate(${M}ktls_drained_connections_total{${SEL}}[${RI}]))`, 'drain {{action}}'],
        [`sum by (reason) (rate(${M}upstream_errors_total{${SEL}}[${RI}]))`, 'upstream: {{reason}}'],
      ),
      fieldConfig: ts('ops'),
      options: legendTable,
    },
  ]);

  row('Kernel');
  line(8, [
    {
      w: 8,
      type: 'timeseries',
      title: 'Kernel TLS counters (/proc/net/tls_stat) per second',
      description:
        'Per-second change of the /proc/net/tls_stat counters (kernel_tls_stat_total: TlsTxSw, TlsRxSw, TlsTxDevice, TlsDecryptError, TlsRxRekeyOk, ...). ' +
        'The counters are per network namespace, so each pod reports its own (the sidecar and the app share one).',
      targets: targets([`sum by (stat) (rate(${M}kernel_tls_stat_total{${SEL}}[${RI}]))`, '{{stat}}']),
      fieldConfig: ts('ops'),
      options: legendTable,
    },
    {
      w: 5,
      type: 'timeseries',
      title: 'kTLS sockets open now (TlsCurr*)',
      description: 'kernel_tls_sockets: the TlsCurr* rows of /proc/net/tls_stat, kTLS sockets open in the pod now.',
      targets: targets([`sum by (stat) (${M}kernel_tls_sockets{${SEL}})`, '{{stat}}']),
      fieldConfig: ts('short'),
    },
    {
      w: 5,
      type: 'timeseries',
      title: 'Offload: attempted vs installed',
      description: 'kTLS installs per connection direction; offload sw = kernel crypto, device = the NIC took it.',
      targets: targets(
        [`sum by (direction, offload, result) (rate(${M}ktls_offload_total{${SEL}}[${RI}]))`, '{{direction}} {{offload}} {{result}}'],
        [
          `sum by (direction) (rate(${M}ktls_offload_total{result="failed", ${SEL}}[${RI}]))` +
            ` / sum by (direction) (rate(${M}ktls_offload_total{result="attempted", ${SEL}}[${RI}]))`,
          'failed ratio {{direction}}',
        ],
      ),
      fieldConfig: ts('ops'),
    },
    {
      w: 6,
      type: 'table',
      title: 'Kernel cipher support',
      targets: [
        {
          expr: `max by (cipher, version, direction) (${M}kernel_cipher_supported{${SEL}})`,
          legendFormat: '',
          refId: 'A',
          format: 'table',
          instant: true,
        },
      ],
      transformations: [{ id: 'organize', options: { excludeByName: { Time: true } } }],
    },
  ]);

  row('Cost and latency');
  line(8, [
    {
      w: 8,
      type: 'timeseries',
      title: 'CPU per byte by mode (CPU seconds per GiB)',
      description:
        'Process CPU attributed to kTLS (on) and userspace-TLS (off) connections per GiB of plaintext they moved ' +
        '(process_cpu_seconds_by_mode_total; docs/ktls.md section 6). Lower is better; the gap is what kTLS saves.',
      targets: targets([
        `sum by (ktls) (rate(${M}process_cpu_seconds_by_mode_total{ktls!="none", ${SEL}}[${RI}]))` +
          ` / ((sum by (ktls) (rate(${M}bytes_sent_total{${SEL}}[${RI}])) + sum by (ktls) (rate(${M}bytes_received_total{${SEL}}[${RI}]))) / 2^30)`,
        'ktls={{ktls}}',
      ]),
      fieldConfig: ts('s'),
    },
    {
      w: 8,
      type: 'timeseries',
      title: 'Handshake rate',
      targets: targets(
        [`sum by (tls_version) (rate(${M}handshakes_total{${SEL}}[${RI}]))`, '{{tls_version}}'],
        [`sum(rate(${M}handshake_failures_total{${SEL}}[${RI}]))`, 'failed'],
      ),
      fieldConfig: ts('ops'),
    },
    {
      w: 8,
      type: 'timeseries',
      title: 'Handshake duration',
      targets: targets(
        [`histogram_quantile(0.5, sum by (le) (rate(${M}handshake_duration_seconds_bucket{${SEL}}[${RI}])))`, 'p50'],
        [`histogram_quantile(0.99, sum by (le) (rate(${M}handshake_duration_seconds_bucket{${SEL}}[${RI}])))`, 'p99'],
      ),
      fieldConfig: ts('s'),
    },
  ]);
  line(8, [
    {
      w: 12,
      type: 'timeseries',
      title: 'Request latency by kTLS',
      targets: targets(
        [`histogram_quantile(0.5, sum by (le, ktls) (rate(${M}http_request_duration_seconds_bucket{${SEL}}[${RI}])))`, 'p50 ktls={{ktls}}'],
        [`histogram_quantile(0.95, sum by (le, ktls) (rate(${M}http_request_duration_seconds_bucket{${SEL}}[${RI}])))`, 'p95 ktls={{ktls}}'],
        [`histogram_quantile(0.99, sum by (le, ktls) (rate(${M}http_request_duration_seconds_bucket{${SEL}}[${RI}])))`, 'p99 ktls={{ktls}}'],
      ),
      fieldConfig: ts('s'),
      options: legendTable,
    },
    {
      w: 12,
      type: 'timeseries',
      title: '5xx ratio by kTLS (canary comparison)',
      targets: targets([
        `sum by (ktls) (rate(${M}http_requests_total{status_class="5xx", ${SEL}}[${RI}]))` +
          ` / sum by (ktls) (rate(${M}http_requests_total{${SEL}}[${RI}]))`,
        'ktls={{ktls}}',
      ]),
      fieldConfig: { ...percent, defaults: { ...percent.defaults, custom: { showPoints: 'never' } } },
    },
  ]);
  line(8, [
    {
      w: 24,
      type: 'timeseries',
      title: 'Requests by protocol / status class',
      targets: targets([
        `sum by (protocol, status_class) (rate(${M}http_requests_total{${SEL}}[${RI}]))`,
        '{{protocol}} {{status_class}}',
      ]),
      fieldConfig: ts('reqps', { stacking: { mode: 'normal' } }),
      options: legendTable,
    },
  ]);

  row('Sidecar process');
  line(8, [
    {
      w: 6,
      type: 'stat',
      title: 'Certificate expiry',
      description:
        'Time left until each served certificate expires (cert_expiry_timestamp_seconds, the earliest over the pods; ' +
        'servername "*" is tls.cert). Orange under 14 days, red under 3: the thresholds of the shipped alerts.',
      targets: targets([`min by (servername, subject) (${M}cert_expiry_timestamp_seconds{${SEL}}) - time()`, '{{servername}} {{subject}}']),
      fieldConfig: {
        defaults: {
          unit: 'dtdurations',
          thresholds: {
            mode: 'absolute',
            steps: [
              { color: 'red', value: null },
              { color: 'orange', value: 3 * 86400 },
              { color: 'green', value: 14 * 86400 },
            ],
          },
        },
        overrides: [],
      },
      options: { reduceOptions: { calcs: ['lastNotNull'] }, graphMode: 'none', colorMode: 'background' },
    },
    {
      w: 6,
      type: 'timeseries',
      title: 'Event-loop delay p99 by pod',
      description:
        'nodejs_eventloop_lag_p99_seconds: how late the event loop ran timers since the previous scrape (with workers: N, ' +
        'the slowest process). Every connection the process serves waits this long; the alert fires above 100 ms for 10 minutes.',
      targets: targets([`max by (pod) ${sidecarOnly(`nodejs_eventloop_lag_p99_seconds{${SEL}}`)}`, '{{pod}}']),
      fieldConfig: ts('s'),
      options: legendTable,
    },
    {
      w: 6,
      type: 'timeseries',
      title: 'CPU: total and by kTLS mode',
      description:
        'process_cpu_seconds_total of the sidecar (cores), and its split between kTLS (on), userspace-TLS (off) connections ' +
        'and idle work (none) from process_cpu_seconds_by_mode_total (docs/ktls.md section 6; with workers: N the split ' +
        'leaves out the primary).',
      targets: targets(
        [`sum ${sidecarOnly(`rate(process_cpu_seconds_total{${SEL}}[${RI}])`)}`, 'total'],
        [`sum by (ktls) (rate(${M}process_cpu_seconds_by_mode_total{${SEL}}[${RI}]))`, 'ktls={{ktls}}'],
      ),
      fieldConfig: ts('short'),
    },
    {
      w: 6,
      type: 'timeseries',
      title: 'Resident memory (RSS) by pod',
      description:
        'process_resident_memory_bytes of the sidecar (with workers: N, the sum over its processes); compare with the ' +
        "container's memory limit.",
      targets: targets([`sum by (pod) ${sidecarOnly(`process_resident_memory_bytes{${SEL}}`)}`, '{{pod}}']),
      fieldConfig: ts('bytes'),
      options: legendTable,
    },
  ]);

  return {
    title: 'ktls-sidecar',
    uid: 'ktls-sidecar',
    description: 'Kernel TLS activation, errors, kernel counters, cost and latency, certificates and the process of the ktls-sidecar.',
    tags: ['ktls', 'tls', 'sidecar'],
    editable: true,
    schemaVersion: 39,
    version: 1,
    refresh: '30s',
    time: { from: 'now-6h', to: 'now' },
    timezone: 'browser',
    graphTooltip: 1,
    annotations: {
      list: [
        {
          name: 'kTLS flag changes',
          datasource: ds,
          enable: true,
          iconColor: 'orange',
          expr: `sum(changes(${M}ktls_flag_changes_total{${SEL}}[2m])) > 0`,
          titleFormat: 'kTLS flag changed',
        },
      ],
    },
    templating: {
      list: [
        { name: 'datasource', label: 'Data source', type: 'datasource', query: 'prometheus', current: {}, hide: 0 },
        {
          name: 'namespace',
          label: 'Namespace',
          type: 'query',
          datasource: ds,
          query: { query: `label_values(${M}build_info, namespace)`, refId: 'namespace' },
          definition: `label_values(${M}build_info, namespace)`,
          refresh: 2,
          includeAll: true,
          multi: true,
          allValue: '.*',
          current: {},
        },
        {
          name: 'pod',
          label: 'Pod',
          type: 'query',
          datasource: ds,
          query: { query: `label_values(${M}build_info{namespace=~"$namespace"}, pod)`, refId: 'pod' },
          definition: `label_values(${M}build_info{namespace=~"$namespace"}, pod)`,
          refresh: 2,
          includeAll: true,
          multi: true,
          allValue: '.*',
          current: {},
        },
      ],
    },
    panels,
  };
}

// Run directly: print the JSON (see the header for the command).
if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  process.stdout.write(JSON.stringify(buildDashboard(), null, 2) + '\n');
}
