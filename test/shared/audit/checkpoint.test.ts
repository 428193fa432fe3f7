// C2SP signed-note checkpoints: Go's sumdb/note reference vector reproduced byte for byte (Ed25519 is
// deterministic), checkpoint bodies round-trip, and each way a checkpoint can be wrong is refused.
import { describe, expect, it } from 'vitest';
import { createPrivateKey } from 'node:crypto';
import {
  CheckpointError,
  checkpointBody,
  newSigningKeyPem,
  parseCheckpointBody,
  parseNote,
  parseVerifierKey,
  signNote,
  signerFromPem,
  verifyCheckpoint,
} from '../../../shared/audit/checkpoint.js';

// golang.org/x/mod/sumdb/note's example (note.go and note_test.go).
const GO_SKEY = 'PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz';
const GO_VKEY = 'PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW';
const GO_TEXT = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n";
const GO_NOTE = GO_TEXT + '\n\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n';

function goSigner() {
  const seed = Buffer.from(GO_SKEY.split('+').slice(4).join('+'), 'base64').subarray(1);
  const der = Buffer.concat([Buffer.from('302e020100300506032b657004220420', 'hex'), seed]);
  const pem = createPrivateKey({ key: der, format: 'der', type: 'pkcs8' }).export({ format: 'pem', type: 'pkcs8' }).toString();
  return signerFromPem('PeterNeumann', pem);
}

describe('signed-note checkpoints', () => {
  it("reproduces Go sumdb/note's reference note and verifier key", () => {
    const s = goSigner();
    expect(s.vkey).toBe(GO_VKEY);
    expect(signNote(GO_TEXT, [s])).toBe(GO_NOTE);
    expect(parseVerifierKey(GO_VKEY).raw).toEqual(s.raw);
    const { body, signatures } = parseNote(GO_NOTE);
    expect(body).toBe(GO_TEXT);
    expect(signatures[0].keyHash.toString('hex')).toBe('c74f20a3');
  });

  it('signs and verifies a checkpoint; the body round-trips', () => {
    const key = signerFromPem('hoopctl/agent-1', newSigningKeyPem());
    const root = Buffer.alloc(32, 7);
    const body = checkpointBody({ origin: 'hoopctl/agent-1', size: 46, root, time: '2026-12-07T06:00:00.000Z' });
    expect(body).toBe(`hoopctl/agent-1\n46\n${root.toString('base64')}\ntime 2026-12-07T06:00:00.000Z\n`);
    const note = signNote(body, [key]);
    expect(note).toMatch(/\n\n\u2014 hoopctl\/agent-1 [A-Za-z0-9+/]+=*\n$/);
    const cp = verifyCheckpoint(note, [parseVerifierKey(key.vkey)]);
    expect(cp).toMatchObject({ origin: 'hoopctl/agent-1', size: 46, time: '2026-12-07T06:00:00.000Z' });
    expect(cp.root).toEqual(root);
    expect(parseCheckpointBody(body).extensions).toEqual([]);
  });

  it.each([
    { desc: 'an edited size', edit: (n: string) => n.replace('\n46\n', '\n45\n'), want: /does not verify/ },
    { desc: 'an edited root', edit: (n: string) => n.replace(/\n([A-Za-z0-9+/]{43}=)\n/, (_m, r: string) => `\n${r[0] === 'A' ? 'B' : 'A'}${r.slice(1)}\n`), want: /does not verify/ },
    { desc: 'no signature', edit: (n: string) => n.slice(0, n.indexOf('\n\n') + 2), want: /at least one signature/ },
    { desc: 'a malformed signature line', edit: (n: string) => n.replace('\u2014 ', '- '), want: /malformed signature/ },
    { desc: 'a non-canonical size', edit: (n: string) => n.replace('\n46\n', '\n046\n'), want: /tree size/ },
  ])('refuses $desc', ({ edit, want }) => {
    const key = signerFromPem('hoopctl/agent-1', newSigningKeyPem());
    const note = signNote(checkpointBody({ origin: 'hoopctl/agent-1', size: 46, root: Buffer.alloc(32, 9), time: '2026-12-07T06:00:00.000Z' }), [key]);
    expect(() => verifyCheckpoint(edit(note), [key])).toThrow(want);
  });

  it('refuses a checkpoint signed by an unknown key, or outside its key’s validity window', () => {
    const key = signerFromPem('hoopctl/agent-1', newSigningKeyPem());
    const other = signerFromPem('hoopctl/agent-1', newSigningKeyPem());
    const note = signNote(checkpointBody({ origin: 'hoopctl/agent-1', size: 3, root: Buffer.alloc(32), time: '2026-12-07T06:00:00.000Z' }), [key]);
    expect(() => verifyCheckpoint(note, [other])).toThrow(CheckpointError);
    expect(() => verifyCheckpoint(note, [other])).toThrow(/unknown key \(hoopctl\/agent-1\+[0-9a-f]{8}\)/);
    // Rotation: the old key still verifies what it signed inside its window, not after it was retired.
    const retired = parseVerifierKey(key.vkey, { notBefore: '2026-01-01T00:00:00Z', notAfter: '2026-12-07T07:00:00Z' });
    expect(verifyCheckpoint(note, [other, retired]).key.fingerprint).toBe(key.fingerprint);
    const late = signNote(checkpointBody({ origin: 'hoopctl/agent-1', size: 3, root: Buffer.alloc(32), time: '2026-12-07T08:00:00.000Z' }), [key]);
    expect(() => verifyCheckpoint(late, [retired])).toThrow(/outside the validity window/);
  });
});
