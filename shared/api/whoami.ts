// GET /api/whoami: who the agent takes the caller for, and which connections that identity may use.
// Built by agent/src/http/server.ts, read by cli/src/commands/whoami.ts; parsed on both sides.
import { z } from 'zod';

/** P11: the scope that applies to the caller on a connection with scopes (`(none)`: no scope matches, it reads nothing). */
export const WhoamiScope = z.object({
  name: z.string(),
  read: z.array(z.string()),
  write: z.array(z.string()),
  maxRows: z.number().int().positive().optional(),
  unmask: z.array(z.string()),
});

export const WhoamiConnection = z.object({ name: z.string(), allowed: z.boolean(), reason: z.string().optional(), scope: WhoamiScope.optional() });

export const WhoamiResponse = z.object({
  identity: z.object({ sub: z.string(), email: z.string().optional(), groups: z.array(z.string()), issuer: z.string() }),
  connections: z.array(WhoamiConnection),
});
export type WhoamiResponse = z.infer<typeof WhoamiResponse>;
export type WhoamiScope = z.infer<typeof WhoamiScope>;
