// The config and wire edges of issue 16's identity items: assurance requirements validated at load (an
// acr minimum needs the issuer's ordering), the assurance rules themselves, and the RENEW frame's schema.
import { describe, expect, it } from 'vitest';
import { resolveConfig, ConfigError } from '../../../agent/src/config.js';
import { assuranceShortfall } from '../../../agent/src/identity/assurance.js';
import { canUse, type Principal } from '../../../agent/src/identity/access.js';
import { FrameType, RenewPayload, decodeFrame, decodeJson, encodeJson, FrameError } from '../../../shared/tunnel/frame.js';

const ISSUER = 'https://login.example.com';
const ACR = ['urn:acr:pwd', 'urn:acr:mfa', 'urn:acr:phr'];

function config(over: { issuer?: Record<string, unknown>; access?: unknown[]; approvers?: Record<string, unknown> } = {}) {
  return {
    identity: { issuers: [{ issuer: ISSUER, audience: 'hoop-agent', acrValues: ACR, ...over.issuer }] },
    connections: {
      db: {
        postgres: { host: 'db', database: 'd', user: 'u', passwordEnv: 'PW' },
        access: over.access ?? [{ groups: ['eng'] }],
        approval: { approvers: { groups: ['ops'], ...over.approvers } },
      },
    },
  };
}

async function problems(raw: unknown): Promise<string[]> {
  return resolveConfig(raw, { PW: 'x' }).then(() => [], (err: unknown) => (err instanceof ConfigError ? err.problems : Promise.reject(err)));
}

const who = (claims: Record<string, unknown>, groups = ['eng']): Principal => ({
  sub: 'u-1',
  issuer: ISSUER,
  groups,
  claims,
  assurance: { amr: Array.isArray(claims.amr) ? (claims.amr as string[]) : [], acr: claims.acr as string | undefined, acrValues: ACR },
});

describe('config', () => {
  it.each([
    { desc: 'an issuer acr minimum outside its acrValues', raw: config({ issuer: { require: { acr: 'urn:acr:gold' } } }), want: /identity\.issuers\.0\.require\.acr: require\.acr must be one of this issuer's acrValues/ },
    { desc: 'an access rule acr no issuer lists', raw: config({ access: [{ groups: ['eng'], require: { acr: 'urn:acr:gold' } }] }), want: /connections\.db\.access\.0\.require\.acr: urn:acr:gold is in no issuer's acrValues/ },
    { desc: 'an approvers acr no issuer lists', raw: config({ approvers: { require: { acr: 'urn:acr:gold' } } }), want: /connections\.db\.approval\.approvers\.require\.acr/ },
    { desc: 'an empty require', raw: config({ access: [{ groups: ['eng'], require: {} }] }), want: /require needs amr, acr or both/ },
  ])('refuses $desc, naming the field', async ({ raw, want }) => {
    expect((await problems(raw)).join('\n')).toMatch(want);
  });

  it('accepts requirements on issuers, access rules and approvers; requireReason defaults to false', async () => {
    const c = await resolveConfig(
      config({ issuer: { require: { amr: ['mfa', 'hwk'] } }, access: [{ groups: ['eng'], require: { acr: 'urn:acr:mfa' } }], approvers: { require: { amr: ['mfa'] } } }),
      { PW: 'x' },
    );
    expect(c.connections.get('db')).toMatchObject({ requireReason: false, approval: { approvers: { require: { amr: ['mfa'] } } } });
  });
});

describe('assurance', () => {
  it.each([
    { desc: 'amr any-of met', req: { amr: ['mfa', 'hwk'] }, claims: { amr: ['pwd', 'hwk'] }, ok: true },
    { desc: 'amr any-of missed', req: { amr: ['mfa'] }, claims: { amr: ['pwd'] }, ok: false },
    { desc: 'no amr claim at all', req: { amr: ['mfa'] }, claims: {}, ok: false },
    { desc: 'acr stronger than the minimum', req: { acr: 'urn:acr:mfa' }, claims: { acr: 'urn:acr:phr' }, ok: true },
    { desc: 'acr equal to the minimum', req: { acr: 'urn:acr:mfa' }, claims: { acr: 'urn:acr:mfa' }, ok: true },
    { desc: 'acr weaker than the minimum', req: { acr: 'urn:acr:mfa' }, claims: { acr: 'urn:acr:pwd' }, ok: false },
    { desc: 'an acr the issuer does not list', req: { acr: 'urn:acr:mfa' }, claims: { acr: 'urn:acr:made-up' }, ok: false },
    { desc: 'both required, one missed', req: { amr: ['mfa'], acr: 'urn:acr:phr' }, claims: { amr: ['mfa'], acr: 'urn:acr:mfa' }, ok: false },
  ])('$desc', ({ req, claims, ok }) => {
    expect(assuranceShortfall(req, who(claims).assurance) === undefined).toBe(ok);
  });

  it('an access rule with require matches only a token that meets it, and the refusal says to log in with MFA', () => {
    const conn = { access: [{ groups: ['eng'], require: { amr: ['mfa'] } }] };
    expect(canUse(conn, 'db', who({ amr: ['pwd', 'mfa'] }))).toEqual({ allowed: true });
    expect(canUse(conn, 'db', who({ amr: ['pwd'] }))).toMatchObject({ allowed: false, reason: expect.stringMatching(/stronger sign-in/), hint: expect.stringMatching(/hoopctl login/) });
  });

  it('GitLab merge-request pipelines are held to the same rule as GitHub pull requests', () => {
    const rule = { claims: { project_path: 'acme/etl', ref: 'main' } };
    expect(canUse({ access: [rule] }, 'db', who({ project_path: 'acme/etl', ref: 'main', pipeline_source: 'push' }, []))).toEqual({ allowed: true });
    expect(canUse({ access: [rule] }, 'db', who({ project_path: 'acme/etl', ref: 'main', pipeline_source: 'merge_request_event' }, []))).toMatchObject({ allowed: false });
    const named = { claims: { ...rule.claims, pipeline_source: 'merge_request_event' } };
    expect(canUse({ access: [named] }, 'db', who({ project_path: 'acme/etl', ref: 'main', pipeline_source: 'merge_request_event' }, []))).toEqual({ allowed: true });
  });
});

describe('the RENEW frame', () => {
  it('round-trips on stream 0 and takes only {token}', () => {
    const f = decodeFrame(encodeJson(FrameType.Renew, 0, { token: 'a.b.c' }));
    expect(f).toMatchObject({ type: FrameType.Renew, streamId: 0 });
    expect(decodeJson(RenewPayload, f.payload)).toEqual({ token: 'a.b.c' });
    expect(() => decodeJson(RenewPayload, Buffer.from('{"token":"a.b.c","sub":"admin"}'))).toThrow(FrameError);
    expect(() => decodeJson(RenewPayload, Buffer.from('{"token":""}'))).toThrow(FrameError);
    expect(() => decodeFrame(Buffer.from([7, 0, 0, 0, 0]))).toThrow(/unknown frame type 7/);
  });
});
