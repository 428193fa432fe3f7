// One source for the version the CLI reports and sends to the agent for the audit record.
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
function find(): string {
  for (const p of ['../../package.json', '../package.json']) {
    try {
      return (require(p) as { version: string }).version;
    } catch {
      /* bundled layout differs; try the next */
    }
  }
  return '0.0.0';
}
export const CLI_VERSION = find();
