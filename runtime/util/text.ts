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
