// Presenters for `hoopctl login`: an ink screen for a person at a terminal (verification URL, user code,
// live status), and the same facts as plain lines for logs and pipes.
import React, { useEffect, useState } from 'react';
import { Box, Text } from 'ink';
import type { DeviceStatus } from '../services/oidc-client.js';
import { formatDuration } from './duration.js';

// Kept importable from here for the login command.
export { formatDuration };

export type ScreenStatus = DeviceStatus['state'] | 'starting';

export interface LoginView {
  issuer: string;
  verificationUri?: string;
  verificationUriComplete?: string;
  userCode?: string;
  /** ms since the epoch. */
  expiresAt?: number;
  status: ScreenStatus;
  /** Seconds between polls, as currently honoured. */
  interval?: number;
  browser?: 'opened' | 'failed' | 'off';
  detail?: string;
}

export function LoginScreen({ view, now = Date.now }: { view: LoginView; now?: () => number }): React.JSX.Element {
  const [, tick] = useState(0);
  const live = view.status === 'waiting' || view.status === 'slow_down' || view.status === 'retrying';
  useEffect(() => {
    if (!live) return;
    const t = setInterval(() => tick((n) => n + 1), 1000);
    return () => clearInterval(t);
  }, [live]);
  const remaining = view.expiresAt !== undefined ? Math.max(0, Math.round((view.expiresAt - now()) / 1000)) : undefined;
  return (
    <Box flexDirection="column" paddingY={1}>
      <Text>
        Sign in to <Text bold>{view.issuer}</Text>
      </Text>
      {view.userCode ? (
        <Box flexDirection="column" marginTop={1}>
          <Text>
            1. Open <Text color="cyan" underline>{view.verificationUri}</Text>
            {view.browser === 'opened' ? <Text dimColor> (opened in your browser)</Text> : null}
          </Text>
          <Text>
            2. Enter the code <Text bold color="yellow">{view.userCode}</Text>
            {remaining !== undefined && live ? <Text dimColor> (expires in {formatDuration(remaining)})</Text> : null}
          </Text>
          {view.verificationUriComplete ? <Text dimColor>   or open {view.verificationUriComplete}</Text> : null}
        </Box>
      ) : null}
      <Box marginTop={1}>
        <StatusLine view={view} />
      </Box>
    </Box>
  );
}

function StatusLine({ view }: { view: LoginView }): React.JSX.Element {
  switch (view.status) {
    case 'starting':
      return <Text dimColor>Contacting the issuer…</Text>;
    case 'waiting':
      return <Text color="yellow">⧗ Waiting for you to approve in the browser…</Text>;
    case 'slow_down':
      return <Text color="yellow">⧗ Waiting (the issuer asked to poll every {view.interval} s)…</Text>;
    case 'retrying':
      return <Text color="yellow">⧗ The issuer is not answering; retrying in {view.interval} s…</Text>;
    case 'approved':
      return <Text color="green">✔ Approved{view.detail ? `: ${view.detail}` : ''}</Text>;
    case 'denied':
      return <Text color="red">✘ The sign-in was denied in the browser.</Text>;
    case 'expired':
      return <Text color="red">✘ The code expired before it was approved.</Text>;
  }
}

// ---------------------------------------------------------------------------------------------------
// Plain text (stderr) for terminals that are not TTYs.

export function deviceCodeLines(view: LoginView): string[] {
  const lines = [`hoopctl: to sign in to ${view.issuer}, open ${view.verificationUri} and enter the code ${view.userCode}`];
  if (view.verificationUriComplete) lines.push(`hoopctl: or open ${view.verificationUriComplete}`);
  if (view.expiresAt !== undefined) lines.push(`hoopctl: the code expires at ${new Date(view.expiresAt).toISOString()}; waiting for approval…`);
  return lines;
}

/** A line for a status change worth logging, or undefined (repeated "pending" polls stay quiet). */
export function statusLine(s: DeviceStatus): string | undefined {
  switch (s.state) {
    case 'slow_down':
      return `hoopctl: the issuer asked to slow down; polling every ${s.interval} s`;
    case 'retrying':
      return `hoopctl: ${s.reason}; retrying in ${s.interval} s`;
    case 'approved':
      return 'hoopctl: approved';
    default:
      return undefined;
  }
}
