/** The longest twin id, in UTF-8 bytes: ids are segments of RocksDB keys. */
export const MAX_TWIN_ID_BYTES = 256;

/**
 * True when `value` holds an ASCII control character (U+0000-U+001F, U+007F). Twin kinds and ids
 * become segments of RocksDB keys separated by NUL, and appear in logs, so they must not.
 */
export function hasControlCharacter(value: string): boolean {
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if (c < 0x20 || c === 0x7f) return true;
  }
  return false;
}

/**
 * The most characters of a client's input that an error message or error detail repeats. Echoing
 * more helps nobody and can push an error past gRPC's metadata limit (a status and its details
 * travel in the trailers, which clients cap at 8 KiB by default).
 */
export const MAX_ECHO_CHARS = 64;

/**
 * Client input as an error message repeats it: JSON-quoted, so control characters (NUL above
 * all) are escaped and cannot break a terminal or a log line, and cut after `maxChars`
 * characters with an ellipsis and the full length, e.g. `"c1.aaaa…" (100000 characters)`.
 * Every message that echoes client input builds the echo here.
 */
export function quoteInput(value: string, maxChars = MAX_ECHO_CHARS): string {
  if (value.length <= maxChars) return JSON.stringify(value);
  return `${JSON.stringify(`${head(value, maxChars)}…`)} (${value.length} characters)`;
}

/**
 * `text` cut to `maxChars` characters, the cut marked with an ellipsis and the full length.
 * The gRPC boundary uses it as the last line of defence for messages and error details.
 */
export function capText(text: string, maxChars: number): string {
  if (text.length <= maxChars) return text;
  return `${head(text, maxChars)}… (${text.length} characters in all)`;
}

/** The first `maxChars` UTF-16 units of `text`, one fewer rather than half a surrogate pair. */
function head(text: string, maxChars: number): string {
  const last = text.charCodeAt(maxChars - 1);
  return text.slice(0, last >= 0xd800 && last <= 0xdbff ? maxChars - 1 : maxChars);
}
