// Which OS user opened a loopback TCP connection to our listener (Linux: /proc/net/tcp, tcp6). The local
// port is reachable by every user on the machine; only the user who ran `hoopctl connect` may use its
// tunnel and the identity behind it.
//
// Per accepted connection this reads the kernel's socket table in small chunks and stops at the peer's
// line, matching bytes without decoding the table: reading it whole and splitting it into strings cost
// +243 MB and seconds of CPU at 500 concurrent connects (every connect scanned every other one).
import { closeSync, openSync, readSync } from 'node:fs';

/** One buffer for every lookup: reads are synchronous (short, from the kernel), so never shared at once. */
const chunk = Buffer.allocUnsafe(16 * 1024);

/** The uid owning the peer socket, or undefined when it cannot be determined (not Linux, no such socket). */
export async function peerUid(remoteAddress: string | undefined, remotePort: number | undefined, localPort: number): Promise<number | undefined> {
  if (process.platform !== 'linux' || !remoteAddress || !remotePort) return undefined;
  for (const [file, addrHex] of tables(remoteAddress)) {
    // The client's own socket: local address = the peer's address and port, remote port = our port.
    const uid = findUid(file, Buffer.from(`${addrHex}:${hex(remotePort, 4)} `, 'latin1'), `:${hex(localPort, 4)}`);
    if (uid !== undefined) return uid;
  }
  return undefined;
}

/** The tables that may hold `address`, each with the address as that table prints it. */
function tables(address: string): Array<[string, string]> {
  const v4 = /^(?:::ffff:)?(\d+)\.(\d+)\.(\d+)\.(\d+)$/i.exec(address);
  if (v4) {
    // /proc/net/tcp prints an IPv4 address as one little-endian 32-bit word.
    const le = [v4[4], v4[3], v4[2], v4[1]].map((o) => hex(Number(o), 2)).join('');
    const mapped = address.toLowerCase().startsWith('::ffff:');
    // A dual-stack listener sees IPv4 clients as v4-mapped IPv6 sockets, listed in tcp6.
    return mapped ? [['/proc/net/tcp', le], ['/proc/net/tcp6', '0000000000000000FFFF0000' + le]] : [['/proc/net/tcp', le]];
  }
  const bytes = ipv6Bytes(address);
  if (!bytes) return [];
  // tcp6 prints the 16 bytes as four 32-bit words, each little-endian.
  let out = '';
  for (let w = 0; w < 16; w += 4) for (let i = 3; i >= 0; i--) out += hex(bytes[w + i], 2);
  return [['/proc/net/tcp6', out]];
}

function ipv6Bytes(address: string): number[] | undefined {
  if (!/^[0-9a-f:]+$/i.test(address)) return undefined;
  const [head, tail, extra] = address.split('::');
  if (extra !== undefined) return undefined;
  const words = (s: string | undefined) => (s ? s.split(':').map((w) => parseInt(w, 16)) : []);
  const h = words(head);
  const t = words(tail);
  const fill = tail === undefined ? 0 : 8 - h.length - t.length;
  const all = [...h, ...Array<number>(Math.max(0, fill)).fill(0), ...t];
  if (all.length !== 8 || all.some((w) => !(w >= 0 && w <= 0xffff))) return undefined;
  return all.flatMap((w) => [w >> 8, w & 0xff]);
}

const hex = (n: number, width: number) => n.toString(16).toUpperCase().padStart(width, '0');

/** Scans `file` line by line for `local` (address:port and a space); returns the uid column of that line. */
function findUid(file: string, local: Buffer, remotePortSuffix: string): number | undefined {
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch {
    return undefined;
  }
  try {
    let held = 0; // bytes of an unfinished line kept at the start of `chunk`
    for (;;) {
      const n = readSync(fd, chunk, held, chunk.length - held, null);
      const filled = held + n;
      const lastNl = n === 0 ? filled : chunk.lastIndexOf(0x0a, filled - 1) + 1;
      const lines = chunk.subarray(0, lastNl);
      for (let at = lines.indexOf(local); at >= 0; at = lines.indexOf(local, at + 1)) {
        const start = lines.lastIndexOf(0x0a, at) + 1;
        const endNl = lines.indexOf(0x0a, at);
        // sl local_address rem_address st tx:rx tr:when retrnsmt uid …
        const cols = lines.toString('latin1', start, endNl < 0 ? lines.length : endNl).trim().split(/\s+/);
        if (cols[2]?.endsWith(remotePortSuffix)) return Number(cols[7]);
      }
      if (n === 0) return undefined;
      held = filled - lastNl;
      if (held >= chunk.length) return undefined; // a line longer than the buffer: not this table's format
      chunk.copy(chunk, 0, lastNl, filled);
    }
  } finally {
    closeSync(fd);
  }
}
