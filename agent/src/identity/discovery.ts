// OpenID Connect discovery, reduced to what the agent needs: the issuer's jwks_uri.
//
// The JWKS location comes from configuration (the issuer URL an operator wrote down), never from a
// token. The discovery document must name exactly that issuer (OpenID Connect Discovery §4.3), so a
// misrouted or spoofed document cannot hand us someone else's keys.

/** Plain http is accepted only on loopback (the demo and the tests); anything else must be https. */
export function assertSafeUrl(raw: string, what: string): URL {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new TypeError(`${what} is not a valid URL: ${raw}`);
  }
  const loopback = ['127.0.0.1', 'localhost', '[::1]'].includes(url.hostname);
  if (url.protocol !== 'https:' && !(url.protocol === 'http:' && loopback)) {
    throw new TypeError(`${what} must use https (plain http only on loopback): ${raw}`);
  }
  if (url.username || url.password || url.hash) {
    throw new TypeError(`${what} must not carry credentials or a fragment: ${raw}`);
  }
  return url;
}

export interface DiscoveryOptions {
  timeoutMs?: number;
  maxBytes?: number;
}

/** Fetches `${issuer}/.well-known/openid-configuration` and returns its validated jwks_uri. */
export async function discoverJwksUri(issuer: string, opts: DiscoveryOptions = {}): Promise<URL> {
  const timeoutMs = opts.timeoutMs ?? 5_000;
  const maxBytes = opts.maxBytes ?? 256 * 1024;
  // §4: strip one trailing slash before appending the well-known path.
  const docUrl = `${issuer.replace(/\/$/, '')}/.well-known/openid-configuration`;
  const res = await fetch(docUrl, {
    headers: { accept: 'application/json' },
    // A redirect would let whoever controls the target choose our keys; the document must be where
    // the operator said.
    redirect: 'error',
    signal: AbortSignal.timeout(timeoutMs),
  });
  if (res.status !== 200) {
    await res.body?.cancel();
    throw new Error(`discovery document: HTTP ${res.status}`);
  }
  const doc = JSON.parse(await readLimited(res, maxBytes)) as unknown;
  if (typeof doc !== 'object' || doc === null) throw new Error('discovery document is not a JSON object');
  const { issuer: docIssuer, jwks_uri: jwksUri } = doc as Record<string, unknown>;
  if (docIssuer !== issuer) throw new Error('discovery document names a different issuer');
  if (typeof jwksUri !== 'string') throw new Error('discovery document has no jwks_uri');
  return assertSafeUrl(jwksUri, 'jwks_uri');
}

async function readLimited(res: Response, maxBytes: number): Promise<string> {
  if (!res.body) return '';
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of res.body) {
    size += chunk.byteLength;
    if (size > maxBytes) throw new Error('discovery document is too large');
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}
