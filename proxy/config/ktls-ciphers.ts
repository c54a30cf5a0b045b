// The suites `ktls.ciphers` may name. The table lives with the kTLS policy
// (proxy/ktls/cipher-policy.ts) so the config check and the per-connection
// decision can never disagree about a name; this module only re-exports it
// under the config package's names.

export {
  OFFLOADABLE_SUITES as KTLS_SUITES,
  findOffloadableSuite as findKtlsSuite,
  DEFAULT_KTLS_CIPHERS,
  parseCipherPolicy,
} from '../ktls/cipher-policy.js';
export type { OffloadableSuite as KtlsSuite } from '../ktls/cipher-policy.js';
