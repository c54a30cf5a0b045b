// The value formats: durations, sizes, host:port, booleans.
import t from 'tap';
import { parseBoolean, parseDuration, parseHostPort, parseSize } from '../../proxy/config/formats.js';

t.test('durations become milliseconds', (t) => {
  const cases: [unknown, number][] = [
    ['30s', 30_000],
    ['500ms', 500],
    ['2m', 120_000],
    ['1h', 3_600_000],
    ['1.5s', 1500],
    ['1500', 1500],
    [' 10s ', 10_000],
    ['0', 0],
    [250, 250],
    [0, 0],
  ];
  for (const [input, ms] of cases) t.equal(parseDuration(input), ms, JSON.stringify(input));
  t.end();
});

t.test('bad durations are refused', (t) => {
  for (const input of ['', 's', '10 days', '-1s', '1d', '5 m s', 'ten', -5, Number.NaN, Infinity, null, true]) {
    t.equal(parseDuration(input), undefined, JSON.stringify(input));
  }
  t.end();
});

t.test('sizes become bytes', (t) => {
  const cases: [unknown, number][] = [
    ['16384', 16384],
    ['16KiB', 16384],
    ['1MiB', 1048576],
    ['1mib', 1048576],
    ['1MB', 1_000_000],
    ['2 GiB', 2 * 1024 ** 3],
    [4096, 4096],
  ];
  for (const [input, n] of cases) t.equal(parseSize(input), n, JSON.stringify(input));
  for (const input of ['1.5MiB', '1XB', '', -1, 1.5]) t.equal(parseSize(input), undefined, JSON.stringify(input));
  t.end();
});

t.test('host:port, including [ipv6]:port', (t) => {
  t.same(parseHostPort('127.0.0.1:8080'), { host: '127.0.0.1', port: 8080 });
  t.same(parseHostPort('db.internal:5432'), { host: 'db.internal', port: 5432 });
  t.same(parseHostPort('[::1]:443'), { host: '::1', port: 443 });
  for (const bad of ['127.0.0.1', ':80', 'h:0', 'h:65536', '::1:443', 'h:80x', 'a b:80']) t.equal(parseHostPort(bad), undefined, bad);
  t.end();
});

t.test('booleans: only the listed spellings', (t) => {
  for (const v of ['true', 'TRUE', '1', 'yes', 'on', true]) t.equal(parseBoolean(v), true, String(v));
  for (const v of ['false', '0', 'no', 'off', 'Off', false]) t.equal(parseBoolean(v), false, String(v));
  for (const v of ['', 'y', 'enabled', '2', 1]) t.equal(parseBoolean(v), undefined, String(v));
  t.end();
});
