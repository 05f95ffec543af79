/**
 * Node module hooks, registered by the twin module loader: a user's twin module that imports
 * "twinmesh" (or "twinmesh/testing", "twinmesh/client") gets the running copy, wherever the
 * module lives and whatever its own node_modules hold, so its classes extend our `Twin`.
 */
interface ResolveResult {
  url: string;
  shortCircuit?: boolean;
  format?: string | null;
}
type NextResolve = (specifier: string, context: unknown) => Promise<ResolveResult>;

let targets: Record<string, string> = {};

/** Receives the specifier → file URL map from `module.register`. */
export function initialize(data: { targets: Record<string, string> }): void {
  targets = data.targets;
}

export async function resolve(specifier: string, context: unknown, nextResolve: NextResolve): Promise<ResolveResult> {
  const target = targets[specifier];
  if (target !== undefined) return { url: target, shortCircuit: true, format: "module" };
  const resolved = await nextResolve(specifier, context);
  // A twin module written in TypeScript is an ES module (it imports "twinmesh"), even in a
  // folder without a package.json saying "type": "module".
  if (/\.m?tsx?$/.test(resolved.url) && !resolved.url.includes("/node_modules/")) return { ...resolved, format: "module" };
  return resolved;
}
