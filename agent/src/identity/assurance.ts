// How strongly a person proved who they are (issue 16, "Assurance for people"). The token says it in two
// claims (OpenID Connect Core §2): `amr`, the list of methods used (pwd, otp, mfa, hwk…), and `acr`, one
// level from the issuer's own vocabulary. An operator requires them per issuer (every token), per access
// rule and per connection's approvers:
//   amr: [mfa, hwk]   any one of these methods must be in the token's list
//   acr: urn:…:mfa    the token's acr must be this one or stronger on the issuer's `acrValues`
//                     (listed weakest to strongest); an acr the issuer does not list is never enough
// A token that says nothing meets no requirement: a device-flow token with only a password is refused
// wherever MFA is asked for.
import type { Assurance } from '../../../shared/config/schema.js';

export type AssuranceRequirement = Assurance;

/** What a verified token shows, with the ordering of its issuer's acr values. */
export interface TokenAssurance {
  amr: string[];
  acr?: string;
  /** The issuer's acr values, weakest first (config `acrValues`). */
  acrValues?: readonly string[];
}

export function assuranceOf(claims: Record<string, unknown>, acrValues?: readonly string[]): TokenAssurance {
  const amr = Array.isArray(claims.amr) ? claims.amr.filter((m): m is string => typeof m === 'string') : [];
  return { amr, acr: typeof claims.acr === 'string' ? claims.acr : undefined, acrValues };
}

/** Why `shown` falls short of `req`, or undefined when it meets it. */
export function assuranceShortfall(req: AssuranceRequirement, shown: TokenAssurance | undefined): string | undefined {
  const amr = shown?.amr ?? [];
  if (req.amr && !req.amr.some((m) => amr.includes(m))) {
    return `it shows authentication methods [${amr.join(', ') || 'none'}] and one of [${req.amr.join(', ')}] is required`;
  }
  if (req.acr !== undefined) {
    const order = shown?.acrValues ?? [];
    const have = shown?.acr === undefined ? -1 : order.indexOf(shown.acr);
    const need = order.indexOf(req.acr);
    // Without the issuer's ordering only the exact value is known to be enough.
    const enough = need < 0 ? shown?.acr === req.acr : have >= need;
    if (!enough) return `its assurance level (acr) is ${shown?.acr ?? 'absent'} and at least ${req.acr} is required`;
  }
  return undefined;
}

export const meetsAssurance = (req: AssuranceRequirement | undefined, shown: TokenAssurance | undefined): boolean =>
  req === undefined || assuranceShortfall(req, shown) === undefined;
