// When the tunnel is down, a local client still deserves a readable error instead of a reset: answer its
// SSLRequest/GSSENCRequest with 'N', then send a FATAL ErrorResponse (08006) psql prints verbatim.
import type net from 'node:net';

const SSL_OR_GSS = new Set([80877103, 80877104]);

export function refuseLocalClient(socket: net.Socket, message: string): void {
  let buf = Buffer.alloc(0);
  const timer = setTimeout(() => socket.destroy(), 5000);
  const onData = (chunk: Buffer) => {
    buf = Buffer.concat([buf, chunk]);
    while (buf.length >= 8) {
      const len = buf.readInt32BE(0);
      if (len < 8 || len > 10000) return finish();
      if (buf.length < len) return;
      const code = buf.readInt32BE(4);
      buf = buf.subarray(len);
      if (SSL_OR_GSS.has(code)) socket.write('N');
      else return finish();
    }
  };
  const finish = () => {
    clearTimeout(timer);
    socket.off('data', onData);
    socket.end(errorResponse(message));
  };
  socket.on('data', onData);
}

function errorResponse(message: string): Buffer {
  const fields = Buffer.from(`SFATAL\0VFATAL\0C08006\0M${message}\0\0`, 'utf8');
  const head = Buffer.alloc(5);
  head[0] = 0x45; // 'E'
  head.writeInt32BE(fields.length + 4, 1);
  return Buffer.concat([head, fields]);
}
