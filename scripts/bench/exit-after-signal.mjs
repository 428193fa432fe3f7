// Preloaded (--import) into the profiled agent and CLI: after SIGINT, give the process 3 s to stop by
// itself, then exit anyway, so that --cpu-prof always writes its file (it does on exit, not on SIGKILL).
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => setTimeout(() => process.exit(0), 3000).unref());
