import type { Logger } from "../../runtime/index.js";

/** Options of {@link runSimulator}. */
export interface SimulatorOptions {
  readonly address: string;
  readonly sources: number;
  readonly ratePerSecond: number;
  readonly signal: AbortSignal;
  readonly log?: Logger;
}

/** Placeholder until the simulator lands: waits for the signal. */
export async function runSimulator(options: SimulatorOptions): Promise<void> {
  await new Promise<void>((resolve) => options.signal.addEventListener("abort", () => resolve(), { once: true }));
}
