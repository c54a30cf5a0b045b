// The request target sent upstream: the client's path and query in origin
// form, after upstream.url's own path. Paths are normalised the way the WHATWG
// URL parser does (dot segments, absolute form, characters it escapes), as
// http-proxy-3 did before us, so that the upstream routes what the sidecar's
// own checks saw; the common path that needs no change skips the parser.

/** Origin-form targets the URL parser would leave as they are. */
const PLAIN = /^\/(?!\/)[A-Za-z0-9\-_~!$&()*+,;=:@/?%]*$/;
const DOT_SEGMENT = /(^|\/)(\.|%2e)/i;

function normalise(url: string): string {
  if (url === '' || url.startsWith('?')) return url;
  const u = new URL(url.startsWith('//') ? `http://base.invalid${url}` : url, 'http://base.invalid');
  return `${u.pathname}${u.search}`;
}

/** Join the URL's base path and the request's (queries merged with `&`, one slash between). */
function join(base: string, path: string): string {
  const bq = base.indexOf('?');
  const pq = path.indexOf('?');
  const bp = bq === -1 ? base : base.slice(0, bq);
  const pp = pq === -1 ? path : path.slice(0, pq);
  const query = [bq === -1 ? '' : base.slice(bq + 1), pq === -1 ? '' : path.slice(pq + 1)].filter(Boolean).join('&');
  let joined = bp.endsWith('/') && pp.startsWith('/') ? bp + pp.slice(1) : bp + pp;
  if (!joined.startsWith('/')) joined = `/${joined}`;
  return query ? `${joined}?${query}` : joined;
}

/** The target for the upstream request line. `basePath` is upstream.url's path and query ('' for `/`). */
export function upstreamPath(url: string, basePath: string): string {
  const path = PLAIN.test(url) && !DOT_SEGMENT.test(url) ? url : normalise(url);
  return basePath ? join(basePath, path) : path || '/';
}
