// The chain verifier lives in shared/audit (the CLI and evidence bundles use it too).
export { verifyChain, type VerifyOptions, type VerifyResult } from '../../../shared/audit/verify.js';
