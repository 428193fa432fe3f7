// Cancel keys. The client only ever sees a key the agent issued; a CancelRequest that names it (on a new
// stream of a tunnel authenticated as the same identity) is forwarded upstream with the real key. The
// real key never leaves the agent and no key is ever logged.
import { randomBytes, randomInt, timingSafeEqual } from 'node:crypto';
import type { Principal } from '../identity/access.js';

interface Entry {
  secret: Buffer;
  owner: string;
  forward(): Promise<void>;
}

export class CancelRegistry {
  private readonly entries = new Map<number, Entry>();

  /**
   * @param elsewhere asked when no session here holds the key: with several worker processes, the
   *   session may live in another one (cluster/primary.ts asks each of them with `cancelHere`).
   */
  constructor(private readonly elsewhere?: (pid: number, secret: Buffer, owner: string) => Promise<boolean>) {}

  /** Issues a fresh (pid, secret) for a session; `forward` cancels its upstream query. */
  issue(owner: Principal, forward: () => Promise<void>): { pid: number; secret: Buffer } {
    let pid: number;
    do pid = randomInt(1, 0x7fffffff);
    while (this.entries.has(pid));
    const secret = randomBytes(4);
    this.entries.set(pid, { secret, owner: ownerKey(owner), forward });
    return { pid, secret };
  }

  release(pid: number): void {
    this.entries.delete(pid);
  }

  /**
   * Forwards a cancel when the key matches and the requester is the session's own identity; a guessed
   * or foreign key does nothing, and the requester cannot tell which (no oracle).
   */
  async cancel(pid: number, secret: Buffer, requester: Principal): Promise<boolean> {
    const owner = ownerKey(requester);
    if (!this.entries.has(pid) && this.elsewhere) return this.elsewhere(pid, secret, owner);
    return this.cancelHere(pid, secret, owner);
  }

  /** `cancel` for a session of this process only; `owner` as the key's issuer and subject. */
  async cancelHere(pid: number, secret: Buffer, owner: string): Promise<boolean> {
    const e = this.entries.get(pid);
    if (!e || e.secret.length !== secret.length || !timingSafeEqual(e.secret, secret)) return false;
    if (e.owner !== owner) return false;
    await e.forward();
    return true;
  }
}

function ownerKey(p: Principal): string {
  return `${p.issuer}\u0000${p.sub}`;
}
