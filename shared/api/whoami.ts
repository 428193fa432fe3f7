// GET /api/whoami: who the agent takes the caller for, and which connections that identity may use.
// Built by agent/src/http/server.ts, read by cli/src/commands/whoami.ts; parsed on both sides.
import { z } from 'zod';

export const WhoamiConnection = z.object({ name: z.string(), allowed: z.boolean(), reason: z.string().optional() });

export const WhoamiResponse = z.object({
  identity: z.object({ sub: z.string(), email: z.string().optional(), groups: z.array(z.string()), issuer: z.string() }),
  connections: z.array(WhoamiConnection),
});
export type WhoamiResponse = z.infer<typeof WhoamiResponse>;
