import { existsSync, realpathSync } from "node:fs";
import { register } from "node:module";
import { resolve as resolvePath } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { register as registerTsx } from "tsx/esm/api";
import { ConfigError, Twin, type TwinClass } from "../runtime/index.js";

let hooked = false;
/** This copy's compiled tree (`dist/`). */
const DIST = new URL("../", import.meta.url);

/** Makes `import "twinmesh"` in user modules resolve to this running copy, and `.ts` loadable. */
function installHooks(): void {
  if (hooked) return;
  hooked = true;
  registerTsx();
  register(new URL("./twin-module-hooks.js", import.meta.url), {
    data: {
      targets: {
        twinmesh: new URL("index.js", DIST).href,
        "twinmesh/testing": new URL("runtime/testing/index.js", DIST).href,
        "twinmesh/client": new URL("client/index.js", DIST).href,
      },
    },
  });
}

function isOwnCompiledModule(path: string): boolean {
  let file: string;
  try {
    // The real path: a link in dist/ to a module elsewhere needs the hooks.
    file = realpathSync(resolvePath(path));
  } catch {
    return false; // loading it reports what is wrong
  }
  return file.startsWith(fileURLToPath(DIST)) && /\.m?js$/.test(file);
}

function isTwinClass(value: unknown): value is TwinClass {
  return typeof value === "function" && value.prototype instanceof Twin && typeof (value as { kind?: unknown }).kind === "string";
}

/**
 * Loads the twin classes that user modules export (`.ts` through tsx, or `.js`). Every exported
 * class extending `Twin` with a static `kind` is taken, also inside exported arrays.
 * @throws ConfigError (BAD_TWIN_MODULE) naming the module and what went wrong.
 */
export async function loadTwinModules(paths: readonly string[]): Promise<TwinClass[]> {
  // The hooks cost a thread and slow every later import; this copy's own compiled modules (the
  // example twins, the test fixtures) need none: they are JavaScript, and "twinmesh" resolves to
  // this copy from inside it.
  if (!paths.every(isOwnCompiledModule)) installHooks();
  const found = new Set<TwinClass>();
  for (const path of paths) {
    const file = resolvePath(path);
    if (!existsSync(file)) throw new ConfigError("BAD_TWIN_MODULE", `twin module ${path} does not exist (looked at ${file})`);
    let exports: Record<string, unknown>;
    try {
      exports = (await import(pathToFileURL(file).href)) as Record<string, unknown>;
    } catch (err) {
      throw new ConfigError("BAD_TWIN_MODULE", `twin module ${path} failed to load: ${(err as Error).message}`);
    }
    const before = found.size;
    for (const value of Object.values(exports)) {
      if (isTwinClass(value)) found.add(value);
      else if (Array.isArray(value)) for (const item of value) if (isTwinClass(item)) found.add(item);
    }
    if (found.size === before) {
      throw new ConfigError(
        "BAD_TWIN_MODULE",
        `twin module ${path} exports no twin classes; export classes that extend Twin from "twinmesh" and declare static readonly kind`,
      );
    }
  }
  return [...found];
}
