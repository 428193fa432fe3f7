// Clean-up for a stack of things started one after another (PostgreSQL, issuer, agent, tunnel…): each
// start pushes its stop, and stopping runs them last-in first-out, each once, a failing step not
// keeping the others from running.
export class Teardown {
  private readonly steps: Array<() => Promise<unknown>> = [];

  push(step: () => Promise<unknown>): void {
    this.steps.push(step);
  }

  readonly run = async (): Promise<void> => {
    for (const step of this.steps.splice(0).reverse()) await step().catch(() => {});
  };
}
