// The interactive `hoopctl approvals` screen: the pending requests the caller may decide, the selected
// one in full (statement, redacted parameters, requester, connection, age, votes), and keys:
//   ↑/↓ (k/j) select   a approve (optional reason, Enter confirms)   d deny (reason required)
//   r refresh          q / Esc quit
// The agent decides; this screen only sends the vote and shows the answer (or the refusal) it got.
import React, { useCallback, useEffect, useRef, useState } from 'react';
import { Box, Text, render, useApp, useInput, type Instance } from 'ink';
import { approvalDetail, formatAge, oneLine, requesterOf, type ApprovalView, type Verdict } from '../commands/approvals.js';

export interface ApprovalsScreenProps {
  initial: ApprovalView[];
  load(): Promise<ApprovalView[]>;
  decide(id: string, verdict: Verdict, reason?: string): Promise<ApprovalView>;
  now?: () => number;
  /** Re-read the list this often while idle (ms); 0 = only on `r` and after a decision. */
  refreshMs?: number;
}

type Mode = { kind: 'list' } | { kind: 'prompt'; verdict: Verdict; text: string } | { kind: 'busy'; what: string };
type Notice = { tone: 'ok' | 'error' | 'info'; text: string } | undefined;

export function ApprovalsScreen({ initial, load, decide, now = Date.now, refreshMs = 10_000 }: ApprovalsScreenProps): React.JSX.Element {
  const { exit } = useApp();
  const [rows, setRows] = useState<ApprovalView[]>(initial);
  const [index, setIndex] = useState(0);
  const [mode, setModeState] = useState<Mode>({ kind: 'list' });
  const [notice, setNotice] = useState<Notice>(undefined);
  const [, tick] = useState(0);
  // Keys can arrive faster than React re-subscribes the input handler (a paste, a fast typist, a
  // script): the handler reads the latest state from refs, never from a stale closure.
  const live = useRef({ rows: initial, index: 0, mode: { kind: 'list' } as Mode });
  const setMode = (m: Mode) => {
    live.current.mode = m;
    setModeState(m);
  };
  const select = (i: number) => {
    live.current.index = i;
    setIndex(i);
  };
  const current = () => {
    const { rows: r, index: i } = live.current;
    return r.length ? r[Math.min(i, r.length - 1)] : undefined;
  };

  const selected = rows.length ? rows[Math.min(index, rows.length - 1)] : undefined;

  const reload = useCallback(async () => {
    try {
      const next = await load();
      // Keep the same request selected when it is still there.
      const keep = current()?.id;
      const at = next.findIndex((a) => a.id === keep);
      live.current.rows = next;
      setRows(next);
      select(at >= 0 ? at : Math.max(0, Math.min(live.current.index, next.length - 1)));
    } catch (err) {
      setNotice({ tone: 'error', text: `could not refresh: ${(err as Error).message}` });
    }
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [load]);

  useEffect(() => {
    if (!refreshMs || mode.kind !== 'list') return;
    const t = setInterval(() => {
      tick((n) => n + 1);
      void reload();
    }, refreshMs);
    return () => clearInterval(t);
  }, [refreshMs, mode.kind, reload]);

  const submit = async (verdict: Verdict, reasonText: string) => {
    const reason = reasonText.trim() || undefined;
    const target = current();
    if (!target) return setMode({ kind: 'list' });
    if (verdict === 'deny' && !reason) {
      setNotice({ tone: 'error', text: 'a denial needs a reason' });
      return;
    }
    const id = target.id;
    setMode({ kind: 'busy', what: `${verdict === 'approve' ? 'approving' : 'denying'} ${id}…` });
    try {
      const a = await decide(id, verdict, reason);
      setNotice({
        tone: 'ok',
        text:
          verdict === 'deny'
            ? `denied ${id}`
            : a.status === 'approved'
              ? `approved ${id}: it runs once, as shown`
              : `vote recorded on ${id} (${a.approvals} of ${a.minApprovals})`,
      });
    } catch (err) {
      setNotice({ tone: 'error', text: `${id}: ${(err as Error).message}` });
    }
    setMode({ kind: 'list' });
    await reload();
  };

  useInput((input, key) => {
    const m = live.current.mode;
    if (m.kind === 'busy') return;
    if (m.kind === 'prompt') {
      if (key.escape) return setMode({ kind: 'list' });
      if (key.return) return void submit(m.verdict, m.text);
      if (key.backspace || key.delete) return setMode({ ...m, text: m.text.slice(0, -1) });
      if (key.ctrl || key.meta || key.tab || key.upArrow || key.downArrow || key.leftArrow || key.rightArrow) return;
      // Printable text only; pasted newlines become spaces, control characters are dropped.
      const clean = input.replace(/[\r\n\t]/g, ' ').replace(/[\u0000-\u001f\u007f]/g, '');
      if (clean) {
        setNotice(undefined);
        setMode({ ...m, text: (m.text + clean).slice(0, 2000) });
      }
      return;
    }
    const n = live.current.rows.length;
    if (input === 'q' || key.escape) return exit();
    if (key.upArrow || input === 'k') return select(Math.max(0, Math.min(live.current.index, n - 1) - 1));
    if (key.downArrow || input === 'j') return select(Math.min(Math.max(0, n - 1), live.current.index + 1));
    if (input === 'r') {
      setNotice({ tone: 'info', text: 'refreshed' });
      return void reload();
    }
    if ((input === 'a' || input === 'd') && current()) {
      setNotice(undefined);
      setMode({ kind: 'prompt', verdict: input === 'a' ? 'approve' : 'deny', text: '' });
    }
  });

  const t = now();
  return (
    <Box flexDirection="column">
      <Text bold>
        Statements waiting for your approval ({rows.length})
      </Text>
      {rows.length === 0 ? (
        <Text dimColor>nothing to decide right now (r refresh, q quit)</Text>
      ) : (
        <Box flexDirection="column" marginTop={1}>
          {rows.map((a, i) => (
            <Text key={a.id} inverse={a === selected}>
              {a === selected ? '›' : ' '} {formatAge(t - Date.parse(a.createdAt)).padStart(6)}  {a.connection}  {requesterOf(a)}  {oneLine(a.display ?? a.sql, 60)}
            </Text>
          ))}
        </Box>
      )}
      {selected ? (
        <Box flexDirection="column" marginTop={1} borderStyle="round" paddingX={1}>
          {approvalDetail(selected, t).map((line, i) => (
            <Text key={i}>{line}</Text>
          ))}
        </Box>
      ) : null}
      {mode.kind === 'prompt' ? (
        <Box marginTop={1} flexDirection="column">
          <Text>
            {mode.verdict === 'approve' ? (
              <Text color="green">Approve {selected?.id}? Reason (optional), Enter to approve, Esc to cancel:</Text>
            ) : (
              <Text color="red">Deny {selected?.id}. Reason (required), Enter to deny, Esc to cancel:</Text>
            )}
          </Text>
          <Text>
            {'> '}
            {mode.text}
            <Text inverse> </Text>
          </Text>
        </Box>
      ) : null}
      {mode.kind === 'busy' ? <Text color="yellow">⧗ {mode.what}</Text> : null}
      {notice ? <Text color={notice.tone === 'ok' ? 'green' : notice.tone === 'error' ? 'red' : undefined}>{notice.text}</Text> : null}
      {mode.kind === 'list' ? <Text dimColor>↑/↓ select · a approve · d deny · r refresh · q quit</Text> : null}
    </Box>
  );
}

/** Renders the screen until the person quits. */
export async function runApprovalsScreen(props: ApprovalsScreenProps, opts: { stdin?: NodeJS.ReadStream; stdout?: NodeJS.WriteStream } = {}): Promise<void> {
  // Only the streams given: ink's defaults (process.stdin/stdout) must not be overwritten with undefined.
  const app: Instance = render(<ApprovalsScreen {...props} />, {
    patchConsole: false,
    ...(opts.stdin ? { stdin: opts.stdin } : {}),
    ...(opts.stdout ? { stdout: opts.stdout } : {}),
  });
  await app.waitUntilExit();
}
