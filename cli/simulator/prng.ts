/**
 * A small seeded pseudo-random generator (sfc32, seeded through the cyrb128 string hash): the
 * same seed gives the same sequence on every platform and Node version, which `Math.random`
 * does not promise. Good enough for telemetry noise; not for anything secret.
 *
 * @example
 * const rng = Prng.from("42").fork("patient-1");
 * rng.normal(72, 3); // the same value on every run with seed "42"
 */
export class Prng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  private constructor(private readonly seedText: string) {
    [this.a, this.b, this.c, this.d] = cyrb128(seedText);
    // Warm up: the first outputs of sfc32 still resemble the seed.
    for (let i = 0; i < 12; i++) this.nextUint32();
  }

  /** A generator for `seed`. Equal seeds give equal sequences. */
  static from(seed: string | number): Prng {
    return new Prng(String(seed));
  }

  /**
   * An independent generator named `label` under this one's seed. It does not depend on how far
   * this generator has run, so adding a source does not change the others' readings.
   */
  fork(label: string): Prng {
    return new Prng(`${this.seedText}/${label}`);
  }

  private nextUint32(): number {
    // sfc32 (Chris Doty-Humphrey's Small Fast Counting generator), 32-bit arithmetic.
    const t = (((this.a + this.b) | 0) + this.d) | 0;
    this.d = (this.d + 1) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) | 0;
    return t >>> 0;
  }

  /** A float in [0, 1). */
  next(): number {
    return this.nextUint32() / 4_294_967_296;
  }

  /** A float in [min, max). */
  range(min: number, max: number): number {
    return min + (max - min) * this.next();
  }

  /** A whole number in [min, max]. */
  int(min: number, max: number): number {
    return min + Math.floor((max - min + 1) * this.next());
  }

  /** True with probability `p`. */
  chance(p: number): boolean {
    return this.next() < p;
  }

  /** A normally distributed value (Box–Muller). */
  normal(mean = 0, sd = 1): number {
    const u = 1 - this.next(); // (0, 1]: log(0) would be -Infinity
    const v = this.next();
    return mean + sd * Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }

  /**
   * True when an event with a mean interval of `meanS` seconds happens within `dtS` seconds
   * (a Poisson process): the rate of episodes does not depend on how often a source reports.
   */
  happens(meanS: number, dtS: number): boolean {
    return this.chance(1 - Math.exp(-dtS / meanS));
  }
}

/** cyrb128: four 32-bit hashes of a string, a seed for sfc32. */
function cyrb128(text: string): [number, number, number, number] {
  let h1 = 1779033703;
  let h2 = 3144134277;
  let h3 = 1013904242;
  let h4 = 2773480762;
  for (let i = 0; i < text.length; i++) {
    const k = text.charCodeAt(i);
    h1 = h2 ^ Math.imul(h1 ^ k, 597399067);
    h2 = h3 ^ Math.imul(h2 ^ k, 2869860233);
    h3 = h4 ^ Math.imul(h3 ^ k, 951274213);
    h4 = h1 ^ Math.imul(h4 ^ k, 2716044179);
  }
  h1 = Math.imul(h3 ^ (h1 >>> 18), 597399067);
  h2 = Math.imul(h4 ^ (h2 >>> 22), 2869860233);
  h3 = Math.imul(h1 ^ (h3 >>> 17), 951274213);
  h4 = Math.imul(h2 ^ (h4 >>> 19), 2716044179);
  h1 ^= h2 ^ h3 ^ h4;
  h2 ^= h1;
  h3 ^= h1;
  h4 ^= h1;
  return [h1 >>> 0, h2 >>> 0, h3 >>> 0, h4 >>> 0];
}
