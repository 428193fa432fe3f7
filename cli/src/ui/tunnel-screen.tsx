// What a person sees while `hoopctl connect` or `hoopctl demo` runs on a terminal: where to point psql,
// whether the tunnel is up, and what the agent told us. Plain text and --json output live in the commands.
import React, { useEffect, useState } from 'react';
import { Box, Text, render, type Instance } from 'ink';

export interface TunnelView {
  title: string;
  psql?: string;
  state: 'starting' | 'connected' | 'reconnecting';
  detail?: string;
  /** What else to try, with the commands (the demo's approver and reviewer). */
  more?: string[];
  notes: string[];
}

type Listener = (v: TunnelView) => void;

/** A tiny store the command updates and the screen renders. */
export class TunnelViewModel {
  private listeners = new Set<Listener>();
  constructor(public view: TunnelView) {}
  update(patch: Partial<TunnelView>): void {
    this.view = { ...this.view, ...patch };
    for (const l of this.listeners) l(this.view);
  }
  note(line: string): void {
    this.update({ notes: [...this.view.notes, line].slice(-8) });
  }
  subscribe(l: Listener): () => void {
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  }
}

const STATE_TEXT: Record<TunnelView['state'], { text: string; color: string }> = {
  starting: { text: 'starting…', color: 'yellow' },
  connected: { text: 'connected', color: 'green' },
  reconnecting: { text: 'reconnecting…', color: 'yellow' },
};

export function TunnelScreen({ model }: { model: TunnelViewModel }): React.ReactElement {
  const [v, setV] = useState(model.view);
  useEffect(() => model.subscribe(setV), [model]);
  const st = STATE_TEXT[v.state];
  return (
    <Box flexDirection="column">
      <Text>
        <Text bold>{v.title}</Text> <Text color={st.color}>● {st.text}</Text>
        {v.detail ? <Text dimColor> {v.detail}</Text> : null}
      </Text>
      {v.psql ? (
        <Box flexDirection="column" marginTop={1}>
          <Text>Connect from another terminal (no password):</Text>
          <Text color="cyan">  {v.psql}</Text>
        </Box>
      ) : null}
      {v.more?.length ? (
        <Box flexDirection="column" marginTop={1}>
          {v.more.map((m, i) => (
            <Text key={i} color={m.startsWith('  ') ? 'cyan' : undefined}>
              {m}
            </Text>
          ))}
        </Box>
      ) : null}
      {v.notes.length ? (
        <Box flexDirection="column" marginTop={1}>
          {v.notes.map((n, i) => (
            <Text key={i} dimColor>
              {n}
            </Text>
          ))}
        </Box>
      ) : null}
      <Box marginTop={1}>
        <Text dimColor>Ctrl-C stops it.</Text>
      </Box>
    </Box>
  );
}

export function showTunnelScreen(model: TunnelViewModel): Instance {
  return render(<TunnelScreen model={model} />, { exitOnCtrlC: false });
}
