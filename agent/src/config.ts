// Loads hoop-agent.yaml once at start: parse, validate (zod), resolve password sources. After this the
// rest of the agent trusts the config. Every problem is one line naming the field.
import { readFile } from 'node:fs/promises';
import { parse as parseYaml } from 'yaml';
import { AgentConfig, formatConfigIssues, type ConnectionConfig } from '../../shared/config/schema.js';

export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  constructor(readonly problems: string[]) {
    super(problems.join('\n'));
  }
}

export interface ResolvedConnection extends ConnectionConfig {
  name: string;
  /** The database password, read from passwordEnv or passwordFile. Never logged. */
  password: string;
}

export interface ResolvedConfig extends Omit<AgentConfig, 'connections'> {
  connections: Map<string, ResolvedConnection>;
}

export async function loadConfigFile(path: string, env: NodeJS.ProcessEnv = process.env): Promise<ResolvedConfig> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new ConfigError([`${path}: cannot read the config file (${(err as NodeJS.ErrnoException).code ?? err})`]);
  }
  let raw: unknown;
  try {
    raw = parseYaml(text);
  } catch (err) {
    throw new ConfigError([`${path}: not valid YAML: ${(err as Error).message.split('\n')[0]}`]);
  }
  return resolveConfig(raw, env);
}

export async function resolveConfig(raw: unknown, env: NodeJS.ProcessEnv = process.env): Promise<ResolvedConfig> {
  const parsed = AgentConfig.safeParse(raw);
  if (!parsed.success) throw new ConfigError(formatConfigIssues(parsed.error));
  const { connections, ...rest } = parsed.data;
  const problems: string[] = [];
  const resolved = new Map<string, ResolvedConnection>();
  // An acr minimum is measured on an issuer's ordered acrValues; a value no issuer lists is a typo.
  const knownAcr = new Set(rest.identity.issuers.flatMap((i) => i.acrValues ?? []));
  const checkAcr = (where: string, acr: string | undefined) => {
    if (acr !== undefined && !knownAcr.has(acr)) problems.push(`${where}.require.acr: ${acr} is in no issuer's acrValues (list them weakest to strongest on the issuer)`);
  };
  for (const [name, conn] of Object.entries(connections)) {
    conn.access.forEach((r, i) => checkAcr(`connections.${name}.access.${i}`, r.require?.acr));
    checkAcr(`connections.${name}.approval.approvers`, conn.approval.approvers?.require?.acr);
    const where = `connections.${name}.postgres`;
    let password: string | undefined;
    if (conn.postgres.passwordEnv) {
      password = env[conn.postgres.passwordEnv];
      if (password === undefined) problems.push(`${where}.passwordEnv: environment variable ${conn.postgres.passwordEnv} is not set`);
    } else if (conn.postgres.passwordFile) {
      try {
        password = (await readFile(conn.postgres.passwordFile, 'utf8')).replace(/\r?\n$/, '');
      } catch (err) {
        problems.push(`${where}.passwordFile: cannot read ${conn.postgres.passwordFile} (${(err as NodeJS.ErrnoException).code})`);
      }
    }
    if (conn.postgres.sslmode === 'verify-full' && !conn.postgres.sslrootcert) {
      // Without a CA file we would verify against the system store; say so rather than guess.
      problems.push(`${where}.sslrootcert: verify-full needs the CA certificate file of the database server`);
    }
    resolved.set(name, { ...conn, name, password: password ?? '' });
  }
  if (problems.length) throw new ConfigError(problems);
  return { ...rest, connections: resolved };
}
