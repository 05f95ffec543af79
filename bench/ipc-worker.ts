/**
 * The command loop of a bench child process: JSON requests with an `id` arrive over the IPC
 * channel, each is answered with one `{ id, ok, result | error }` reply. The child announces
 * itself with `{ ready: true, pid }` and exits when its parent goes away.
 */

/** Runs `execute` for each command received over IPC. Exits with code 2 when started without IPC. */
export function serveCommands<C extends { readonly cmd: string }>(name: string, execute: (command: C) => Promise<unknown>): void {
  const send = process.send?.bind(process);
  if (send === undefined) {
    process.stderr.write(`${name}: run me from bench/run.js (I take commands over an IPC channel)\n`);
    process.exit(2);
  }
  process.on("message", (raw: unknown) => {
    const msg = raw as C & { readonly id: number };
    execute(msg).then(
      (result) => send({ id: msg.id, ok: true, result }),
      (err: unknown) => send({ id: msg.id, ok: false, error: err instanceof Error ? (err.stack ?? err.message) : String(err) }),
    );
  });
  // The orchestrator owns this process: when it goes away, so do we.
  process.on("disconnect", () => process.exit(0));
  send({ ready: true, pid: process.pid });
}
