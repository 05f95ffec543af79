/**
 * One scrape of a Prometheus text endpoint: each sample by its series, written with the labels
 * sorted (`name{a="1",b="2"}`), so a test names a series however the exporter ordered its labels.
 */
export class Scrape {
  private constructor(
    private readonly samples: ReadonlyMap<string, number>,
    /** The body as served. */
    readonly text: string,
  ) {}

  /** GETs `http://<address>/metrics` and parses it. @throws Error on a status other than 200 */
  static async of(address: string): Promise<Scrape> {
    const res = await fetch(`http://${address}/metrics`);
    const text = await res.text();
    if (res.status !== 200) throw new Error(`GET http://${address}/metrics answered ${res.status}: ${text}`);
    return Scrape.parse(text);
  }

  /** Parses the text exposition format (comments skipped, labels without escaped quotes). */
  static parse(text: string): Scrape {
    const samples = new Map<string, number>();
    for (const line of text.split("\n")) {
      if (line === "" || line.startsWith("#")) continue;
      const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
      if (match === null) throw new Error(`not a sample line: ${line}`);
      const labels: Record<string, string> = {};
      for (const pair of (match[2] ?? "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="([^"]*)"/g)) labels[pair[1] as string] = pair[2] as string;
      samples.set(seriesKey(match[1] as string, labels), Number(match[3]));
    }
    return new Scrape(samples, text);
  }

  /** The sample of `name` with exactly `labels`, or undefined when there is none. */
  value(name: string, labels: Readonly<Record<string, string>> = {}): number | undefined {
    return this.samples.get(seriesKey(name, labels));
  }

  /** Like {@link value}, but an absent series reads as 0 (a counter that never moved). */
  count(name: string, labels: Readonly<Record<string, string>> = {}): number {
    return this.value(name, labels) ?? 0;
  }

  /** The sum of every series of `name`. */
  sum(name: string): number {
    let total = 0;
    for (const [key, value] of this.samples) if (key === name || key.startsWith(`${name}{`)) total += value;
    return total;
  }

  /** Every series of `name`, as sorted keys. */
  series(name: string): string[] {
    return [...this.samples.keys()].filter((k) => k === name || k.startsWith(`${name}{`));
  }
}

/** `name{a="1",b="2"}` with the labels sorted; `name` alone without labels. */
export function seriesKey(name: string, labels: Readonly<Record<string, string>>): string {
  const keys = Object.keys(labels).sort();
  return keys.length === 0 ? name : `${name}{${keys.map((k) => `${k}="${labels[k]}"`).join(",")}}`;
}
