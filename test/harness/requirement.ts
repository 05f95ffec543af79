/**
 * A test that needs something of the machine (a Debian package, root for a tmpfs) and found it
 * missing: outside CI it is skipped with the reason on stderr, so `npm test` passes on a fresh
 * machine; under CI (`CI` set, as CI services do), where `.ci/run` installs what the tests need,
 * it fails: a missing requirement there is a broken CI, not a skip.
 */
export function unmet(context: Mocha.Context, reason: string): never {
  if (process.env.CI) throw new Error(`${reason}; CI (CI is set) must provide it`);
  process.stderr.write(`      skipped: ${reason}\n`);
  context.skip();
}
