// Which OS user opened a loopback TCP connection to our listener (Linux: /proc/net/tcp). The local port
// is reachable by every user on the machine; only the user who ran `hoopctl connect` may use its tunnel
// and the identity behind it.
import { readFile } from 'node:fs/promises';

/** The uid owning the peer socket, or undefined when it cannot be determined (not Linux, not IPv4). */
export async function peerUid(remoteAddress: string | undefined, remotePort: number | undefined, localPort: number): Promise<number | undefined> {
  if (process.platform !== 'linux' || !remoteAddress || !remotePort) return undefined;
  const ip = remoteAddress.replace(/^::ffff:/, '');
  const m = /^(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(ip);
  if (!m) return undefined;
  // /proc/net/tcp prints IPv4 addresses as little-endian hex words and ports as big-endian hex.
  const addrHex = [m[4], m[3], m[2], m[1]].map((o) => Number(o).toString(16).padStart(2, '0')).join('').toUpperCase();
  const want = `${addrHex}:${remotePort.toString(16).toUpperCase().padStart(4, '0')}`;
  const peerPort = `:${localPort.toString(16).toUpperCase().padStart(4, '0')}`;
  let table: string;
  try {
    table = await readFile('/proc/net/tcp', 'utf8');
  } catch {
    return undefined;
  }
  for (const line of table.split('\n')) {
    const cols = line.trim().split(/\s+/);
    // sl local_address rem_address st tx:rx tr:when retrnsmt uid …
    if (cols[1] === want && cols[2]?.endsWith(peerPort)) return Number(cols[7]);
  }
  return undefined;
}
