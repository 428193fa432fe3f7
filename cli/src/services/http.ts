// undici's `request`, loaded on first use: importing undici costs about 100 ms of CPU, which every command
// paid at start (`--help` and a refusal that never reaches the network included).
type Request = typeof import('undici').request;

let loaded: Promise<Request> | undefined;

export const request = (async (...args: Parameters<Request>) => {
  const req = await (loaded ??= import('undici').then((m) => m.request));
  return req(...args);
}) as Request;
