// Closes the open tunnels of a revoked token, on every agent sharing the state store: each agent follows
// the store's revocations (audit/revocations.ts) and matches them against the token each of its tunnels
// currently runs on (renewals included).
import type WebSocket from 'ws';
import type { TunnelMux } from '../../../shared/tunnel/mux.js';
import type { Logger } from '../log.js';
import type { Principal } from '../identity/access.js';
import { revocationKeys, type Revocations } from '../audit/revocations.js';
import { CLOSE_TOKEN } from './tunnel.js';

interface Watched {
  keys: string[];
  mux?: TunnelMux;
}

export class TunnelRevocationWatch {
  private readonly tunnels = new Map<WebSocket, Watched>();
  private readonly unsubscribe: () => void;

  constructor(
    private readonly revocations: Pick<Revocations, 'isRevoked' | 'subscribe'>,
    private readonly log: Logger,
  ) {
    this.unsubscribe = revocations.subscribe((keys) => void this.onRevoked(keys));
  }

  /** The identity `ws` runs as now (at open, after each renewal). */
  identify(ws: WebSocket, who: Principal): void {
    const w = this.tunnels.get(ws);
    if (w) w.keys = revocationKeys(who);
    else {
      this.tunnels.set(ws, { keys: revocationKeys(who) });
      ws.once('close', () => this.tunnels.delete(ws));
    }
  }

  /** The tunnel's mux, to tell the CLI why it is closed. */
  attach(ws: WebSocket, mux: TunnelMux): void {
    const w = this.tunnels.get(ws);
    if (w) w.mux = mux;
  }

  private async onRevoked(keys: readonly string[] | '*'): Promise<void> {
    for (const [ws, w] of this.tunnels) {
      let hit: boolean;
      try {
        hit = keys === '*' ? await this.revocations.isRevoked(w.keys) : w.keys.some((k) => keys.includes(k));
      } catch (err) {
        // Revocations may have been missed and cannot be read: fail closed, the CLI reconnects and is checked anew.
        this.log.warn('revocation list unavailable; closing a tunnel to re-check it', { error: (err as Error).message });
        hit = true;
      }
      if (!hit || ws.readyState !== ws.OPEN) continue;
      this.log.info('tunnel closed: its token was revoked');
      w.mux?.event(0, { type: 'token_revoked', message: 'hoopctl: this tunnel\'s token was revoked (`hoopctl logout`); the tunnel is closed. Run `hoopctl login` to connect again.' });
      ws.close(CLOSE_TOKEN, 'token revoked');
    }
  }

  close(): void {
    this.unsubscribe();
  }
}
